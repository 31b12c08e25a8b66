"""Offloads of the userspace dataplane, decided per run of packets (on by default).

The TUN device carries a virtio_net_hdr (IFF_VNET_HDR) and offers checksum, TCP and UDP
segmentation offload (TUN_F_CSUM, TSO4/6, USO4/6): the kernel hands over super-packets of up
to 64 KiB, and accepts them back. What travels inside ESP stays ordinary MTU-sized packets:

- outbound (`split`): a super-packet is cut into the segments the kernel's own segmentation
  would produce (tcp_gso_segment / __udp_gso_segment: same sequence numbers, flags, IPv4 IDs
  and checksums), and the segments go through one encryption batch; equal-sized ESP datagrams
  then leave in one ``sendmsg`` with UDP_SEGMENT (udpgso.py);
- inbound (`coalesce`): decrypted segments of one flow that follow each other (TCP: the next
  sequence number; UDP: the same 5-tuple and size) are written to the TUN as one super-packet
  with a GSO header, as the kernel's GRO would build it; the kernel cuts it again where it
  must (forwarding) or takes it whole (local delivery). The checksum is left to the kernel
  (NEEDS_CSUM with the pseudo-header sum, as wireguard-go does), which the kernel then trusts:
  the ESP ICV proves only that the bytes are the peer's, so a segment joins a run only if the
  kernel would have accepted it alone (lengths and checksums, `_whole`; docs/security.md O2).

Per run: a super-packet of one segment, a run of one datagram, a packet that fits no run take
the plain path (one read, one write, one ``sendto``), so floods of small or MTU-sized packets
pay nothing for the offloads. wireguard-go's tun/offload_linux.go uses the same kernel
interfaces (read for the model, no code taken).
"""

from __future__ import annotations

import os
import struct

from ocfpy.esp.gso import (
    F_NEEDS_CSUM,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    PLAIN,
    VNET_HDR_LEN,
    ones_complement_sum,
)

try:  # the optional compiled helper (ocfpy/esp/_csum.c): the same results, about 10x faster
    if os.environ.get("OCFPY_PURE_PYTHON", "") not in ("", "0"):  # as framing.py, sendbatch.py
        raise ImportError("OCFPY_PURE_PYTHON is set")
    from ocfpy.esp._csum import complete as _complete_c
    from ocfpy.esp._csum import sum16
    from ocfpy.esp._csum import whole as _whole_c
except ImportError:  # pragma: no cover - the tests run both through their `csum` fixture
    sum16 = ones_complement_sum
    _complete_c = _whole_c = None

GSO_UDP_L4 = 5  # <linux/virtio_net.h> VIRTIO_NET_HDR_GSO_UDP_L4
GSO_ECN = 0x80
_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
TCP = 6
UDP = 17
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
MAX_SUPER = 65535  # an IP packet's length field (IPv4 total length, IPv6 payload length)
MAX_RUN = 64  # segments coalesced into one write at most (the kernel's GRO: 64 too)


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _pseudo(pkt, version: int, proto: int) -> int:
    """The addresses' and protocol's part of the pseudo-header sum (RFC 793 3.1, RFC 768,
    RFC 8200 8.1); the caller adds the upper-layer length."""
    return sum16(pkt[12:20] if version == 4 else pkt[8:40]) + proto


# -- outbound: a super-packet from the TUN into the segments the kernel would send ----------

def split(frame: bytes) -> list:
    """The IP packets of one frame read from a VNET_HDR TUN with offloads on: one, its
    checksum completed, for a plain frame; the segments, for a TCP or UDP super-packet. An
    offload request this code cannot follow yields nothing (the caller counts it)."""
    if len(frame) < VNET_HDR_LEN:
        return []
    flags, gso_type, _hlen, gso_size, csum_start, csum_off = _HDR.unpack_from(frame)
    gso_type &= ~GSO_ECN
    if gso_type == GSO_NONE:
        if not flags & F_NEEDS_CSUM:
            return [frame[VNET_HDR_LEN:]]
        # with TUN_F_CSUM offered, every TCP/UDP packet comes with its checksum to finish
        # (from_tun, with the fast sum): the plain path's one extra cost
        if _complete_c is not None and sum16 is not ones_complement_sum:
            done = _complete_c(frame)
            if done is not None:
                return [done]
        pkt = frame[VNET_HDR_LEN:]
        where = csum_start + csum_off
        if where + 2 > len(pkt):
            return [pkt]  # a malformed offload request; the peer's stack will drop it
        csum = ~sum16(memoryview(pkt)[csum_start:]) & 0xFFFF
        if csum == 0 and csum_off == 6:
            csum = 0xFFFF  # UDP: 0 means "no checksum"
        return [b"".join((pkt[:where], csum.to_bytes(2, "big"), pkt[where + 2:]))]
    pkt = memoryview(frame)[VNET_HDR_LEN:]
    if len(pkt) < 20 or not flags & F_NEEDS_CSUM:
        return []
    version = pkt[0] >> 4
    if gso_type in (GSO_TCPV4, GSO_TCPV6):
        return _split_tcp(pkt, version, csum_start, gso_size)
    if gso_type == GSO_UDP_L4:
        return _split_udp(pkt, version, csum_start, gso_size)
    return []


