"""The per-run offloads (ocfpy/esp/offload.py): super-packets cut into exactly the segments
the kernel's segmentation produces (checked field by field against scapy's own build of each
segment, checksums included), and runs coalesced back into super-packets the kernel would cut
into the same segments again. Both with the compiled checksum and the pure-Python one."""

from __future__ import annotations

import os
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from ocfpy.esp import offload
from ocfpy.esp.gso import (
    F_NEEDS_CSUM,
    GSO_TCPV4,
    GSO_TCPV6,
    PLAIN,
    VNET_HDR_LEN,
    ones_complement_sum,
)

_HDR = struct.Struct("<BBHHHH")


def _ip(version, **kw):
    if version == 4:
        return IP(src="10.199.1.1", dst="10.199.2.1", id=0x4321, flags="DF", ttl=63, **kw)
    return IPv6(src="fd00:1::1", dst="fd00:2::1", hlim=63, fl=0x12345, **kw)


def _as_from_tun(pkt, version: int, proto, gso_type: int, size: int) -> bytes:
    """A super-packet as the kernel hands it to a VNET_HDR TUN: NEEDS_CSUM with the folded
    pseudo-header sum in the checksum field, and the GSO header."""
    raw = bytearray(bytes(pkt))
    l4 = 20 if version == 4 else 40
    where = l4 + (16 if proto is TCP else 6)
    seg_len = len(raw) - l4
    if version == 4:
        pseudo = bytes(raw[12:20]) + struct.pack("!BBH", 0, raw[9], seg_len)
    else:
        pseudo = bytes(raw[8:40]) + struct.pack("!IxxxB", seg_len, raw[6])
    raw[where:where + 2] = ones_complement_sum(pseudo).to_bytes(2, "big")
    hlen = l4 + ((raw[l4 + 12] >> 4) * 4 if proto is TCP else 8)
    return _HDR.pack(F_NEEDS_CSUM, gso_type, hlen, size, l4, where - l4) + bytes(raw)


def _kernel_tcp_segments(version, payload, mss, seq, flags, options):
    """What tcp_gso_segment + inet_gso_segment make of the super-packet, built by scapy."""
    out = []
    chunks = [payload[i:i + mss] for i in range(0, len(payload), mss)]
    for i, chunk in enumerate(chunks):
        f = flags
        if i < len(chunks) - 1:
            f = f.replace("F", "").replace("P", "")
        if i:
            f = f.replace("C", "")
        ip = _ip(version) if version == 6 else IP(src="10.199.1.1", dst="10.199.2.1",
                                                   id=0x4321 + i, flags="DF", ttl=63)
        out.append(bytes(ip / TCP(sport=40000, dport=5201, seq=(seq + i * mss) & 0xFFFFFFFF, ack=777,
                                  flags=f, window=501, options=options) / chunk))
    return out


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("size,mss", [(5000, 1348), (1348 * 3, 1348), (65000 - 80, 1360),
                                      (1349, 1348), (7, 1348)])
@pytest.mark.parametrize("flags", ["A", "PA", "FPA", "CA"])
def test_tcp_super_packet_split_like_the_kernel(csum, version, size, mss, flags):
    options = [("NOP", None), ("NOP", None), ("Timestamp", (123456, 654321))]
    payload = os.urandom(size)
    seq = 0xFFFFF000  # the sequence numbers wrap inside the super-packet
    pkt = _ip(version) / TCP(sport=40000, dport=5201, seq=seq, ack=777, flags=flags,
                             window=501, options=options) / payload
    frame = _as_from_tun(pkt, version, TCP, GSO_TCPV4 if version == 4 else GSO_TCPV6, mss)
    got = offload.split(frame)
    want = _kernel_tcp_segments(version, payload, mss, seq, flags, options)
    assert got == want


def test_sequence_numbers_wrap(csum):
    payload = os.urandom(3000)
    pkt = _ip(4) / TCP(sport=1, dport=2, seq=0xFFFFFC00, flags="A") / payload
    segs = offload.split(_as_from_tun(pkt, 4, TCP, GSO_TCPV4, 1000))
    assert [IP(s)[TCP].seq for s in segs] == [0xFFFFFC00, (0xFFFFFC00 + 1000) & 0xFFFFFFFF,
                                             (0xFFFFFC00 + 2000) & 0xFFFFFFFF]
    for s in segs:  # scapy recomputes the checksums of a parsed packet when told to
        p = IP(s)
        del p.chksum, p[TCP].chksum
        assert bytes(p) == bytes(s)


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("size,seg", [(1372 * 5, 1372), (64 * 10 + 3, 64), (100, 64)])
def test_udp_super_packet_split_like_the_kernel(csum, version, size, seg):
    payload = os.urandom(size)
    pkt = _ip(version) / UDP(sport=5000, dport=5201) / payload
    got = offload.split(_as_from_tun(pkt, version, UDP, offload.GSO_UDP_L4, seg))
    chunks = [payload[i:i + seg] for i in range(0, size, seg)]
    want = []
    for i, chunk in enumerate(chunks):
        ip = _ip(6) if version == 6 else IP(src="10.199.1.1", dst="10.199.2.1",
                                             id=0x4321 + i, flags="DF", ttl=63)
        want.append(bytes(ip / UDP(sport=5000, dport=5201) / chunk))
    assert got == want


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("l4", [TCP, UDP])
def test_a_plain_frame_is_one_packet_with_its_checksum_completed(csum, version, l4):
    pkt = _ip(version) / l4(sport=1, dport=2) / os.urandom(301)
    frame = _as_from_tun(pkt, version, l4, 0, 0)
    assert offload.split(frame) == [bytes(pkt)]
    assert offload.split(PLAIN + bytes(pkt)) == [bytes(pkt)]


