"""The memory debug hook (ocfpy/iked/memtrace.py): off by default, and when on, a SIGUSR2
to a process (the daemon, or a worker it forked) writes a record whose snapshots, diffed,
name the line that allocated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc

from ocfpy.iked import memtrace

_PROGRAM = textwrap.dedent("""
    import os, signal, sys
    from ocfpy.iked import memtrace
    assert memtrace.install()
    hoard = []
    def grow(n):
        for _ in range(n):
            hoard.append(bytearray(1000))  # GROWS
    grow(10)
    os.kill(os.getpid(), signal.SIGUSR2)
    pid = os.fork()
    if pid == 0:  # a worker forked after install: inherits tracing and the handler
        grow(3000)
        os.kill(os.getpid(), signal.SIGUSR2)
        os._exit(0)
    os.waitpid(pid, 0)
    grow(2000)
    os.kill(os.getpid(), signal.SIGUSR2)
    print(os.getpid(), pid)
""")


def test_off_without_the_environment_variable():
    assert memtrace.install({}) is False
    assert not tracemalloc.is_tracing()


def test_records_name_the_growing_line_in_the_process_and_its_fork(tmp_path):
    env = {**os.environ, memtrace.ENV: str(tmp_path), memtrace.ENV + "_TRIM": "1"}
    out = subprocess.run([sys.executable, "-c", _PROGRAM], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    parent, child = out.split()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{parent}-1.snap", f"{parent}-1.json", f"{parent}-2.snap", f"{parent}-2.json",
         f"{child}-2.snap", f"{child}-2.json"])
    top = memtrace.top_growth(str(tmp_path / f"{parent}-1.snap"),
                              str(tmp_path / f"{parent}-2.snap"), limit=1)
    # two blocks a bytearray (the object, its buffer), on the line marked GROWS
    assert top[0].endswith("<string>:8") and "+4000 blocks" in top[0], top
    # the child's first record is its own (numbered on from the parent's count)
    top = memtrace.top_growth(str(tmp_path / f"{parent}-1.snap"),
                              str(tmp_path / f"{child}-2.snap"), limit=1)
    assert top[0].endswith("<string>:8") and "+6000 blocks" in top[0], top
    rec = json.loads((tmp_path / f"{parent}-2.json").read_text())
    assert rec["pid"] == int(parent)
    assert rec["smaps"]["Rss"] > 0 and rec["smaps_after_trim"]["Uss"] > 0
    assert rec["traced"]["current"] > 2000 * 1000
    assert rec["mallinfo"] == {} or rec["mallinfo"]["uordblks"] > 0


def test_the_daemon_cli_installs_it_only_when_asked():
    src = open(os.path.join(os.path.dirname(memtrace.__file__), "..", "cli",
                            "iked.py")).read()
    assert "memtrace.install()" in src
    assert signal.getsignal(signal.SIGUSR2) is not memtrace._dump
