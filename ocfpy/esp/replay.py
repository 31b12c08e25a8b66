"""Anti-replay (RFC 4303 s. 3.4.3) with extended sequence numbers (RFC 4303 appendix A).

Two steps, as strongSwan's libipsec splits them (esp_context.c verify_seqno /
set_authenticated_seqno): `check` decides, without changing anything, whether a sequence
number may be new and returns the full 64-bit value (inferring the high half with ESN);
`accept` moves the window, and the caller calls it only after the ICV verified. A forged
packet therefore can never move the window.

The window is a Python int used as a bitmap: bit i stands for sequence number top - i.
"""

from __future__ import annotations

import mmap
import multiprocessing

MAX_WINDOW = 4096
DEFAULT_WINDOW = 128
_LOW = 0xFFFFFFFF


class ReplayWindow:
    __slots__ = ("size", "esn", "top", "bitmap", "_mask")

    def __init__(self, size: int = DEFAULT_WINDOW, esn: bool = False):
        if not 0 <= size <= MAX_WINDOW:
            raise ValueError(f"replay window {size}: must be 0 (off) to {MAX_WINDOW} packets")
        self.size = size  # 0: no replay protection (still infers ESN high bits)
        self.esn = esn
        self.top = 0  # highest authenticated sequence number (64 bits with ESN)
        self.bitmap = 0
        self._mask = (1 << size) - 1

    def infer(self, seq_low: int) -> int:
        """The full sequence number for the 32 bits on the wire (RFC 4303 appendix A2.2).

        The window's bottom B = top - W + 1 splits the 2^32 subspaces: a low value at or above
        B's low half belongs to B's subspace, one below it to the next subspace up.
        """
        if not self.esn:
            return seq_low
        window = max(self.size, 1)
        bottom = self.top - window + 1
        if bottom < 0:
            bottom = 0
        high = bottom >> 32
        if seq_low < (bottom & _LOW):
            high += 1
        return (high << 32) | seq_low

    def check(self, seq_low: int) -> int | None:
        """The full sequence number if the packet may be new, else None. No state change."""
        seq = self.infer(seq_low)
        return seq if self.fresh(seq) else None

    def fresh(self, seq: int) -> bool:
        """Whether a full sequence number is new to the window. Checked again just before
        `accept`, because two copies of one packet can arrive in the same batch."""
        if seq == 0:
            return False  # the first packet carries 1; 0 is never sent (s. 3.3.3)
        if self.size == 0 or seq > self.top:
            return True
        diff = self.top - seq
        return diff < self.size and not (self.bitmap >> diff) & 1

    def accept(self, seq: int) -> None:
        """Record an authenticated sequence number (after the ICV check)."""
        if seq > self.top:
            shift = seq - self.top
            self.bitmap = ((self.bitmap << shift) | 1) & self._mask if shift < self.size else 1
            self.top = seq
        elif self.size:
            self.bitmap |= 1 << (self.top - seq)

    def accept_new(self, seqs: list[int]) -> list[bool]:
        """After the ICV check of a burst: for each authenticated sequence number in order,
        whether it is new (then recorded) or a replay (two copies in one burst, or another
        receiver took it first). One step, so that with several receivers the test and the
        record cannot be split (RFC 4303 s. 3.4.3: the window is updated only for packets
        whose integrity check passed)."""
        out = []
        for seq in seqs:
            if self.fresh(seq):
                self.accept(seq)
                out.append(True)
            else:
                out.append(False)
        return out

    def __repr__(self) -> str:
        return f"<ReplayWindow top={self.top} size={self.size} esn={self.esn}>"


_WORDS = MAX_WINDOW // 64  # bitmap words per slot
_ROW = 1 + _WORDS  # top, then the bitmap (little-endian words: bit i = top - i)


class SharedWindows:
    """The replay windows of every SA slot in one anonymous shared mapping (MAP_SHARED,
    inherited across fork), for several inbound workers reading one socket: a packet of an
    SA may reach any of them, and the window must be one (RFC 4303 s. 3.4.3). Checks and
    updates happen under one process-shared lock, once per burst and SA."""

    def __init__(self, slots: int = 1024):
        self._map = mmap.mmap(-1, (slots + 1) * _ROW * 8)
        self.words = memoryview(self._map).cast("Q")
        self.raw = memoryview(self._map)
        self.lock = multiprocessing.get_context("fork").Lock()

    def reset(self, slot: int) -> None:
        """A new SA in ``slot``: an empty window (the daemon calls it before the workers
        build the SA, never a worker: a second worker's install must not empty a window the
        first one already uses)."""
        base = slot * _ROW
        with self.lock:
            for i in range(_ROW):
                self.words[base + i] = 0

    def window(self, slot: int, size: int, esn: bool) -> SharedReplayWindow:
        return SharedReplayWindow(self, slot, size, esn)


class SharedReplayWindow:
    """The interface of ReplayWindow over a SharedWindows row: `check` and `accept_new` load
    the row, decide with a private ReplayWindow and store it back, under the lock."""

    __slots__ = ("_shared", "_top_index", "_bits", "_nbytes", "_w", "esn", "size")

    def __init__(self, shared: SharedWindows, slot: int, size: int, esn: bool) -> None:
        self._w = ReplayWindow(size, esn)  # validates size; the scratch state
        self._shared = shared
        self._top_index = slot * _ROW
        self._nbytes = (size + 7) // 8
        start = (self._top_index + 1) * 8
        self._bits = shared.raw[start:start + self._nbytes]
        self.esn = esn
        self.size = size

    @property
    def top(self) -> int:
        """The highest authenticated number (one aligned 8-byte load: never torn); a hint for
        the in-order fast path, decided again under the lock in accept_new."""
        return self._shared.words[self._top_index]

    def _load(self) -> ReplayWindow:
        w = self._w
        w.top = self._shared.words[self._top_index]
        w.bitmap = int.from_bytes(self._bits, "little")
        return w

    def _store(self, w: ReplayWindow) -> None:
        if self._nbytes:  # size 0: no window, only the top (ESN inference)
            self._bits[:] = w.bitmap.to_bytes(self._nbytes, "little")
        self._shared.words[self._top_index] = w.top

    def check(self, seq_low: int) -> int | None:
        with self._shared.lock:
            return self._load().check(seq_low)

    def fresh(self, seq: int) -> bool:
        with self._shared.lock:
            return self._load().fresh(seq)

    def accept_new(self, seqs: list[int]) -> list[bool]:
        with self._shared.lock:
            w = self._load()
            out = w.accept_new(seqs)
            self._store(w)
        return out

    def __repr__(self) -> str:
        return f"<SharedReplayWindow top={self.top} size={self.size} esn={self.esn}>"
