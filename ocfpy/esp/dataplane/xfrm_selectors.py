"""IKEv2 traffic selectors (address ranges, port ranges) to XFRM selectors (prefix, port/mask).

An XFRM selector is one prefix per side and one port/mask per side, while an IKEv2 traffic
selector is an address range and a port range. A range is covered exactly by a list of
prefixes (TrafficSelector.networks) and of aligned port blocks, so one pair of selectors
becomes the product of those lists: exact, never broader than what IKE negotiated.
ICMP keeps type and code in the port fields (RFC 7296 3.13.1: type in the high byte of the
start port, code in the low byte); the kernel reads sport as the type and dport as the
code, so an ICMP selector narrows only when it names one type/code.
"""

from __future__ import annotations

import itertools
import logging
import socket

from ocfpy.esp.dataplane.xfrm_msg import Selector
from ocfpy.esp.spec import TrafficSelector

log = logging.getLogger(__name__)

MAX_SELECTORS = 64  # per direction and CHILD_SA: a wider product is surely a mistake
ICMP_PROTOCOLS = (1, 58)


def port_blocks(start: int, end: int) -> list[tuple[int, int]]:
    """Aligned (port, mask) blocks covering start..end exactly; (0, 0) means any port."""
    if (start, end) == (0, 65535):
        return [(0, 0)]
    if start > end:
        raise ValueError(f"port range {start}-{end} is empty")
    blocks = []
    while start <= end:
        size = start & -start if start else 1 << 16
        while start + size - 1 > end:
            size >>= 1
        blocks.append((start, (0xFFFF << (size.bit_length() - 1)) & 0xFFFF))
        start += size
    return blocks


def _icmp(ts: TrafficSelector) -> tuple[int, int, int, int]:
    """(type, type mask, code, code mask) for an ICMP selector."""
    if (ts.start_port, ts.end_port) == (0, 65535):
        return 0, 0, 0, 0
    if ts.start_port == ts.end_port:
        return ts.start_port >> 8, 0xFFFF, ts.start_port & 0xFF, 0xFFFF
    if ts.start_port >> 8 == ts.end_port >> 8 and ts.start_port & 0xFF == 0 \
            and ts.end_port & 0xFF == 0xFF:
        return ts.start_port >> 8, 0xFFFF, 0, 0
    log.warning("ICMP selector %s: XFRM cannot express this type/code range; using any", ts)
    return 0, 0, 0, 0


def selectors(src_ts: list[TrafficSelector], dst_ts: list[TrafficSelector]) -> list[Selector]:
    """XFRM selectors for traffic from src_ts to dst_ts (both lists of one CHILD_SA side)."""
    out: list[Selector] = []
    count = 0
    for s, d in itertools.product(src_ts, dst_ts):
        if s.start.version != d.start.version:
            continue
        if s.protocol and d.protocol and s.protocol != d.protocol:
            continue
        proto = s.protocol or d.protocol
        family = socket.AF_INET6 if s.start.version == 6 else socket.AF_INET
        if proto in ICMP_PROTOCOLS:
            icmp = s if s.protocol else d
            t, tm, c, cm = _icmp(icmp)
            ports = [((t, tm), (c, cm))]
        else:
            ports = list(itertools.product(port_blocks(s.start_port, s.end_port),
                                           port_blocks(d.start_port, d.end_port)))
            if not proto and ports != [((0, 0), (0, 0))]:
                raise ValueError(f"traffic selector {s} === {d}: ports without a protocol")
        snets, dnets = s.networks(), d.networks()
        count += len(snets) * len(dnets) * len(ports)
        if count > MAX_SELECTORS:  # checked before building them: the product can be huge
            raise ValueError(f"more than {MAX_SELECTORS} XFRM selectors for {len(src_ts)}x"
                             f"{len(dst_ts)} traffic selectors (at most {MAX_SELECTORS}): "
                             "use fewer, CIDR-aligned ranges")
        for snet, dnet in itertools.product(snets, dnets):
            for (sport, smask), (dport, dmask) in ports:
                out.append(Selector(family, snet.network_address, snet.prefixlen,
                                    dnet.network_address, dnet.prefixlen, proto,
                                    sport, smask, dport, dmask))
    return out


def priority(sel: Selector) -> int:
    """Policy priority: more specific selectors first (the kernel prefers lower values),
    in the spirit of strongSwan's kernel_netlink get_priority()."""
    prio = 200_000
    prio -= (sel.src_prefix + sel.dst_prefix) * 256 // (4 if sel.family == socket.AF_INET6 else 1)
    prio -= 128 if sel.proto else 0
    prio -= 32 * (bool(sel.sport_mask) + bool(sel.dport_mask))
    return prio
