"""What several outbound ESP workers share (esp_workers > 1), with real forked processes
racing on the shared memory, as the dataplane's workers do:

- an SA's outbound sequence counter (counters.SharedSequence): every number handed out once,
  each worker's numbers strictly increasing, the limit (2^32 - 1 without ESN) never passed;
- per-worker counter lanes summed, and lifetime events that fire once for all workers
  (CounterBlock.once).
"""

from __future__ import annotations

import multiprocessing
import random

from ocfpy.esp.counters import CounterBlock, F, Once
from ocfpy.esp.sad import SEQ_MAX_32, SEQ_MAX_64

FORK = multiprocessing.get_context("fork")


def _in_children(n: int, target, *args) -> list:
    """Run target(index, *args) in n forked processes at once; their return values."""
    results = FORK.Queue()
    start = FORK.Event()

    def child(i: int) -> None:
        start.wait()
        results.put((i, target(i, *args)))

    procs = [FORK.Process(target=child, args=(i,)) for i in range(n)]
    for p in procs:
        p.start()
    start.set()
    out = dict(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    return [out[i] for i in range(n)]


# -- the sequence counter ------------------------------------------------------------------

def _take_blocks(i: int, block: CounterBlock, slot: int, limit: int, wanted: int) -> list[int]:
    seqs = block.sequence(slot, limit)
    rng = random.Random(i)
    got: list[int] = []
    while len(got) < wanted:
        base, k = seqs.take(rng.randint(1, 16))
        if k == 0:
            break
        got.extend(range(base + 1, base + k + 1))
    return got


def test_sequence_numbers_unique_and_increasing_per_worker():
    block = CounterBlock(4, lanes=4)
    slot = block.allocate()
    per_worker = _in_children(4, _take_blocks, block, slot, SEQ_MAX_32, 5000)
    for got in per_worker:
        assert got == sorted(got) and len(set(got)) == len(got)  # strictly increasing
    everything = sorted(s for got in per_worker for s in got)
    # no number twice, none skipped, the first is 1 (RFC 4303 s. 3.3.3)
    assert everything == list(range(1, len(everything) + 1))
    assert block.sequence(slot, SEQ_MAX_32).last == len(everything)


def test_sequence_counter_never_cycles_across_workers():
    block = CounterBlock(4, lanes=3)
    slot = block.allocate()
    start = SEQ_MAX_32 - 1000
    block.shared[block.sequence(slot, SEQ_MAX_32).index] = start
    per_worker = _in_children(3, _take_blocks, block, slot, SEQ_MAX_32, 10**6)
    everything = sorted(s for got in per_worker for s in got)
    assert everything == list(range(start + 1, SEQ_MAX_32 + 1))  # up to 2^32 - 1, no wrap
    assert block.sequence(slot, SEQ_MAX_32).take(1) == (SEQ_MAX_32, 0)  # exhausted: rekey


def test_esn_counter_goes_past_2_to_the_32():
    block = CounterBlock(4, lanes=2)
    slot = block.allocate()
    seqs = block.sequence(slot, SEQ_MAX_64)
    block.shared[seqs.index] = SEQ_MAX_32 - 5
    assert seqs.take(16) == (SEQ_MAX_32 - 5, 16)
    assert seqs.last == SEQ_MAX_32 + 11  # the high half counts (RFC 4303 appendix A)


def test_a_new_sa_in_a_slot_starts_from_zero():
    block = CounterBlock(4, lanes=2)
    slot = block.allocate()
    block.sequence(slot, SEQ_MAX_32).take(100)
    block.lane(1)[slot * 10 + F.PACKETS_OUT] = 7
    block.release(slot)
    again = block.allocate()
    assert again == slot
    assert block.sequence(slot, SEQ_MAX_32).take(1) == (0, 1)
    assert block.sa_counters(slot).packets_out == 0


def _count_lane(i: int, block: CounterBlock, slot: int) -> bool:
    cells = block.lane(i)
    for _ in range(10000):
        cells[slot * 10 + F.PACKETS_OUT] += 1
        cells[slot * 10 + F.BYTES_OUT] += 100
    return block.once(slot, Once.OUT_SOFT)


def test_lanes_sum_and_events_fire_once():
    block = CounterBlock(4, lanes=4)
    slot = block.allocate()
    firsts = _in_children(4, _count_lane, block, slot)
    assert sum(firsts) == 1  # one soft event for the SA, whoever saw it
    assert block.totals(slot, F.PACKETS_OUT, F.BYTES_OUT) == (40000, 4_000_000)
    assert block.sa_counters(slot).packets_out == 40000
    assert [block.lane_counters(slot, i).packets_out for i in range(4)] == [10000] * 4
