"""Security policy database for the userspace dataplane (RFC 4301 s. 4.4.1, trimmed to what a
CHILD_SA needs): which outbound SA protects a packet, and whether a decrypted inbound packet
is allowed by the selectors of the SA it came on.

Selectors come from ChildSaSpec.local_ts / remote_ts. Newer policies win over older ones with
the same selectors: during a rekey the new CHILD_SA takes over outbound traffic at once, while
the old one still accepts inbound packets until it is removed (as strongSwan does).
A flow cache keyed by (src, dst, protocol, ports) keeps the lookup O(1) per packet.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ocfpy.esp.spec import TrafficSelector

T = TypeVar("T")

_PORT_PROTOCOLS = (6, 17, 132)  # TCP, UDP, SCTP: ports at the start of the L4 header
_CACHE_LIMIT = 4096


def flow(packet: bytes) -> tuple[bytes, bytes, int, int, int] | None:
    """(src, dst, protocol, src port, dst port) of an IPv4/IPv6 packet, or None if malformed.

    IPv6 extension headers are not walked: the protocol is the first next header.
    """
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4:
        if len(packet) < 20:
            return None
        ihl = (packet[0] & 0x0F) * 4
        proto = packet[9]
        src, dst = packet[12:16], packet[16:20]
        frag = int.from_bytes(packet[6:8], "big") & 0x1FFF
        l4 = ihl
    elif version == 6:
        if len(packet) < 40:
            return None
        proto = packet[6]
        src, dst = packet[8:24], packet[24:40]
        frag = 0
        l4 = 40
    else:
        return None
    if proto in _PORT_PROTOCOLS and not frag and len(packet) >= l4 + 4:
        return src, dst, proto, int.from_bytes(packet[l4:l4 + 2], "big"), int.from_bytes(
            packet[l4 + 2:l4 + 4], "big")
    return src, dst, proto, 0, 0


def _address_key(packet: bytes) -> bytes:
    """Source and destination bytes: the cache key when no selector names ports/protocols."""
    return packet[12:20] if packet[0] >> 4 == 4 else packet[8:40]


def _uses_ports(selectors: Sequence[TrafficSelector]) -> bool:
    return any(ts.protocol or (ts.start_port, ts.end_port) != (0, 65535) for ts in selectors)


def _match(selectors: Sequence[TrafficSelector], addr: bytes, proto: int, port: int) -> bool:
    ip = ipaddress.ip_address(addr)
    return any(ts.contains(ip, proto, port) for ts in selectors)


@dataclass
class Policy(Generic[T]):
    local_ts: list[TrafficSelector]
    remote_ts: list[TrafficSelector]
    sa: T  # what the dataplane keeps per outbound SA

    def matches_out(self, src: bytes, dst: bytes, proto: int, sport: int, dport: int) -> bool:
        return (_match(self.local_ts, src, proto, sport)
                and _match(self.remote_ts, dst, proto, dport))

    def allows_in(self, src: bytes, dst: bytes, proto: int, sport: int, dport: int) -> bool:
        return (_match(self.remote_ts, src, proto, sport)
                and _match(self.local_ts, dst, proto, dport))


class PolicyTable(Generic[T]):
    def __init__(self) -> None:
        self._policies: list[tuple[int, Policy[T]]] = []  # (key, policy), newest last
        self._cache: dict[object, T | None] = {}
        self._ports = False  # whether any selector looks past the addresses

    def add(self, key: int, local_ts: list[TrafficSelector], remote_ts: list[TrafficSelector],
            sa: T) -> None:
        self._policies.append((key, Policy(local_ts, remote_ts, sa)))
        self._changed()

    def remove(self, key: int) -> None:
        self._policies = [(k, p) for k, p in self._policies if k != key]
        self._changed()

    def _changed(self) -> None:
        self._cache.clear()
        self._ports = any(_uses_ports(p.local_ts) or _uses_ports(p.remote_ts)
                          for _, p in self._policies)

    def __len__(self) -> int:
        return len(self._policies)

    def lookup(self, packet: bytes) -> T | None:
        """The outbound SA for this packet (None: no policy, drop)."""
        cache = self._cache
        if not self._ports and packet:
            key: object = _address_key(packet)  # the fast path: one slice, one dict lookup
            try:
                return cache[key]
            except KeyError:
                pass
        f = flow(packet)
        if f is None:
            return None
        if self._ports:
            key = f
            try:
                return cache[key]
            except KeyError:
                pass
        found = None
        for _key, policy in reversed(self._policies):
            if policy.matches_out(*f):
                found = policy.sa
                break
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = found
        return found


class InboundCheck:
    """The inbound selector check of one SA, cached per flow (RFC 4301 s. 5.2 step 4)."""

    __slots__ = ("policy", "_cache", "_ports")

    def __init__(self, local_ts: list[TrafficSelector], remote_ts: list[TrafficSelector]):
        self.policy: Policy[None] = Policy(local_ts, remote_ts, None)
        self._cache: dict[object, bool] = {}
        self._ports = _uses_ports(local_ts) or _uses_ports(remote_ts)

    def allows(self, packet: bytes) -> bool:
        cache = self._cache
        key: object = _address_key(packet) if not self._ports and packet else None
        if key is not None:
            try:
                return cache[key]
            except KeyError:
                pass
        f = flow(packet)
        if f is None:
            return False
        if key is None:
            key = f
            try:
                return cache[key]
            except KeyError:
                pass
        ok = self.policy.allows_in(*f)
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = ok
        return ok
