"""TUN offload helpers: checksum completion against scapy's checksums, GSO headers."""

from __future__ import annotations

import os
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from ocfpy.esp.gso import (
    GSO_TCPV4,
    GSO_TCPV6,
    PLAIN,
    VNET_HDR_LEN,
    from_tun,
    ones_complement_sum,
    to_tun_header,
)


def _reference_sum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@pytest.mark.parametrize("n", [0, 1, 2, 3, 63, 64, 65, 1400, 1401, 8191, 60000])
def test_ones_complement_sum(n):
    for _ in range(5):
        data = os.urandom(n)
        assert ones_complement_sum(data) == _reference_sum(data)
    assert ones_complement_sum(b"\xff" * n) == _reference_sum(b"\xff" * n)


def _partial(pkt, l4, version: int) -> bytes:
    """What the kernel hands over with NEEDS_CSUM: the checksum field holds the folded
    pseudo-header sum (not complemented); virtio_net_hdr says where to finish it."""
    full = bytes(pkt)  # scapy fills in the real checksum
    ip_len = 20 if version == 4 else 40
    offset = 16 if l4 is TCP else 6
    seg = full[ip_len:]
    if version == 4:
        pseudo = full[12:20] + struct.pack("!BBH", 0, full[9], len(seg))
    else:
        pseudo = full[8:40] + struct.pack("!IxxxB", len(seg), full[6])
    field = ones_complement_sum(pseudo)
    partial = full[:ip_len + offset] + field.to_bytes(2, "big") + full[ip_len + offset + 2:]
    hdr = struct.pack("<BBHHHH", 1, 0, 0, 0, ip_len, offset)
    return full, hdr + partial


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("l4", [TCP, UDP])
@pytest.mark.parametrize("size", [0, 1, 33, 1300, 8000])
def test_from_tun_completes_the_checksum(version, l4, size):
    ip = IP(src="10.1.0.1", dst="10.2.0.1") if version == 4 else IPv6(src="fd00::1",
                                                                       dst="fd01::2")
    pkt = ip / l4(sport=1234, dport=5201) / os.urandom(size)
    full, frame = _partial(pkt, l4, version)
    assert from_tun(frame) == full


def test_from_tun_without_offload_strips_the_header():
    pkt = bytes(IP(dst="10.2.0.1") / UDP() / b"x")
    assert from_tun(PLAIN + pkt) == pkt


def test_to_tun_header():
    small = bytes(IP(src="10.1.0.1", dst="10.2.0.1") / TCP() / (b"x" * 100))
    assert to_tun_header(small, 1400) == PLAIN
    big4 = bytes(IP(src="10.1.0.1", dst="10.2.0.1") / TCP() / (b"x" * 5000))
    hdr = struct.unpack("<BBHHHH", to_tun_header(big4, 1400))
    assert hdr[:4] == (0, GSO_TCPV4, 40, 1360)
    big6 = bytes(IPv6(src="fd00::1", dst="fd01::1") / TCP() / (b"x" * 5000))
    assert struct.unpack("<BBHHHH", to_tun_header(big6, 1400))[:4] == (0, GSO_TCPV6, 60, 1340)
    big_udp = bytes(IP(src="10.1.0.1", dst="10.2.0.1") / UDP() / (b"x" * 5000))
    assert to_tun_header(big_udp, 1400) == PLAIN
    assert len(PLAIN) == VNET_HDR_LEN
