"""The userspace dataplane under two real `ocfpy iked` daemons (keys from IKE, not static):
ping, a 50 MB TCP transfer with matching SHA-256, a veth capture with ESP only, and counters
that agree on both sides. With NAT-T forced, IKE and ESP share port 4500 through the
dataplane's demux."""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import time

import pytest

from ocfpy.lab.netlab import can_build_lab, tcp_transfer

pytestmark = pytest.mark.net

why = can_build_lab()
if why:
    pytest.skip(f"namespace lab unavailable: {why}", allow_module_level=True)
try:
    import ocfpy.iked.daemon  # noqa: F401
    from ocfpy.cli.demo import INNER_HOSTS, Gateways
except ImportError as exc:
    pytest.skip(f"no IKE daemon in this tree: {exc}", allow_module_level=True)

MARKER = "5ec7e70cf95ec7e70cf95ec7e70cf900"


def _options(**kw) -> argparse.Namespace:
    base = dict(crypto_backend="openssl", calibration=None, proposal=None, esp_proposal=None,
                dataplane="userspace", encap=False)
    base.update(kw)
    return argparse.Namespace(**base)


def _count(path, expr: str) -> int:
    out = subprocess.run(["tcpdump", "-r", str(path), "-n", expr], capture_output=True,
                         text=True, timeout=60)
    return len(out.stdout.splitlines())


def _wire_bytes(path, expr: str, tmp) -> int:
    """Bytes on the wire of the packets matching expr (each record's original length). With
    the default per-run offloads a run of ESP-in-UDP leaves as one UDP GSO super-packet, which
    a capture on the veth sees as one record, so packets are not what to count; bytes are."""
    filtered = tmp / "filtered.pcap"
    subprocess.run(["tcpdump", "-r", str(path), "-w", str(filtered), expr], check=True,
                   capture_output=True, timeout=60)
    data, total, off = filtered.read_bytes(), 0, 24  # pcap: 24-byte file header
    endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    while off + 16 <= len(data):  # record header: ts_sec, ts_usec, incl_len, orig_len
        incl, orig = struct.unpack_from(endian + "II", data, off + 8)
        total += orig
        off += 16 + incl
    return total


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
@pytest.mark.parametrize("encap,esp", [(False, "aes256gcm16"), (True, "aes128-sha256-esn")],
                         ids=["raw-gcm", "udp-cbc-esn"])
def test_50mb_through_daemon_negotiated_sas(tmp_path, encap, esp):
    with Gateways(_options(encap=encap, esp_proposal=[esp]), "oesi") as gw:
        gw.establish()
        pcap = tmp_path / "veth.pcap"
        cap = gw.lab.popen(gw.b, ["tcpdump", "-i", gw.link.b, "-U", "-n", "-B", "32768", "-s",
                                  "300", "-w", str(pcap)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        ping = gw.lab.run(gw.a, ["ping", "-c", "3", "-i", "0.2", "-p", MARKER, "-I",
                                 INNER_HOSTS[0], INNER_HOSTS[1]], timeout=20)
        assert ping.returncode == 0, ping.stdout + gw.log_tail("a") + gw.log_tail("b")
        t = tcp_transfer(gw.lab, gw.a, INNER_HOSTS[0], gw.b, INNER_HOSTS[1], 50 * 10**6)
        time.sleep(0.3)
        gw.lab.stop(cap)
        assert t.ok, (t.sent, t.received)
        child_a = gw.call("a", "list")[0]["children"][0]
        child_b = gw.call("b", "list")[0]["children"][0]
    assert child_a["encap"] is encap and child_a["esn"] is esp.endswith("-esn")
    da, db = child_a["dataplane"], child_b["dataplane"]
    assert db["packets_in"] == da["packets_out"] > 50 * 10**6 // 1400
    assert db["bytes_in"] == da["bytes_out"] > 50 * 10**6
    assert db["auth_failures"] == db["replay_drops"] == db["malformed"] == 0
    esp_filter = "udp port 4500" if encap else "ip proto 50"
    # a loaded capture drops some
    assert _wire_bytes(pcap, esp_filter, tmp_path) >= da["bytes_out"] * 0.5
    assert _count(pcap, f"ip and not ({esp_filter}) and not udp port 500") == 0
    assert bytes.fromhex(MARKER) not in pcap.read_bytes()
