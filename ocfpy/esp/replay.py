"""Anti-replay (RFC 4303 s. 3.4.3) with extended sequence numbers (RFC 4303 appendix A).

Two steps, as strongSwan's libipsec splits them (esp_context.c verify_seqno /
set_authenticated_seqno): `check` decides, without changing anything, whether a sequence
number may be new and returns the full 64-bit value (inferring the high half with ESN);
`accept` moves the window, and the caller calls it only after the ICV verified. A forged
packet therefore can never move the window.

The window is a Python int used as a bitmap: bit i stands for sequence number top - i.
"""

from __future__ import annotations

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

