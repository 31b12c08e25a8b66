"""Segmentation offload on the TUN device (IFF_VNET_HDR), so the dataplane moves TCP
super-packets (up to the device's gso_max_size) instead of MTU-sized segments.

Outbound, the kernel hands over packets whose TCP/UDP checksum is only partial (the
pseudo-header sum, VIRTIO_NET_HDR_F_NEEDS_CSUM): we complete it before encryption, so what
travels inside ESP is an ordinary, valid IP packet any peer can use. Inbound, a decrypted TCP
packet larger than the TUN MTU is handed to the kernel as a GSO packet (gso_size = the MSS
the MTU allows), so it can be segmented again if it is forwarded.
"""

from __future__ import annotations

import struct

VNET_HDR_LEN = 10
F_NEEDS_CSUM = 1
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_TCPV6 = 4
PLAIN = bytes(VNET_HDR_LEN)  # header for a packet without offload
_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset


def ones_complement_sum(data: bytes) -> int:
    """The 16-bit ones' complement sum (RFC 1071) of data, folded, not complemented.

    Done on one big integer, since 2^16 = 1 (mod 2^16 - 1): the sum is the number mod 65535
    (with 0xFFFF for a multiple). Up to 4 KiB that remainder is fastest; above, halving the
    number repeatedly (shift + mask + add, all in C) adds the words in parallel for less.
    A loop over words in Python would cost ~15 ns each.
    """
    if len(data) & 1:
        data = bytes(data) + b"\0"  # a memoryview (offload.py) has no +
    x = int.from_bytes(data, "big")
    if len(data) <= 4096:
        return x % 0xFFFF or (0xFFFF if x else 0)
    bits = len(data) * 8
    while bits > 64:
        half = ((bits // 2) + 15) // 16 * 16
        x = (x >> half) + (x & ((1 << half) - 1))
        bits = max(half, x.bit_length())
    while x >> 16:
        x = (x & 0xFFFF) + (x >> 16)
    return x


def from_tun(data: bytes) -> bytes:
    """The IP packet of a frame read from a VNET_HDR TUN, its checksum completed."""
    if not data[0] & F_NEEDS_CSUM:
        return data[VNET_HDR_LEN:]
    _flags, _gso, _hlen, _gsz, start, offset = _HDR.unpack_from(data)
    pkt = data[VNET_HDR_LEN:]
    where = start + offset
    if where + 2 > len(pkt):
        return pkt  # a malformed offload request; the peer's stack will drop it
    csum = ~ones_complement_sum(pkt[start:]) & 0xFFFF
    if csum == 0 and offset == 6:
        csum = 0xFFFF  # UDP: 0 means "no checksum"
    return pkt[:where] + csum.to_bytes(2, "big") + pkt[where + 2:]


def to_tun_header(packet: bytes, mtu: int) -> bytes:
    """The virtio_net_hdr to write in front of a decrypted packet."""
    if len(packet) <= mtu:
        return PLAIN
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 40 and packet[9] == 6:
        ihl = (packet[0] & 0x0F) * 4
        gso_type, ip_len = GSO_TCPV4, ihl
    elif version == 6 and len(packet) >= 60 and packet[6] == 6:
        gso_type, ip_len = GSO_TCPV6, 40
    else:
        return PLAIN  # only TCP is resegmented; the kernel takes the rest as it is
    tcp_len = (packet[ip_len + 12] >> 4) * 4
    mss = mtu - ip_len - tcp_len
    if mss <= 0:
        return PLAIN
    return _HDR.pack(0, gso_type, ip_len + tcp_len, mss, 0, 0)
