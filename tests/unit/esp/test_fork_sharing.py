"""The ESP workers share the daemon's heap copy-on-write (docs/performance.md, rekey soak):
the daemon's objects are frozen (gc.freeze) before a worker is forked, so that no full
collection, in the worker or in the daemon, writes to those pages and copies them."""

from __future__ import annotations

import gc
import os

from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.esp.dataplane.userspace import UserspaceDataplane
from ocfpy.esp.worker import send_msg


def _uss_kb() -> int:
    d = {}
    for line in open("/proc/self/smaps_rollup"):
        p = line.split()
        if len(p) == 3:
            d[p[0].rstrip(":")] = int(p[1])
    return d["Private_Clean"] + d["Private_Dirty"]


def _copied_by_a_collection(freeze: bool) -> int:
    """kB a forked child makes private by one full collection over an inherited heap."""
    heap = [{"k": i, "v": [i]} for i in range(100_000)]  # noqa: F841 - tracked containers
    if freeze:
        gc.freeze()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        before = _uss_kb()
        gc.collect()
        os.write(w, str(_uss_kb() - before).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    out = int(os.read(r, 64))
    os.close(r)
    gc.unfreeze()
    return out


def test_a_frozen_heap_is_not_copied_by_a_collection_in_the_child():
    copied, frozen = _copied_by_a_collection(False), _copied_by_a_collection(True)
    assert copied > 4000, copied  # the mechanism: a full collection copies the heap
    assert frozen < copied / 8, (frozen, copied)


def test_the_dataplane_freezes_the_heap_before_forking_a_worker():
    gc.unfreeze()
    dp = UserspaceDataplane(Dispatcher(), max_sas=4)
    tun_r, tun_w = os.pipe()  # the outbound worker reads its "TUN": nothing comes
    dp._tun_fds = [tun_r]
    try:
        dp._spawn("out")
        assert gc.get_freeze_count() > 0
        proc, ctrl = dp._workers["out"]
        send_msg(ctrl, ("stop",))
        proc.join(10)
        assert proc.exitcode == 0
    finally:
        gc.unfreeze()
        for fd in (tun_r, tun_w):
            os.close(fd)
        for _, ctrl in dp._workers.values():
            ctrl.close()
        dp._workers.clear()
