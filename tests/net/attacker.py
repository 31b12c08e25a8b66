"""The attacker lane's third party: a forger on the same link as two IKE peers.

What it may use is what is on the wire: the addresses and ports of the peers and the two IKE
SPIs of their SA (in every IKE packet; the tests read them from `ocfpy sa list --json`, the
same bytes a sniffer sees). It has no key. It sends from a raw socket with IP_HDRINCL, so any
source address and port is possible (RFC 7296 2.21: nothing unauthenticated may change an
SA), on UDP 500 and 4500 (with or without the four-byte non-ESP marker of RFC 3948 2.2),
fragmenting datagrams larger than the link MTU itself (a raw socket does not).

The lab: namespaces <p>-a and <p>-b (the peers) and <p>-x (the attacker), all three on one
Ethernet segment: a bridge inside <p>-x joins veth links to <p>-a and <p>-b. The attacker's own
address is on the bridge; it can send from it (and so receive what a daemon answers), or
spoof anyone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ike_harness import INNER as INNER_TS
from ike_harness import Iked

from ocfpy.lab.netlab import Lab, Namespace

__all__ = ["AttackLab", "Forger", "IKE_SA_INIT", "INFORMATIONAL", "attack_lab", "ike_header",
           "ike_sa_init_request", "informational_no_sk", "ipv4_udp_fragments", "short_sk"]

CLONE_NEWNET = 0x40000000
NON_ESP_MARKER = b"\x00\x00\x00\x00"

# RFC 7296 3.1: exchange types, flags; 3.2: payload types
IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL = 34, 35, 36, 37
FLAG_I, FLAG_R = 0x08, 0x20
PT_SA, PT_KE, PT_NONCE, PT_NOTIFY, PT_DELETE, PT_SK = 33, 34, 40, 41, 42, 46


# -- sockets inside a namespace -----------------------------------------------------------
def netns_socket(ns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket created inside namespace ``ns`` (it stays there whichever thread uses it).

    setns() switches only the calling thread, so a throw-away thread does it: the test process
    stays in its own namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    result: dict = {}

    def work() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result["sock"] = socket.socket(family, kind, proto)
        except BaseException as exc:  # handed to the caller
            result["error"] = exc

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["sock"]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_udp_fragments(src: str, sport: int, dst: str, dport: int, payload: bytes, *,
                       mtu: int = 1500, ident: int | None = None) -> list[bytes]:
    """The IPv4 packets (RFC 791 fragments if needed) of one UDP datagram, headers included."""
    ulen = 8 + len(payload)
    if ulen > 0xFFFF - 20:
        raise ValueError(f"a UDP datagram of {ulen} bytes does not fit in IPv4")
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    pseudo = s + d + struct.pack("!BBH", 0, socket.IPPROTO_UDP, ulen)
    udp = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    csum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    ident = secrets.randbelow(0xFFFF) if ident is None else ident
    chunk = (mtu - 20) // 8 * 8
    out = []
    for off in range(0, len(udp), chunk):
        part = udp[off:off + chunk]
        more = off + chunk < len(udp)
        frag = (off // 8) | (0x2000 if more else 0)
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(part), ident, frag, 64,
                          socket.IPPROTO_UDP, 0, s, d)
        hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
        out.append(hdr + part)
    return out


class Forger:
    """Sends UDP datagrams with any source address and port, from namespace ``ns``."""

    def __init__(self, ns: str, mtu: int = 1500) -> None:
        self.sock = netns_socket(ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.mtu = mtu
        self.sent = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, src: tuple[str, int], dst: tuple[str, int], payload: bytes, *,
             non_esp_marker: bool = False) -> None:
        """One datagram; on 4500 ``non_esp_marker`` puts the 4 zero bytes before IKE."""
        data = (NON_ESP_MARKER if non_esp_marker else b"") + payload
        for pkt in ipv4_udp_fragments(src[0], src[1], dst[0], dst[1], data, mtu=self.mtu):
            self.sock.sendto(pkt, (dst[0], 0))
        self.sent += 1

    def __enter__(self) -> Forger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- IKE messages an outsider can write (RFC 7296 section 3) --------------------------------
def ike_header(spi_i: bytes, spi_r: bytes, next_payload: int, exchange: int, flags: int,
               message_id: int, length: int) -> bytes:
    return struct.pack("!8s8sBBBBLL", spi_i, spi_r, next_payload, 0x20, exchange, flags,
                       message_id, length)


def _payload(next_payload: int, body: bytes) -> bytes:
    return struct.pack("!BBH", next_payload, 0, 4 + len(body)) + body


def message(spi_i: bytes, spi_r: bytes, exchange: int, flags: int, message_id: int,
            payloads: list[tuple[int, bytes]]) -> bytes:
    """Header + a payload chain of (type, body) pairs."""
    chain = b""
    for i, (_ptype, body) in enumerate(payloads):
        nxt = payloads[i + 1][0] if i + 1 < len(payloads) else 0
        chain += _payload(nxt, body)
    first = payloads[0][0] if payloads else 0
    return ike_header(spi_i, spi_r, first, exchange, flags, message_id, 28 + len(chain)) + chain


def informational_no_sk(spi_i: bytes, spi_r: bytes, message_id: int, *, initiator: bool,
                        response: bool = False, exchange: int = INFORMATIONAL) -> bytes:
    """An exchange that must be encrypted, carrying a plaintext DELETE of the IKE SA instead."""
    flags = (FLAG_I if initiator else 0) | (FLAG_R if response else 0)
    return message(spi_i, spi_r, exchange, flags, message_id, [(PT_DELETE, bytes((1, 0, 0, 0)))])


def short_sk(spi_i: bytes, spi_r: bytes, message_id: int, *, initiator: bool,
             response: bool = False, exchange: int = INFORMATIONAL, body: bytes = b"\0" * 4,
             plaintext_first: bool = False) -> bytes:
    """An SK payload whose body is shorter than any IV + ICV (or, with ``body`` of e.g. 16+17
    bytes, CBC ciphertext that is not whole blocks); ``plaintext_first`` puts an unencrypted
    Notify before it."""
    flags = (FLAG_I if initiator else 0) | (FLAG_R if response else 0)
    payloads = [(PT_NOTIFY, struct.pack("!BBH", 0, 0, 16390))] if plaintext_first else []
    payloads.append((PT_SK, body))
    raw = message(spi_i, spi_r, exchange, flags, message_id, payloads)
    # the SK payload's "next payload" is the first inner payload type, not 0
    sk_at = 28 + (8 if plaintext_first else 0)
    return raw[:sk_at] + bytes((PT_NOTIFY,)) + raw[sk_at + 1:]


def ike_sa_init_request(spi_i: bytes, spi_r: bytes = bytes(8), *, message_id: int = 0,
                        proposals: int = 1, nonce: bytes | None = None,
                        ke: bytes | None = None, cookie: bytes | None = None,
                        response: bool = False, flags: int | None = None,
                        encr: int = 20) -> bytes:
    """An IKE_SA_INIT offering aes128gcm16-prfsha256-x25519 (``encr`` 3: 3des, which nobody
    accepts) and ``proposals`` - 1 more proposals that carry no transform, the cheap way to
    fill 64 KB (numbered 2..255, then 255 again: RFC 7296 3.3.1 lets a number repeat)."""
    def transform(ttype: int, tid: int, attrs: bytes = b"", last: bool = False) -> bytes:
        return struct.pack("!BBHBBH", 0 if last else 3, 0, 8 + len(attrs), ttype, 0, tid) + attrs

    key_length = struct.pack("!HH", 0x800E, 128) if encr != 3 else b""
    ts = (transform(1, encr, key_length) + transform(2, 5)
          + transform(4, 31, last=True))
    props = b""
    for n in range(1, proposals + 1):
        body = ts if n == 1 else b""
        count = 3 if n == 1 else 0
        last = n == proposals
        props += struct.pack("!BBHBBBB", 0 if last else 2, 0, 8 + len(body), min(n, 255), 1, 0,
                             count) + body
    payloads = []
    if cookie is not None:
        payloads.append((PT_NOTIFY, struct.pack("!BBH", 0, 0, 16390) + cookie))
    payloads += [(PT_SA, props),
                 (PT_KE, struct.pack("!HH", 31, 0) + (ke or secrets.token_bytes(32))),
                 (PT_NONCE, nonce or secrets.token_bytes(32))]
    if flags is None:
        flags = FLAG_I | (FLAG_R if response else 0)
    return message(spi_i, spi_r, IKE_SA_INIT, flags, message_id, payloads)


def notify_response(spi_i: bytes, notify_type: int, data: bytes = b"") -> bytes:
    """An unprotected IKE_SA_INIT response carrying one error or COOKIE notify (what an
    off-path attacker who saw the request's SPI can send in the responder's place)."""
    return message(spi_i, bytes(8), IKE_SA_INIT, FLAG_R, 0,
                   [(PT_NOTIFY, struct.pack("!BBH", 0, 0, notify_type) + data)])


# -- the lab -------------------------------------------------------------------------------
OUTER = ("10.78.0.1", "10.78.0.2")
ATTACKER = "10.78.0.9"
INNER = tuple(ts.replace(".0/24", ".1/32") for ts in INNER_TS)  # hosts inside the selectors


@dataclass
class AttackLab:
    lab: Lab
    a: Iked
    b: Iked
    x: Namespace
    workdir: Path
    forger: Forger
    extra: list = field(default_factory=list)

    def logs(self) -> str:
        return f"--- a log ---\n{self.a.log()[-4000:]}\n--- b log ---\n{self.b.log()[-4000:]}"

    def listen(self, port: int = 0) -> socket.socket:
        """A UDP socket on the attacker's own address: what the daemons answer it lands here."""
        s = netns_socket(self.x.name, socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ATTACKER, port))
        s.settimeout(0.2)
        self.extra.append(s)
        return s

    def stop_daemons(self) -> None:
        for d in (self.a, self.b):
            if d.proc is not None and d.proc.poll() is None:
                d.stop()
            d.proc = None


@contextlib.contextmanager
def attack_lab(prefix: str = "oat") -> Iterator[AttackLab]:
    """Peers <p>-a and <p>-b and attacker <p>-x on one bridged segment; daemons are started by
    the tests and stopped here."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    try:
        with Lab(prefix) as lab:
            a, b, x = lab.namespace("a"), lab.namespace("b"), lab.namespace("x")
            va = lab.veth(a, f"{OUTER[0]}/24", x, None)
            vb = lab.veth(b, f"{OUTER[1]}/24", x, None)
            br = lab.name("br")
            lab.run(x, ["ip", "link", "add", br, "type", "bridge"], check=True)
            for port in (va.b, vb.b):
                lab.run(x, ["ip", "link", "set", port, "master", br], check=True)
            lab.configure_link(x, br, f"{ATTACKER}/24")
            lab.address(a, INNER[0])
            lab.address(b, INNER[1])
            forger = Forger(x.name)
            attack = AttackLab(lab, Iked(lab, a, workdir, "a"), Iked(lab, b, workdir, "b"), x,
                               workdir, forger)
            try:
                yield attack
            finally:
                attack.stop_daemons()
                for s in attack.extra:
                    s.close()
                forger.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
