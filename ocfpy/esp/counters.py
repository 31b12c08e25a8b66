"""Counters shared between the dataplane's worker processes and the daemon, without messages.

One anonymous shared mapping (MAP_SHARED, inherited across fork) holds a row of 64-bit
counters per SA slot. Each field has exactly one writer (the inbound worker writes the *_in
fields and the drops, the outbound worker the *_out fields), and aligned 8-byte stores are
atomic on the machines we run on, so readers never see a torn value.
"""

from __future__ import annotations

import mmap
import threading
from enum import IntEnum

from ocfpy.esp.dataplane.base import SaCounters


class F(IntEnum):
    PACKETS_IN = 0
    BYTES_IN = 1
    PACKETS_OUT = 2
    BYTES_OUT = 3
    REPLAY_DROPS = 4
    AUTH_FAILURES = 5
    MALFORMED = 6  # truncated, bad padding, bad next header, selector mismatch
    POLICY_DROPS = 7  # (part of MALFORMED too) inner addresses outside the selectors


class G(IntEnum):
    """Dataplane-wide counters (slot 0): packets that belong to no SA."""

    UNKNOWN_SPI = 0
    MALFORMED = 1  # too short to carry an SPI, junk on port 4500
    NO_POLICY = 2  # outbound packet from the TUN that no policy covers
    IKE_FORWARDED = 3
    KEEPALIVES = 4
    SEND_ERRORS = 5
    TUN_WRITE_ERRORS = 6
    SEQ_EXHAUSTED = 7
    # an inbound ESP packet for an SPI that was installed and has been removed (a rekeyed
    # SA's tail after its grace period, issue 18); UNKNOWN_SPI counts the never-seen ones
    REMOVED_SPI = 8


WIDTH = 10  # fields per slot (G, in slot 0, needs 9)


class CounterBlock:
    def __init__(self, slots: int = 1024):
        self.slots = slots
        self._map = mmap.mmap(-1, (slots + 1) * WIDTH * 8)  # anonymous, MAP_SHARED
        self.cells = memoryview(self._map).cast("Q")
        self._free = list(range(slots, 0, -1))  # slot 0 is global
        self._lock = threading.Lock()

    def allocate(self) -> int:
        with self._lock:
            if not self._free:
                raise RuntimeError(f"more than {self.slots} SAs installed in one dataplane")
            slot = self._free.pop()
        base = slot * WIDTH
        for i in range(WIDTH):
            self.cells[base + i] = 0
        return slot

    def release(self, slot: int) -> None:
        with self._lock:
            self._free.append(slot)

    def get(self, slot: int, field: F) -> int:
        return self.cells[slot * WIDTH + field]

    def global_counters(self) -> dict[str, int]:
        return {g.name.lower(): self.cells[g] for g in G}

    def sa_counters(self, slot: int) -> SaCounters:
        c = self.cells
        b = slot * WIDTH
        return SaCounters(
            packets_in=c[b + F.PACKETS_IN], bytes_in=c[b + F.BYTES_IN],
            packets_out=c[b + F.PACKETS_OUT], bytes_out=c[b + F.BYTES_OUT],
            replay_drops=c[b + F.REPLAY_DROPS], auth_failures=c[b + F.AUTH_FAILURES],
            malformed=c[b + F.MALFORMED],
        )