def test_unknown_offload_requests_yield_nothing(csum):
    pkt = bytes(_ip(4) / TCP() / (b"x" * 3000))
    assert offload.split(_HDR.pack(F_NEEDS_CSUM, 3, 40, 1000, 20, 16) + pkt) == []  # UFO
    assert offload.split(_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4, 40, 1000, 24, 16) + pkt) == []
    assert offload.split(_HDR.pack(0, GSO_TCPV4, 40, 1000, 20, 16) + pkt) == []


def _segments(version, n, mss=1348, flags_last="A", seq=1000, sport=40000):
    opts = [("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]
    out = []
    for i in range(n):
        f = flags_last if i == n - 1 else "A"
        out.append(bytes(_ip(version) / TCP(sport=sport, dport=5201, seq=seq + i * mss, ack=9,
                                            flags=f, window=501, options=opts)
                         / os.urandom(mss)))
    return out


def _resegment(hdr: bytes, pkt: bytes, version: int) -> list[bytes]:
    """What the kernel cuts a super-packet we write into: the split we verified above, from
    the header we wrote (the TUN takes it in the same virtio_net_hdr format)."""
    return offload.split(hdr + pkt)


@pytest.mark.parametrize("version", [4, 6])
def test_a_run_of_one_flow_coalesces_into_one_super_packet(csum, version):
    segs = _segments(version, 10, flags_last="PA")
    out = offload.coalesce(segs)
    assert len(out) == 1
    hdr, sup, count = out[0]
    assert count == 10
    flags, gso_type, hlen, size, start, off = _HDR.unpack(hdr)
    assert (flags, gso_type, size, off) == (F_NEEDS_CSUM, GSO_TCPV4 if version == 4
                                            else GSO_TCPV6, 1348, 16)
    assert start == (20 if version == 4 else 40) and hlen == start + 32
    assert len(sup) == hlen + 10 * 1348
    again = _resegment(hdr, bytes(sup), version)
    if version == 4:  # IPv4 IDs are the kernel's to renumber; all else is byte for byte
        again = [bytes(IP(a)) for a in again]
        fixed = []
        for i, s in enumerate(segs):
            p = IP(s)
            p.id = 0x4321 + i
            del p.chksum
            fixed.append(bytes(p))
        segs = fixed
    assert again == segs


def test_runs_break_where_gro_flushes(csum):
    a = _segments(4, 3)
    other_flow = _segments(4, 2, seq=1000 + 3 * 1348, sport=40001)
    gap = _segments(4, 2, seq=1000 + 10 * 1348)
    syn = [bytes(_ip(4) / TCP(sport=40000, dport=5201, flags="S"))]
    short = _segments(4, 1, mss=100, seq=1000 + 12 * 1348)
    udp = [bytes(_ip(4) / UDP(sport=1, dport=2) / (b"x" * 50)) for _ in range(3)]
    out = offload.coalesce(a + other_flow + gap + syn + udp + short)
    kinds = [(_HDR.unpack(h)[1], len(p), c) for h, p, c in out]
    assert kinds == [(GSO_TCPV4, 52 + 3 * 1348, 3), (GSO_TCPV4, 52 + 2 * 1348, 2),
                     (GSO_TCPV4, 52 + 2 * 1348, 2), (0, 40, 1),
                     (offload.GSO_UDP_L4, 28 + 150, 3), (0, 52 + 100, 1)]
    assert offload.coalesce(udp, udp=False) == [(PLAIN, u, 1) for u in udp]


def test_a_run_of_one_takes_the_plain_path(csum):
    one = _segments(4, 1)
    assert offload.coalesce(one) == [(PLAIN, one[0], 1)]
    pure_acks = [bytes(_ip(4) / TCP(sport=1, dport=2, flags="A", seq=5)) for _ in range(3)]
    assert offload.coalesce(pure_acks) == [(PLAIN, p, 1) for p in pure_acks]


@pytest.mark.parametrize("version", [4, 6])
def test_udp_runs_round_trip(csum, version):
    dgrams = [bytes(_ip(version) / UDP(sport=5000, dport=5201) / os.urandom(64))
              for _ in range(7)]
    dgrams.append(bytes(_ip(version) / UDP(sport=5000, dport=5201) / os.urandom(10)))
    (hdr, sup, count), = offload.coalesce(dgrams)
    assert count == 8
    again = offload.split(hdr + bytes(sup))
    if version == 4:
        fixed = []
        for i, s in enumerate(dgrams):
            p = IP(s)
            p.id = 0x4321 + i
            del p.chksum
            fixed.append(bytes(p))
        dgrams = fixed
    assert again == dgrams
    assert VNET_HDR_LEN == len(hdr)


def test_short_and_odd_packets_pass_through_untouched(csum):
    """Whatever decrypts (the selector check runs before, but coalesce must not rely on it):
    short, odd and non-IP packets go through one by one, never raise."""
    odd = [b"\x45", b"\x45" + bytes(8), b"\x60" * 39, b"\x45" * 39, os.urandom(3), b"\x00" * 60,
           bytes(_ip(4) / TCP(flags="A"))[:39]]
    assert offload.coalesce(odd) == [(PLAIN, p, 1) for p in odd]
