"""The per-run offloads (ocfpy/esp/offload.py) against hostile bytes (docs/security.md,
*Offloads and the dataplane's new paths*, findings O1-O4).

Inbound, ``coalesce`` sees what an authenticated peer sent: the ESP ICV proves the bytes are
the peer's, not that they are a well-formed packet, and the peer forwards whatever the hosts
behind it send. A run is written to the TUN with NEEDS_CSUM, which the kernel trusts on local
delivery (CHECKSUM_PARTIAL): so a segment may join a run only if the kernel would have taken
it alone (headers whole, lengths agreeing, checksums right), as the kernel's own GRO requires.
Outbound, ``split`` takes the kernel's super-packets; it must yield nothing (counted) for a
request it cannot follow, never raise. Both run with the C checksum helper and without."""

from __future__ import annotations

import os
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from ocfpy.esp import offload
from ocfpy.esp.gso import F_NEEDS_CSUM, GSO_TCPV4, PLAIN, ones_complement_sum

_HDR = struct.Struct("<BBHHHH")


def _ip(version):
    if version == 4:
        return IP(src="10.199.1.1", dst="10.199.2.1", flags="DF", ttl=63)
    return IPv6(src="fd00:1::1", dst="fd00:2::1", hlim=63)


def _seg(version, seq, payload, **tcp):
    return bytes(_ip(version) / TCP(sport=40000, dport=5201, seq=seq, ack=9, flags="A",
                                    window=501, **tcp) / payload)


def _run(version, n=3, size=1000):
    return [_seg(version, 1000 + i * size, os.urandom(size)) for i in range(n)]


def _all_plain(out, packets):
    return out == [(PLAIN, p, 1) for p in packets]


# -- O1: a TCP data offset under 5 raised IndexError in coalesce; the worker's whole burst
# (every SA's packets of that read) was lost ---------------------------------------------

@pytest.mark.parametrize("doff", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("version", [4, 6])
def test_a_tcp_data_offset_under_five_never_joins_a_run(csum, version, doff):
    l4 = 20 if version == 4 else 40
    hlen = l4 + doff * 4
    first = _seg(version, 1000, b"A" * 100, dataofs=doff)
    size = len(first) - hlen  # what the coalescer would take for the payload
    second = _seg(version, 1000 + size, b"B" * 100, dataofs=doff)
    packets = [first, second]
    assert _all_plain(offload.coalesce(packets, udp=False), packets)


# -- O2: segments whose checksums or lengths the kernel would refuse were coalesced, and the
# super-packet's NEEDS_CSUM made the kernel accept them ------------------------------------

@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("where", [0, 1, 2])
def test_a_segment_with_a_bad_tcp_checksum_never_joins_a_run(csum, version, where):
    packets = _run(version)
    bad = bytearray(packets[where])
    bad[-1] ^= 0x01  # one payload bit: the TCP checksum no longer holds
    packets[where] = bytes(bad)
    out = offload.coalesce(packets, udp=False)
    assert all(bytes(pkt) != packets[where] or count == 1 for _, pkt, count in out)
    assert (PLAIN, packets[where], 1) in out
    assert sum(c for _, _, c in out) == 3


def test_a_segment_with_a_bad_ipv4_header_checksum_never_joins_a_run(csum):
    packets = _run(4)
    bad = bytearray(packets[1])
    bad[10] ^= 0x40
    packets[1] = bytes(bad)
    out = offload.coalesce(packets, udp=False)
    assert (PLAIN, packets[1], 1) in out


@pytest.mark.parametrize("version", [4, 6])
def test_trailing_bytes_past_the_ip_length_never_become_payload(csum, version):
    """The kernel trims a packet to its IP length (RFC 791 3.1 Total Length, RFC 8200 3
    Payload Length); as part of a run the trailing bytes would have been delivered as data."""
    packets = _run(version)
    packets[0] += b"TRAILER!"
    packets[1] = _seg(version, 1000 + 1000 + 8, packets[1][-1000:])
    packets[2] = _seg(version, 1000 + 2000 + 8, packets[2][-1000:])
    out = offload.coalesce(packets, udp=False)
    assert out[0] == (PLAIN, packets[0], 1)
    assert all(b"TRAILER!" not in bytes(pkt) for _, pkt, count in out if count > 1)


@pytest.mark.parametrize("version", [4, 6])
def test_a_packet_shorter_than_its_ip_length_never_joins_a_run(csum, version):
    packets = _run(version)
    packets[1] = packets[1][:-10]  # truncated: the IP length says 10 more bytes
    packets[2] = _seg(version, 1000 + 2000 - 10, packets[2][-1000:])
    out = offload.coalesce(packets, udp=False)
    assert (PLAIN, packets[1], 1) in out


def test_udp_segments_with_bad_lengths_or_checksums_never_join(csum):
    good = [bytes(_ip(4) / UDP(sport=5000, dport=5201) / os.urandom(64)) for _ in range(4)]
    bad_sum = bytearray(good[1])
    bad_sum[-1] ^= 1
    bad_len = bytearray(good[2])
    bad_len[24:26] = (8 + 32).to_bytes(2, "big")  # UDP length 40 in a 92-byte datagram
    bad_len[26:28] = b"\0\0"  # no checksum (IPv4, RFC 768): only the length is wrong
    packets = [good[0], bytes(bad_sum), bytes(bad_len), good[3]]
    out = offload.coalesce(packets, udp=True)
    assert (PLAIN, packets[1], 1) in out and (PLAIN, packets[2], 1) in out


# -- O3: a zero-length or one-byte packet raised in coalesce with UDP on; split raised on an
# IHL or data offset under 5 and on a frame shorter than the virtio_net_hdr ------------------

def test_empty_and_tiny_packets_pass_through(csum):
    tiny = [b"", b"\x45", b"\x60", b"\x45" * 27, b"\x60" * 47]
    assert _all_plain(offload.coalesce(tiny, udp=True), tiny)
    assert _all_plain(offload.coalesce(tiny, udp=False), tiny)


def _frame(pkt: bytes, gso_type: int, size: int, start: int, off: int) -> bytes:
    return _HDR.pack(F_NEEDS_CSUM, gso_type, 0, size, start, off) + pkt


def test_split_refuses_what_it_cannot_follow_without_raising(csum):
    p = bytearray(bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(flags="A") / (b"x" * 3000)))
    doff0 = bytearray(p)
    doff0[32] = 0x00
    ihl0 = bytearray(p)
    ihl0[0] = 0x40
    ihl4 = bytearray(p)
    ihl4[0] = 0x44
    u = bytearray(bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP() / (b"x" * 3000)))
    u_ihl0 = bytearray(u)
    u_ihl0[0] = 0x40
    for frame in (_frame(bytes(doff0), GSO_TCPV4, 1000, 20, 16),
                  _frame(bytes(ihl0), GSO_TCPV4, 1000, 0, 16),
                  _frame(bytes(ihl4), GSO_TCPV4, 1000, 16, 16),
                  _frame(bytes(u_ihl0), offload.GSO_UDP_L4, 1000, 0, 6)):
        assert offload.split(frame) == []
    for short in (b"", b"\x01", bytes(9)):
        assert offload.split(short) == []