def _ip_ok(pkt, version: int, l4: int, proto: int) -> bool:
    if version == 4:  # RFC 791 3.1: IHL counts 32-bit words, 5 at least
        return l4 == (pkt[0] & 0x0F) * 4 and l4 >= 20 and pkt[9] == proto
    return version == 6 and l4 == 40 and pkt[6] == proto  # no extension headers


def _split_tcp(pkt, version: int, l4: int, mss: int) -> list:
    """tcp_gso_segment (net/ipv4/tcp_offload.c): every segment gets the header with its own
    sequence number; FIN and PSH only on the last, CWR only on the first; IPv4 IDs count up
    from the super-packet's (inet_gso_segment); checksums over each segment (RFC 793 3.1)."""
    if not _ip_ok(pkt, version, l4, TCP) or len(pkt) < l4 + 20:
        return []
    doff = pkt[l4 + 12] >> 4
    hlen = l4 + doff * 4
    if mss <= 0 or doff < 5 or hlen > len(pkt):  # RFC 9293 3.1: Data Offset 5 at least
        return []
    payload = pkt[hlen:]
    n = len(payload)
    iph = bytearray(pkt[:l4])
    th = bytearray(pkt[l4:hlen])
    th[16:18] = b"\0\0"
    seq = int.from_bytes(th[4:8], "big")
    tflags = th[13]
    base = _pseudo(pkt, version, TCP)
    ip_id = int.from_bytes(iph[4:6], "big") if version == 4 else 0
    out = []
    last_start = ((n - 1) // mss) * mss if n else 0
    for i, off in enumerate(range(0, max(n, 1), mss)):
        seg = payload[off:off + mss]
        f = tflags if off == last_start else tflags & ~(FIN | PSH)
        if off:
            f &= ~CWR
        th[4:8] = ((seq + off) & 0xFFFFFFFF).to_bytes(4, "big")
        th[13] = f
        l4len = hlen - l4 + len(seg)
        if version == 4:
            iph[2:4] = (l4 + l4len).to_bytes(2, "big")
            iph[4:6] = ((ip_id + i) & 0xFFFF).to_bytes(2, "big")
            iph[10:12] = b"\0\0"
            iph[10:12] = (~sum16(iph) & 0xFFFF).to_bytes(2, "big")
        else:
            iph[4:6] = l4len.to_bytes(2, "big")
        th[16:18] = b"\0\0"
        th[16:18] = (~_fold(base + l4len + sum16(th) + sum16(seg)) & 0xFFFF).to_bytes(2, "big")
        out.append(b"".join((iph, th, seg)))
    return out


def _split_udp(pkt, version: int, l4: int, size: int) -> list:
    """__udp_gso_segment (net/ipv4/udp_offload.c): each datagram its own UDP header, length
    and checksum (0 sent as 0xFFFF, RFC 768); IPv4 IDs count up."""
    if not _ip_ok(pkt, version, l4, UDP) or len(pkt) < l4 + 8 or size <= 0:
        return []
    payload = pkt[l4 + 8:]
    iph = bytearray(pkt[:l4])
    uh = bytearray(pkt[l4:l4 + 8])
    base = _pseudo(pkt, version, UDP)
    ip_id = int.from_bytes(iph[4:6], "big") if version == 4 else 0
    out = []
    for i, off in enumerate(range(0, max(len(payload), 1), size)):
        seg = payload[off:off + size]
        ulen = 8 + len(seg)
        uh[4:6] = ulen.to_bytes(2, "big")
        uh[6:8] = b"\0\0"
        if version == 4:
            iph[2:4] = (l4 + ulen).to_bytes(2, "big")
            iph[4:6] = ((ip_id + i) & 0xFFFF).to_bytes(2, "big")
            iph[10:12] = b"\0\0"
            iph[10:12] = (~sum16(iph) & 0xFFFF).to_bytes(2, "big")
        else:
            iph[4:6] = ulen.to_bytes(2, "big")
        csum = ~_fold(base + ulen + sum16(uh) + sum16(seg)) & 0xFFFF
        uh[6:8] = (csum or 0xFFFF).to_bytes(2, "big")
        out.append(b"".join((iph, uh, seg)))
    return out


# -- inbound: runs of one flow's segments into super-packets, as GRO would -------------------

# A run goes to the TUN with NEEDS_CSUM, which the kernel trusts on local delivery
# (CHECKSUM_PARTIAL): the checksums of the segments in it are never looked at again. The ESP
# ICV proves the bytes are the peer's, not that they are a packet the kernel would take (the
# peer forwards what the hosts behind it send, RFC 4301 5.1). So a segment joins a run only if
# the kernel would have accepted it alone, as its GRO requires before it merges
# (tcp4_gro_receive: the checksum verified; inet_gro_receive: IHL 5, the header checksum, the
# total length): anything else goes through plain and the kernel drops and counts it.
# docs/security.md, findings O1 and O2.

def _whole_py(p, proto: int) -> bool:
    """The IP length field is the packet's length (RFC 791 3.1 Total Length, RFC 8200 3
    Payload Length), the IPv4 header checksum holds (RFC 791 3.1), and so does the transport
    checksum over the pseudo-header (RFC 9293 3.1, RFC 768; RFC 8200 8.1). The compiled
    helper's ``whole`` is the same, faster."""
    n = len(p)
    v = p[0] >> 4 if n else 0
    ip = 20 if v == 4 else 40
    if n < ip + 8 or n > 0xFFFF + 40:
        return False
    m = memoryview(p)  # slices without copies
    if v == 4:
        if (p[2] << 8 | p[3]) != n or sum16(m[:20]) != 0xFFFF:
            return False
    elif (p[4] << 8 | p[5]) + 40 != n:
        return False
    if proto == UDP:
        if (p[ip + 4] << 8 | p[ip + 5]) != n - ip:
            return False  # RFC 768: the UDP length covers header and data
        if v == 4 and not p[ip + 6] and not p[ip + 7]:
            return True  # RFC 768: no checksum was computed (IPv4 only; RFC 8200 8.1)
    addrs = sum16(m[12:20] if v == 4 else m[8:40])
    return _fold(addrs + proto + n - ip + sum16(m[ip:])) == 0xFFFF


def _whole(p, proto: int) -> bool:
    if _whole_c is not None and sum16 is not ones_complement_sum:  # the tests swap sum16
        return _whole_c(p, proto)
    return _whole_py(p, proto)


def _tcp_key(p: bytes):
    """(flow key, header length, sequence number, flags) of a TCP segment that may join a
    run, or None. The key holds every header byte GRO requires equal (tcp_gro_receive,
    inet_gro_receive): addresses, ports, ack, window, options, TOS/TTL/DF; IPv4 options and
    fragments never join, nor a segment the kernel would refuse alone (_whole)."""
    v = p[0] >> 4
    if v == 4:
        if p[0] != 0x45 or p[9] != TCP or len(p) < 40 or p[6] & 0x3F or p[7]:
            return None
        ip = 20
        key = (4, p[1], p[8], p[6], p[12:20])
    elif v == 6:
        if p[6] != TCP or len(p) < 60:
            return None
        ip = 40
        key = (6, p[0:4], p[7], p[8:40])
    else:
        return None
    doff = p[ip + 12] >> 4
    hlen = ip + doff * 4
    if doff < 5 or hlen > len(p):  # RFC 9293 3.1: Data Offset 5 at least
        return None
    flags = p[ip + 13]
    if flags & ~(ACK | PSH) or not flags & ACK:
        return None  # SYN, FIN, RST, URG, ECN signals: GRO flushes on them, so do we
    if not _whole(p, TCP):
        return None
    return (key, p[ip:ip + 4], p[ip + 8:ip + 12], p[ip + 14:ip + 16], p[ip + 20:hlen]), \
        hlen, int.from_bytes(p[ip + 4:ip + 8], "big"), flags


def _udp_key(p: bytes):
    if len(p) < 28:
        return None
    v = p[0] >> 4
    if v == 4:
        if p[0] != 0x45 or p[9] != UDP or p[6] & 0x3F or p[7] or not _whole(p, UDP):
            return None
        return (4, p[1], p[8], p[6], p[12:24]), 28
    if v == 6 and p[6] == UDP and len(p) >= 48 and _whole(p, UDP):
        return (6, p[0:4], p[7], p[8:44]), 48
    return None


def coalesce(packets: list, udp: bool = True) -> list[tuple[bytes, object, int]]:
    """(virtio_net_hdr, packet, segments in it) to write to the TUN for ``packets`` (decrypted, in
    order): consecutive segments of one flow become one GSO super-packet; everything else
    goes through as it is behind a plain header. ``udp``: the device accepts UDP super-packets
    (TUN_F_USO4/6, Linux 6.2)."""
    out: list[tuple[bytes, object, int]] = []
    i, n = 0, len(packets)
    while i < n:
        p = packets[i]
        j = i + 1
        # the protocol byte first (IPv4 offset 9, IPv6 next header at 6): a flood of UDP
        # packets should pay one comparison each here, not a header parse
        t = _tcp_key(p) if len(p) >= 40 and (p[9] if p[0] >> 4 == 4 else p[6]) == TCP \
            else None
        if t is not None:
            key, hlen, seq, flags = t
            size = len(p) - hlen
            total = len(p)
            if size and not flags & PSH:
                nxt = seq + size
                while j < n and j - i < MAX_RUN:
                    q = packets[j]
                    u = _tcp_key(q)
                    if u is None or u[0] != key or u[1] != hlen or u[2] != nxt & 0xFFFFFFFF:
                        break
                    qs = len(q) - hlen
                    if qs == 0 or qs > size or total + qs > MAX_SUPER:
                        break
                    total += qs
                    nxt += qs
                    j += 1
                    if qs < size or u[3] & PSH:
                        break  # a shorter or pushed segment ends the run, as in GRO
            if j - i > 1:
                out.append((*_tcp_super(packets[i:j], hlen, size), j - i))
                i = j
                continue
        elif udp:
            k = _udp_key(p)
            if k is not None:
                key, hlen = k
                size = len(p) - hlen
                total = len(p)
                while size and j < n and j - i < MAX_RUN:
                    q = packets[j]
                    u = _udp_key(q)
                    if u is None or u[0] != key:
                        break
                    qs = len(q) - hlen
                    if qs == 0 or qs > size or total + qs > MAX_SUPER:
                        break
                    total += qs
                    j += 1
                    if qs < size:
                        break
                if j - i > 1:
                    out.append((*_udp_super(packets[i:j], hlen, size), j - i))
                    i = j
                    continue
        out.append((PLAIN, p, 1))
        i += 1
    return out


def _super_ip(first: bytes, l4: int, total: int) -> bytearray:
    iph = bytearray(first[:l4])
    if l4 == 20:
        iph[2:4] = total.to_bytes(2, "big")
        iph[10:12] = b"\0\0"
        iph[10:12] = (~sum16(iph) & 0xFFFF).to_bytes(2, "big")
    else:
        iph[4:6] = (total - 40).to_bytes(2, "big")
    return iph


def _tcp_super(run: list, hlen: int, mss: int) -> tuple[bytes, bytes]:
    first = run[0]
    l4 = 20 if first[0] >> 4 == 4 else 40
    total = hlen + sum(len(q) - hlen for q in run)
    th = bytearray(first[l4:hlen])
    th[13] |= run[-1][l4 + 13] & PSH
    # NEEDS_CSUM: the field holds the pseudo-header sum; the kernel completes it if it ever
    # sends the bytes on, and trusts it on local delivery (CHECKSUM_PARTIAL)
    th[16:18] = _fold(_pseudo(first, 4 if l4 == 20 else 6, TCP) + total - l4).to_bytes(2, "big")
    body = [_super_ip(first, l4, total), th, *(memoryview(q)[hlen:] for q in run)]
    hdr = _HDR.pack(F_NEEDS_CSUM, GSO_TCPV4 if l4 == 20 else GSO_TCPV6, hlen, mss, l4, 16)
    return hdr, b"".join(body)


def _udp_super(run: list, hlen: int, size: int) -> tuple[bytes, bytes]:
    first = run[0]
    l4 = hlen - 8
    total = hlen + sum(len(q) - hlen for q in run)
    uh = bytearray(first[l4:hlen])
    uh[4:6] = (total - l4).to_bytes(2, "big")
    uh[6:8] = _fold(_pseudo(first, 4 if l4 == 20 else 6, UDP) + total - l4).to_bytes(2, "big")
    body = [_super_ip(first, l4, total), uh, *(memoryview(q)[hlen:] for q in run)]
    hdr = _HDR.pack(F_NEEDS_CSUM, GSO_UDP_L4, hlen, size, l4, 6)
    return hdr, b"".join(body)
