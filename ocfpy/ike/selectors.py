"""Traffic selectors: from config strings, to/from TS payloads, and narrowing (RFC 7296 2.9).

The responder narrows: each of the initiator's selectors intersected with each of ours; an
empty result is TS_UNACCEPTABLE. The initiator then checks the answer is within what it asked.
"""

from __future__ import annotations

import functools
import ipaddress

from ocfpy.esp.spec import TrafficSelector
from ocfpy.ike.codec.payloads import RawSelector
from ocfpy.ike.constants import TsType

_FULL = {4: ("0.0.0.0", "255.255.255.255"), 6: ("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")}


def parse(texts: list[str], dynamic: str) -> list[TrafficSelector]:
    """Config strings to selectors (cached: configs are fixed, selectors immutable)."""
    return list(_parse(tuple(texts), dynamic))


@functools.lru_cache(maxsize=1024)
def _parse(texts: tuple[str, ...], dynamic: str) -> tuple[TrafficSelector, ...]:
    """Config strings ("10.1.0.0/16", "dynamic", "10.1.0.0/16[tcp/80]" not yet) to selectors;
    "dynamic" is the outer address ``dynamic``."""
    out: list[TrafficSelector] = []
    for text in texts:
        net = text.split("[", 1)[0].strip()
        if net == "dynamic":
            net = dynamic
        proto = 0
        ports = (0, 65535)
        if "[" in text:
            spec = text.split("[", 1)[1].rstrip("]")
            p, _, port = spec.partition("/")
            proto = {"tcp": 6, "udp": 17, "icmp": 1, "icmp6": 58, "": 0}.get(p, None) \
                if not p.isdigit() else int(p)
            if proto is None:
                raise ValueError(f"unknown protocol {p!r} in traffic selector {text!r}")
            if port:
                lo, _, hi = port.partition("-")
                ports = (int(lo), int(hi or lo))
        out.append(TrafficSelector.from_network(net, proto, ports))
    return tuple(out)


def to_raw(ts: TrafficSelector) -> RawSelector:
    tst = TsType.IPV4_ADDR_RANGE if ts.start.version == 4 else TsType.IPV6_ADDR_RANGE
    return RawSelector(int(tst), ts.protocol, ts.start_port, ts.end_port, ts.start, ts.end)


def from_raw(raw: RawSelector) -> TrafficSelector:
    return TrafficSelector(raw.start, raw.end, raw.protocol, raw.start_port, raw.end_port)


def intersect(a: TrafficSelector, b: TrafficSelector) -> TrafficSelector | None:
    if a.start.version != b.start.version:
        return None
    if a.protocol and b.protocol and a.protocol != b.protocol:
        return None
    start, end = max(a.start, b.start), min(a.end, b.end)
    sp, ep = max(a.start_port, b.start_port), min(a.end_port, b.end_port)
    if start > end or sp > ep:
        return None
    return TrafficSelector(start, end, a.protocol or b.protocol, sp, ep)


def narrow(offered: list[TrafficSelector], ours: list[TrafficSelector]) -> list[TrafficSelector]:
    out: list[TrafficSelector] = []
    for o in offered:
        for m in ours:
            x = intersect(o, m)
            if x is not None and x not in out:
                out.append(x)
    return out


def within(inner: TrafficSelector, outer: list[TrafficSelector]) -> bool:
    return any(intersect(inner, o) == inner for o in outer)


def full(version: int) -> TrafficSelector:
    lo, hi = _FULL[version]
    return TrafficSelector(ipaddress.ip_address(lo), ipaddress.ip_address(hi))
