"""Counters and sequence numbers shared between the dataplane's worker processes and the
daemon, without messages.

One anonymous shared mapping (MAP_SHARED, inherited across fork) holds, per *lane*, a row of
64-bit counters per SA slot. Lane i is written by the outbound worker of TUN queue i
(docs/dataplanes.md *Workers*) and, in lane 0, by the inbound worker: in a lane each field has
exactly one writer (the inbound worker writes the *_in fields and the drops, an outbound worker
the *_out fields), and aligned 8-byte stores are atomic on the machines we run on, so readers
never see a torn value. Readers sum the lanes.

Behind the lanes, a row per slot that all lanes share: the SA's outbound sequence counter
(the last number reserved, RFC 4303 s. 3.3.3: one counter per SA, whoever sends) and a word of
flags that makes a lifetime event fire once for all workers. With more than one lane they are
changed only under `lock` (a process-shared semaphore created before the fork).
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import threading
from enum import IntEnum, IntFlag

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


class Once(IntFlag):
    """Lifetime events that fire once per SA however many workers see the limit."""

    OUT_SOFT = 1
    OUT_HARD = 2
    IN_SOFT = 4
    IN_HARD = 8


WIDTH = 10  # fields per slot (G, in slot 0, needs 9)
SHARED_WIDTH = 2  # per slot, shared by all lanes: the last sequence number reserved, Once flags
_SEQ, _ONCE = 0, 1


class CounterBlock:
    def __init__(self, slots: int = 1024, lanes: int = 1):
        if lanes < 1:
            raise ValueError(f"{lanes} lanes: at least 1")
        self.slots = slots
        self.lanes = lanes
        self._lane_cells = (slots + 1) * WIDTH
        self._map = mmap.mmap(-1, (lanes * self._lane_cells + (slots + 1) * SHARED_WIDTH) * 8)
        self._all = memoryview(self._map).cast("Q")
        self.cells = self.lane(0)
        self.shared = self._all[lanes * self._lane_cells:]
        # one writer per field needs no lock; the shared row has several writers
        self.lock = multiprocessing.get_context("fork").Lock() if lanes > 1 else None
        self._free = list(range(slots, 0, -1))  # slot 0 is global
        self._lock = threading.Lock()

    def lane(self, index: int) -> memoryview:
        """The cells lane ``index`` writes (fields indexed slot * WIDTH + F)."""
        if not 0 <= index < self.lanes:
            raise IndexError(f"lane {index} of {self.lanes}")
        return self._all[index * self._lane_cells:(index + 1) * self._lane_cells]

    def allocate(self) -> int:
        with self._lock:
            if not self._free:
                raise RuntimeError(f"more than {self.slots} SAs installed in one dataplane")
            slot = self._free.pop()
        base = slot * WIDTH
        for lane in range(self.lanes):
            start = lane * self._lane_cells + base
            for i in range(WIDTH):
                self._all[start + i] = 0
        for i in range(SHARED_WIDTH):
            self.shared[slot * SHARED_WIDTH + i] = 0
        return slot

    def release(self, slot: int) -> None:
        with self._lock:
            self._free.append(slot)

    def get(self, slot: int, field: F) -> int:
        return self._sum(slot * WIDTH + field)

    def _sum(self, index: int) -> int:
        step, cells = self._lane_cells, self._all
        return sum(cells[lane * step + index] for lane in range(self.lanes))

    def totals(self, slot: int, packets: F, nbytes: F) -> tuple[int, int]:
        """An SA's packets and bytes in one direction, over all lanes (lifetimes count these)."""
        base = slot * WIDTH
        return self._sum(base + packets), self._sum(base + nbytes)

    def global_counters(self) -> dict[str, int]:
        return {g.name.lower(): self._sum(g) for g in G}

    def sa_counters(self, slot: int) -> SaCounters:
        """An SA's counters, summed over the lanes."""
        return self._counters(slot * WIDTH, self._sum)

    def lane_counters(self, slot: int, lane: int) -> SaCounters:
        """An SA's counters in one lane (what one worker pair counted)."""
        cells = self.lane(lane)
        return self._counters(slot * WIDTH, cells.__getitem__)

    @staticmethod
    def _counters(b: int, s) -> SaCounters:
        return SaCounters(
            packets_in=s(b + F.PACKETS_IN), bytes_in=s(b + F.BYTES_IN),
            packets_out=s(b + F.PACKETS_OUT), bytes_out=s(b + F.BYTES_OUT),
            replay_drops=s(b + F.REPLAY_DROPS), auth_failures=s(b + F.AUTH_FAILURES),
            malformed=s(b + F.MALFORMED),
        )

    # -- the rows all lanes share ------------------------------------------------------------
    def sequence(self, slot: int, limit: int) -> SharedSequence:
        return SharedSequence(self.shared, slot * SHARED_WIDTH + _SEQ, limit, self.lock)

    def once(self, slot: int, event: Once) -> bool:
        """True for the first caller (of any worker) to report ``event`` for this slot."""
        cell = slot * SHARED_WIDTH + _ONCE
        with self.lock or contextlib.nullcontext():
            flags = self.shared[cell]
            if flags & event:
                return False
            self.shared[cell] = flags | event
            return True


class SharedSequence:
    """One SA's outbound sequence counter, shared by every outbound worker.

    `take` reserves a block of consecutive numbers under the lock: each worker's numbers are
    strictly increasing and no number is handed out twice (RFC 4303 s. 3.3.3: "the sender's
    counter ... MUST NOT be allowed to cycle"). With ESN the counter is the full 64 bits
    (RFC 4303 s. 3.3.3 and appendix A: the high half is never sent but counts). Two workers'
    blocks interleave on the wire: the bound on their size is in worker.py (SEQ_BLOCK).
    """

    __slots__ = ("cells", "index", "limit", "lock")

    def __init__(self, cells: memoryview, index: int, limit: int, lock) -> None:
        self.cells = cells
        self.index = index
        self.limit = limit  # 2^32 - 1, or 2^64 - 1 with ESN
        self.lock = lock

    @property
    def last(self) -> int:
        """The last number reserved (0: none yet; the first packet carries 1)."""
        return self.cells[self.index]

    def take(self, n: int) -> tuple[int, int]:
        """(last number before the block, how many reserved): the block is base+1 .. base+k;
        k < n once the counter reaches its limit (k = 0: exhausted, the SA must be rekeyed)."""
        cells, i = self.cells, self.index
        if self.lock is None:  # one outbound worker: the only writer
            base = cells[i]
            k = max(min(n, self.limit - base), 0)
            cells[i] = base + k
            return base, k
        with self.lock:
            base = cells[i]
            k = max(min(n, self.limit - base), 0)
            cells[i] = base + k
        return base, k
