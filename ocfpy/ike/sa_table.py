"""The IKE SAs an engine holds, indexed the three ways demultiplexing needs (RFC 7296 2.6):
by our own SPI (every message after IKE_SA_INIT), by unique id (the API, timers), and, for a
responder's half-open SA, by (peer's SPIi, peer address) so that a retransmitted IKE_SA_INIT
finds the SA it already created, even from another source port (a NAT rebinding, RFC 7296 2.1).

The table also remembers which SAs changed since the engine last looked (``touched``): an SA
made or handed CHILD_SAs in the middle of another SA's exchange (an IKE SA rekey) needs its
timer armed too, and only the engine owns the timer heap."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ocfpy.ike.sa import IkeSa

HalfOpenKey = tuple[bytes, str]


class SaTable:
    __slots__ = ("_by_spi", "_by_id", "_by_name", "_half_open", "_per_ip", "_ids", "_touched",
                 "half_open_peak")

    def __init__(self) -> None:
        self._by_spi: dict[bytes, IkeSa] = {}
        self._by_id: dict[int, IkeSa] = {}
        # connection name -> its SAs, oldest first (succession.py looks there, not at all SAs)
        self._by_name: dict[str, dict[IkeSa, None]] = {}
        self._half_open: dict[HalfOpenKey, IkeSa] = {}
        self._per_ip: dict[str, int] = {}  # half-open SAs per peer address (block_threshold)
        self.half_open_peak = 0
        self._ids = itertools.count(1)
        self._touched: dict[int, IkeSa] = {}

    def new_id(self) -> int:
        return next(self._ids)

    # -- insert / move / remove ----------------------------------------------------------------
    def add(self, sa: IkeSa, half_open: HalfOpenKey | None = None) -> None:
        """Index ``sa`` by its SPI (ours must be set) and id. An SA that takes over the id of a
        closed one (keyingtries: a fresh attempt under the same id) replaces it in the id index."""
        self._by_spi[sa.our_spi] = sa
        self._by_id[sa.id] = sa
        self._by_name.setdefault(sa.name, {})[sa] = None
        if half_open is not None:
            self._half_open[half_open] = sa
            sa.half_open_key = half_open
            ip = half_open[1]
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
            self.half_open_peak = max(self.half_open_peak, len(self._half_open))
        self.touch(sa)

    def established(self, sa: IkeSa) -> None:
        """IKE_AUTH done: the SA is no longer half-open (it stops counting for COOKIEs)."""
        self._drop_half_open(sa)

    def remove(self, sa: IkeSa) -> None:
        if self._by_spi.get(sa.our_spi) is sa:
            del self._by_spi[sa.our_spi]
        if self._by_id.get(sa.id) is sa:
            del self._by_id[sa.id]
        named = self._by_name.get(sa.name)
        if named is not None:
            named.pop(sa, None)
            if not named:
                del self._by_name[sa.name]
        self._drop_half_open(sa)

    def _drop_half_open(self, sa: IkeSa) -> None:
        key = sa.half_open_key
        if key is not None:
            if self._half_open.pop(key, None) is not None:
                n = self._per_ip.get(key[1], 0) - 1
                if n > 0:
                    self._per_ip[key[1]] = n
                else:
                    self._per_ip.pop(key[1], None)
            sa.half_open_key = None

    # -- look-ups ------------------------------------------------------------------------------
    def renamed(self, sa: IkeSa, old_name: str) -> None:
        """``sa``'s connection was chosen again by the peer's identity (IKE_AUTH): move it
        in the name index."""
        if sa.name == old_name or self._by_id.get(sa.id) is not sa:
            return
        named = self._by_name.get(old_name)
        if named is not None:
            named.pop(sa, None)
            if not named:
                del self._by_name[old_name]
        self._by_name.setdefault(sa.name, {})[sa] = None

    def named(self, name: str) -> list[IkeSa]:
        """The SAs of connection ``name`` in the table, oldest first."""
        return list(self._by_name.get(name, ()))

    def by_spi(self, our_spi: bytes) -> IkeSa | None:
        return self._by_spi.get(our_spi)

    def by_id(self, sa_id: int) -> IkeSa | None:
        return self._by_id.get(sa_id)

    def half_open(self, key: HalfOpenKey) -> IkeSa | None:
        return self._half_open.get(key)

    @property
    def half_open_count(self) -> int:
        return len(self._half_open)

    def half_open_from(self, ip: str) -> int:
        return self._per_ip.get(ip, 0)

    def sizes(self) -> dict[str, int]:
        """How many entries each index holds (all zero once every SA is gone)."""
        return {"spi": len(self._by_spi), "id": len(self._by_id),
                "half_open": len(self._half_open), "half_open_ips": len(self._per_ip)}

    def __iter__(self) -> Iterator[IkeSa]:
        """Every SA, as a snapshot: callers close SAs while they iterate."""
        return iter(list(self._by_id.values()))

    # -- timers --------------------------------------------------------------------------------
    def touch(self, sa: IkeSa) -> None:
        """``sa``'s next deadline may have changed."""
        self._touched[sa.id] = sa

    def drain_touched(self) -> list[IkeSa]:
        out = list(self._touched.values())
        self._touched.clear()
        return out
