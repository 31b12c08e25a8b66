"""Anti-replay window (RFC 4303 s. 3.4.3) and ESN inference (RFC 4303 appendix A)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocfpy.esp.replay import ReplayWindow


def _receive(w: ReplayWindow, seq_low: int) -> int | None:
    full = w.check(seq_low)
    if full is not None:
        w.accept(full)
    return full


def test_replayed_too_old_and_reordered_inside_window():
    w = ReplayWindow(64)
    assert _receive(w, 0) is None  # 0 is never valid
    for s in (1, 2, 3, 10):
        assert _receive(w, s) == s
    assert _receive(w, 3) is None  # replayed
    assert _receive(w, 5) == 5  # reordered, inside the window, new
    assert _receive(w, 5) is None
    assert _receive(w, 200) == 200
    assert _receive(w, 200 - 64) is None  # just outside: too old
    assert _receive(w, 200 - 63) == 200 - 63  # the bottom edge is still inside
    assert _receive(w, 150) == 150


def test_check_does_not_change_state():
    """A packet that fails its ICV never moves the window (check without accept)."""
    w = ReplayWindow(32)
    _receive(w, 100)
    assert w.check(5000) == 5000
    assert w.top == 100  # nothing moved
    assert _receive(w, 90) == 90


def test_large_jump_clears_the_bitmap():
    w = ReplayWindow(128)
    for s in range(1, 129):
        _receive(w, s)
    _receive(w, 10_000)
    assert w.check(10_000 - 5) == 10_000 - 5


def test_window_size_limits():
    ReplayWindow(4096)
    with pytest.raises(ValueError, match="4096"):
        ReplayWindow(4097)
    off = ReplayWindow(0)
    assert _receive(off, 5) == 5 and _receive(off, 5) == 5  # disabled: accepts replays


def test_esn_wrap_infers_the_high_half():
    w = ReplayWindow(64, esn=True)
    w.accept(0xFFFFFFF0)
    # just past the wrap: low value below the window bottom -> next subspace
    assert w.check(0x00000005) == (1 << 32) | 5
    # late packets from before the wrap stay in the old subspace
    assert w.check(0xFFFFFFE0) == 0xFFFFFFE0
    assert _receive(w, 0x00000005) == (1 << 32) | 5
    # the window now spans both subspaces (case B of appendix A)
    assert w.check(0xFFFFFFF8) == 0xFFFFFFF8
    assert _receive(w, 0xFFFFFFF0) is None  # replay across the wrap
    assert w.check(0x00000003) == (1 << 32) | 3


def test_esn_deep_into_second_subspace():
    w = ReplayWindow(128, esn=True)
    w.accept((3 << 32) | 1000)
    assert w.check(2000) == (3 << 32) | 2000
    assert w.check(1000 - 100) == (3 << 32) | 900
    # below the window's bottom the RFC assumes the next subspace; the ICV then decides
    assert w.check(100) == (4 << 32) | 100


def test_non_esn_has_no_high_half():
    w = ReplayWindow(64, esn=False)
    w.accept(0xFFFFFFF0)
    assert w.check(5) is None  # too old; without ESN there is nothing after 2^32 - 1


@given(st.lists(st.integers(min_value=1, max_value=3000), max_size=300),
       st.sampled_from([1, 32, 64, 128, 1024]))
def test_matches_a_set_model(seqs, size):
    """Against the definition: accept iff unseen and > top - size."""
    w = ReplayWindow(size)
    seen: set[int] = set()
    top = 0
    for s in seqs:
        expect = s not in seen and s > top - size
        assert (_receive(w, s) is not None) == expect
        if expect:
            seen.add(s)
            top = max(top, s)


def test_esn_random_reordering_across_several_wraps():
    rng = random.Random(4303)
    w = ReplayWindow(256, esn=True)
    base = (1 << 32) - 3000
    for n in range(0, 20000, 50):
        block = list(range(base + n, base + n + 50))
        rng.shuffle(block)  # reordering within 50 < window
        for seq in block:
            assert _receive(w, seq & 0xFFFFFFFF) == seq
