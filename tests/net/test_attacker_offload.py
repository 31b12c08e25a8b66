"""The attacker behind an authenticated peer, against the userspace dataplane's offloads
(docs/security.md, findings O1 and O2): a host on the peer's protected side sends TCP the
peer's gateway forwards into the tunnel as it is (RFC 4301 5.1: the gateway checks selectors,
not checksums). Two namespaces with the static-key userspace dataplane, offloads on (the
default); the attacker is a raw socket (IP_HDRINCL) in namespace a writing inner packets
towards b's protected address. b decrypts them (they pass the ICV: a encrypted them) and
writes them to its TUN, coalescing runs.

- O2: a stream of in-order TCP segments whose checksums are all wrong. The kernel must see
  every one alone and drop it (TcpInCsumErrors counts each); before the fix, runs of them
  went to the TUN as super-packets with NEEDS_CSUM, which the kernel trusts, so fewer were
  counted than delivered (and the rest went up the stack as good data).
- O1: pairs of in-order segments with a TCP data offset of 0: before the fix each pair in
  one batch raised IndexError in the coalescer and b's inbound worker lost the whole burst
  ("burst failed" in its log)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ocfpy.lab.netlab import Lab, can_build_lab
from ocfpy.lab.static_tunnel import StaticTunnel

pytestmark = pytest.mark.net

why = can_build_lab()
if why:
    pytest.skip(f"namespace lab unavailable: {why}", allow_module_level=True)

# Runs in namespace a: SEGMENTS in-order TCP segments from a's inner address to b's, every
# checksum wrong (mode "badsum"), or pairs with data offset 0 (mode "doff0"), in bursts.
_SEND = r"""
import socket, struct, sys, time
src, dst, mode, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
def csum(b):
    if len(b) % 2: b += b"\0"
    x = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while x >> 16: x = (x & 0xFFFF) + (x >> 16)
    return ~x & 0xFFFF
S, D = socket.inet_aton(src), socket.inet_aton(dst)
payload = bytes(range(256)) * 4  # 1024 bytes
seq = 1000
sent = 0
for i in range(count):
    doff = 0 if mode == "doff0" else 5
    th = bytearray(struct.pack("!HHIIBBHHH", 40000, 5201, seq, 9, doff << 4, 0x10, 501, 0, 0))
    good = csum(S + D + struct.pack("!BBH", 0, 6, 20 + len(payload)) + bytes(th) + payload)
    th[16:18] = struct.pack("!H", good ^ 0x5A5A if mode == "badsum" else good)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), i & 0xFFFF, 0x4000,
                               64, 6, 0, S, D))
    ip[10:12] = struct.pack("!H", csum(bytes(ip)))
    s.sendto(bytes(ip) + bytes(th) + payload, (dst, 0))
    sent += 1
    seq += len(payload) + (0 if mode != "doff0" else 20)  # what the coalescer took as data
    if i % 64 == 63:
        time.sleep(0.002)  # bursts: runs form in one batch at b, the queues do not overflow
print(sent)
"""


def _tcp_stat(lab: Lab, ns, field: str) -> int:
    out = lab.run(ns, ["cat", "/proc/net/snmp"], timeout=10).stdout.splitlines()
    names, values = [ln.split() for ln in out if ln.startswith("Tcp:")][:2]
    return int(values[names.index(field)])


def _send(lab, tun, mode: str, count: int) -> None:
    r = lab.run(tun.a, [sys.executable, "-c", _SEND, tun.INNER[0], tun.INNER[1], mode,
                        str(count)], timeout=60)
    assert r.returncode == 0 and int(r.stdout) == count, r.stderr


def test_segments_with_bad_checksums_reach_the_kernel_one_by_one():
    with Lab("oatk") as lab, StaticTunnel(lab, esp="aes128gcm16", tun="oat-tun0") as tun:
        assert tun.ping(2).returncode == 0
        before_in = tun.counters("b")["sa"]["packets_in"]
        before_err = _tcp_stat(lab, tun.b, "InCsumErrors")
        _send(lab, tun, "badsum", 3000)
        ping = tun.ping(2)
        assert ping.returncode == 0, ping.stdout + tun.log("b")[-2000:]
        delivered = tun.counters("b")["sa"]["packets_in"] - before_in - 2  # the echo requests
        refused = _tcp_stat(lab, tun.b, "InCsumErrors") - before_err
        assert delivered > 1000, delivered
        # every segment that crossed the tunnel met the kernel's checksum check alone
        assert refused == delivered, (refused, delivered)
        assert "burst failed" not in tun.log("b")


def test_tcp_data_offset_zero_loses_no_burst():
    with Lab("oatd") as lab, StaticTunnel(lab, esp="aes128gcm16", tun="oat-tun0") as tun:
        pinger = lab.popen(tun.a, ["ping", "-c", "30", "-i", "0.05", "-I", tun.INNER[0],
                                   tun.INNER[1]], stdout=subprocess.PIPE, text=True)
        _send(lab, tun, "doff0", 2000)
        out, _ = pinger.communicate(timeout=30)
        log = tun.log("b")
        assert "burst failed" not in log and "IndexError" not in log, log[-3000:]
        assert pinger.returncode == 0, out
        assert tun.counters("b")["sa"]["packets_in"] >= 1000
