"""A debug hook for finding where memory goes (issue 18's soak): Python allocations by line
and the C allocator's own account, written on demand by the daemon and its ESP workers.

Off by default: nothing happens unless the environment names a directory in
``OCFPY_MEMTRACE``. Then ``ocfpy iked`` calls :func:`install` before its loop starts, which
starts tracemalloc (``OCFPY_MEMTRACE_FRAMES`` frames per allocation, 1 by default) and makes
SIGUSR2 write a record. The ESP workers are forked later (userspace dataplane): they inherit
the tracing and the handler, so ``kill -USR2 <pid>`` works on each process alone. Each
record is two files in the directory, ``<pid>-<n>.snap`` (``tracemalloc.Snapshot.dump``:
diff two with :func:`top_growth`) and ``<pid>-<n>.json`` (:func:`account`: the process's
name, resident / unique / proportional memory from smaps_rollup, glibc's mallinfo2, what
tracemalloc traces). With ``OCFPY_MEMTRACE_TRIM=1`` the record is taken after
``malloc_trim(0)``, and the JSON holds the resident memory before and after: what the
allocator held free but had not returned tells fragmentation from live objects.

Tracing costs time on every allocation (the workers' packet loops slow down): this is for
debugging runs, never for production or benchmarks.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import multiprocessing
import os
import signal
import tracemalloc

__all__ = ["ENV", "account", "install", "smaps_rollup", "top_growth"]

ENV = "OCFPY_MEMTRACE"
_state = {"dir": "", "n": 0, "trim": False}


class _MallInfo2(ctypes.Structure):  # <malloc.h>, glibc 2.33+
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _libc():
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def mallinfo() -> dict[str, int]:
    """glibc's malloc statistics in bytes (all arenas): ``uordblks`` in use, ``fordblks`` free
    inside the heap, ``hblkhd`` in mmap'd blocks; {} where glibc lacks mallinfo2."""
    libc = _libc()
    fn = getattr(libc, "mallinfo2", None) if libc is not None else None
    if fn is None:
        return {}
    fn.restype = _MallInfo2
    info = fn()
    return {name: int(getattr(info, name)) for name, _ in _MallInfo2._fields_}


def smaps_rollup(pid: int | str = "self") -> dict[str, int]:
    """/proc/PID/smaps_rollup in kB: Rss, Pss, and Uss (Private_Clean + Private_Dirty, the
    memory that would be freed if the process ended); {} when the process is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        return {}
    out["Uss"] = out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)
    return {k: out[k] for k in ("Rss", "Pss", "Uss", "Anonymous") if k in out}


def account(trim: bool = False) -> dict:
    """This process's memory as the allocator, the kernel and tracemalloc see it."""
    rec: dict = {"pid": os.getpid(), "name": multiprocessing.current_process().name,
                 "smaps": smaps_rollup()}
    if trim:
        libc = _libc()
        if libc is not None:
            libc.malloc_trim(0)
        rec["smaps_after_trim"] = smaps_rollup()
    rec["mallinfo"] = mallinfo()
    if tracemalloc.is_tracing():
        current, peak = tracemalloc.get_traced_memory()
        rec["traced"] = {"current": current, "peak": peak,
                         "overhead": tracemalloc.get_tracemalloc_memory()}
    return rec


def _dump(_signum=None, _frame=None) -> None:
    """The SIGUSR2 handler: one record, two files. Errors are swallowed (a debug aid must not
    take a daemon down) but leave a .err file saying what failed."""
    _state["n"] += 1
    base = os.path.join(_state["dir"], f"{os.getpid()}-{_state['n']}")
    try:
        rec = account(_state["trim"])
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(base + ".snap")
        with open(base + ".json", "w") as f:
            json.dump(rec, f)
    except Exception as exc:  # noqa: BLE001 - reported in the directory, never raised
        with contextlib.suppress(OSError), open(base + ".err", "w") as f:
            f.write(f"{type(exc).__name__}: {exc}\n")


def install(environ=os.environ) -> bool:
    """Turn the hook on when ``OCFPY_MEMTRACE`` names a directory (created if missing);
    True when it did. Call it in the main thread, before any worker is forked."""
    directory = environ.get(ENV, "")
    if not directory:
        return False
    os.makedirs(directory, exist_ok=True)
    frames = int(environ.get(ENV + "_FRAMES", "1") or 1)
    _state.update(dir=directory, n=0, trim=environ.get(ENV + "_TRIM", "") == "1")
    if not tracemalloc.is_tracing():
        tracemalloc.start(frames)
    signal.signal(signal.SIGUSR2, _dump)
    return True


def top_growth(before: str, after: str, limit: int = 15, key: str = "lineno") -> list[str]:
    """The ``limit`` allocation sites (by ``key``: lineno, filename, traceback) that grew
    most between two .snap files, largest first, one line each: size and count deltas."""
    old = tracemalloc.Snapshot.load(before)
    new = tracemalloc.Snapshot.load(after)
    stats = new.compare_to(old, key)
    return [f"{s.size_diff / 1024:+.1f} kB {s.count_diff:+d} blocks "
            f"({s.size / 1024:.1f} kB now): {s.traceback}" for s in stats[:limit]]