def test_c_and_python_checksums_agree_on_every_length_and_offset():
    """The compiled helper with hostile lengths: odd, empty, unaligned views."""
    if offload.sum16 is ones_complement_sum:
        pytest.skip("the compiled helper ocfpy.esp._csum is not built here")
    data = os.urandom(300)
    for start in range(0, 9):
        for n in range(0, 70):
            view = memoryview(data)[start:start + n]
            assert offload.sum16(view) == ones_complement_sum(bytes(view)), (start, n)


def test_the_compiled_completion_never_writes_outside_the_packet():
    from ocfpy.esp import _csum  # the helper itself, not the fallback
    pkt = os.urandom(64)
    for start in (0, 1, 30, 61, 62, 63, 64, 65, 0xFFFF):
        for off in (0, 1, 6, 16, 0xFFFF):
            frame = _HDR.pack(F_NEEDS_CSUM, 0, 0, 0, start, off) + pkt
            out = _csum.complete(frame)
            if start + off + 2 > len(pkt):
                assert out is None
            else:
                assert len(out) == len(pkt)
                assert out[:start + off] == pkt[:start + off]
                assert out[start + off + 2:] == pkt[start + off + 2:]
    for short in (b"", bytes(9), bytes(10)):
        assert _csum.complete(short) in (None, b"")


def test_c_and_python_whole_agree_on_hostile_packets():
    """The compiled ``whole`` (what coalesce asks before a segment joins) and the Python one,
    on valid packets and on every single-byte corruption and truncation of them."""
    try:
        from ocfpy.esp._csum import whole
    except ImportError:
        pytest.skip("the compiled helper ocfpy.esp._csum is not built here")
    monkey = offload.sum16
    samples = [_seg(4, 1, os.urandom(33)), _seg(6, 1, os.urandom(34)),
               bytes(_ip(4) / UDP(sport=1, dport=2) / os.urandom(21)),
               bytes(_ip(6) / UDP(sport=1, dport=2) / os.urandom(20)),
               bytes(_ip(4) / UDP(sport=1, dport=2, chksum=0) / os.urandom(20))]
    seen = {True: 0, False: 0}
    for good in samples:
        proto = good[9] if good[0] >> 4 == 4 else good[6]
        variants = [good, good + b"\0", good[:-1]]
        for i in range(len(good)):
            for bit in (0x01, 0x80):
                b = bytearray(good)
                b[i] ^= bit
                variants.append(bytes(b))
        variants += [good[:k] for k in range(0, 48)]
        for v in variants:
            c, py = whole(v, proto), offload._whole_py(v, proto)
            assert c == py, v.hex()
            seen[c] += 1
        assert whole(good, proto) and offload.sum16 is monkey
    assert seen[True] >= len(samples) and seen[False] > 100
