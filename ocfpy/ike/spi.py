"""SPI allocation (RFC 7296 2.6 for IKE, 3.3.1 for ESP).

IKE SPIs are 8 random non-zero octets, unique among the SAs in the table (the table is the
record of which are in use: an SA's SPI is freed when the table drops it). CHILD_SA SPIs are 4
random octets >= 256 (0-255 are reserved by IANA, RFC 4303 2.1), unique among the inbound SPIs
we hold; they are held from the moment we put one in an SA payload until ``release_child``,
which every path that gives up on a CHILD_SA must call."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ocfpy.ike.sa_table import SaTable


class SpiAllocator:
    __slots__ = ("_random", "_table", "_child")

    def __init__(self, random: Callable[[int], bytes], table: SaTable):
        self._random = random
        self._table = table
        self._child: set[bytes] = set()

    def ike(self) -> bytes:
        while True:
            spi = self._random(8)
            if spi.strip(b"\x00") and self._table.by_spi(spi) is None:
                return spi

    def child(self) -> bytes:
        while True:
            spi = self._random(4)
            if int.from_bytes(spi, "big") >= 256 and spi not in self._child:
                self._child.add(spi)
                return spi

    def release_child(self, spi: bytes) -> None:
        self._child.discard(spi)

    def child_in_use(self, spi: bytes) -> bool:
        return spi in self._child

    @property
    def children_held(self) -> frozenset[bytes]:
        return frozenset(self._child)
