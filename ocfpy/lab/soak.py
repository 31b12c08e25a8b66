"""The rekey soak (issue 18): traffic through a tunnel while its SAs are rekeyed again and
again, and what it takes to say that nothing was lost.

The traffic: a steady ping (50 per second by default) and one TCP stream whose SHA-256 the
receiver checks against the sender's. The rekeys: a callable per side and kind, called on a
schedule in three phases (side a alone, side b alone, both at once: simultaneous rekeys,
RFC 7296 2.8.1 collisions). The measures: pings sent and lost, the stream's bytes and digest,
TCP retransmissions on the sender (its namespace's /proc/net/snmp), and the memory of each
daemon and of each of its children (the ESP workers): resident, unique and proportional
(/proc/PID/smaps_rollup) every 10 s from the start, with the growth per 1,000 rekeys as the
least-squares slope over the samples after the first minute (a step of the allocator
settling moves a difference of two samples, it hardly moves a slope). With OCFPY_MEMTRACE
set (ocfpy/iked/memtrace.py, a debug hook) the traced daemons and their workers also write
tracemalloc snapshots after the first minute and at the end, and the result holds the
allocation sites that grew most between the two, per process.

Used by tests/net/test_rekey_soak.py, tests/interop/test_rekey_soak_charon.py and
scripts/soak.sh. Everything it starts is stopped by ``Soak.stop()``.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ocfpy.iked import memtrace

__all__ = ["RekeyDriver", "Soak", "SoakResult", "fit_slope", "process_memory", "rss_kb",
           "tcp_retransmits"]

TCP_PORT = 47018
# The receiver: reads the stream to its end, answers the byte count and the SHA-256.
_SERVER = r"""
import hashlib, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("listening", flush=True)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(65536)
    if not b:
        break
    h.update(b); n += len(b)
print(n, h.hexdigest(), flush=True)
"""
# The sender: a deterministic stream at a steady rate until told to stop (stdin closes).
_CLIENT = r"""
import hashlib, socket, sys, threading, time
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
rate = int(sys.argv[3]); h = hashlib.sha256(); n = 0; block = 4096; i = 0
start = time.monotonic()
while not stop.is_set():
    chunk = hashlib.sha256(i.to_bytes(8, "big")).digest() * (block // 32); i += 1
    c.sendall(chunk); h.update(chunk); n += len(chunk)
    ahead = n / rate - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
print(n, h.hexdigest(), flush=True)
"""


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError, ValueError):
        return sorted(int(t) for t in open(f"/proc/{pid}/task/{pid}/children").read().split())
    return []


def process_memory(pid: int) -> dict[str, tuple[int, dict[str, int]]]:
    """``pid`` and each of its children: label -> (pid, smaps_rollup in kB: Rss, Pss, Uss).
    The daemon is "daemon"; an ocfpy daemon's two ESP workers are "out" and "in" (forked in
    that order, so by ascending pid, docs/dataplanes.md); other children are "child-PID"."""
    kids = _children(pid)
    labels = ["out", "in"] if len(kids) == 2 else [f"child-{k}" for k in kids]
    out = {"daemon": (pid, memtrace.smaps_rollup(pid))}
    for label, k in zip(labels, kids, strict=True):
        out[label] = (k, memtrace.smaps_rollup(k))
    return {k: v for k, v in out.items() if v[1]}


def rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and its children (the ESP workers), in kB."""
    return sum(m.get("Rss", 0) for _, m in process_memory(pid).values())


def fit_slope(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares slope of y over x and its standard error; None with fewer than three
    points or no spread in x."""
    n = len(points)
    if n < 3:
        return None
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    resid = sum((y - my - slope * (x - mx)) ** 2 for x, y in points)
    return slope, (resid / (n - 2) / sxx) ** 0.5


def tcp_retransmits(netns: str) -> int:
    """RetransSegs of the namespace's TCP (RFC 4022 tcpRetransSegs)."""
    out = subprocess.run(["ip", "netns", "exec", netns, "cat", "/proc/net/snmp"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("RetransSegs")])


@dataclass
class SoakResult:
    seconds: float = 0.0
    pings_sent: int = 0
    pings_received: int = 0
    tcp_sent: tuple[int, str] = (0, "")
    tcp_received: tuple[int, str] = (0, "")
    retransmits: int = 0
    rekeys: Counter = field(default_factory=Counter)  # "a/child", "b/ike", ... requested
    rekey_times: list[float] = field(default_factory=list)  # seconds into the soak, each
    rekey_errors: list[str] = field(default_factory=list)
    settle: float = 60.0  # seconds: memory samples before this are the warm-up
    # who -> [(seconds, kB)]: resident memory of the daemon with its children, every sample
    memory_kb: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    # "who/process" (daemon, out, in) -> [(seconds, Rss, Pss, Uss)] in kB
    processes: dict[str, list[tuple[float, int, int, int]]] = field(default_factory=dict)
    memtrace: dict[str, list[str]] = field(default_factory=dict)  # "who/process" -> top growth
    memtrace_accounts: dict[str, list[dict]] = field(default_factory=dict)
    ping_output: str = ""

    @property
    def pings_lost(self) -> int:
        return self.pings_sent - self.pings_received

    @property
    def tcp_intact(self) -> bool:
        return self.tcp_sent[0] > 0 and self.tcp_sent == self.tcp_received

    def rekeys_by(self, t: float) -> int:
        """Rekeys requested (both sides, CHILD and IKE) in the first ``t`` seconds."""
        return sum(1 for x in self.rekey_times if x <= t)

    def settled(self, who: str) -> list[tuple[float, int]]:
        return [s for s in self.memory_kb.get(who, []) if s[0] >= self.settle]

    def memory_growth_kb(self, who: str) -> int:
        """kB gained between the first sample after the first minute and the last one."""
        samples = self.settled(who)
        return samples[-1][1] - samples[0][1] if len(samples) >= 2 else 0

    def slope(self, who: str, column: int = 1) -> tuple[float, float] | None:
        """kB per 1,000 rekeys after the first minute, fitted (least squares) over the
        samples against the rekeys requested by then, with its standard error. ``who`` is a
        daemon (resident memory with its workers) or "daemon/process" (column 1 Rss, 2 Pss,
        3 Uss)."""
        samples = (self.processes.get(who, []) if "/" in who else self.memory_kb.get(who, []))
        points = [(self.rekeys_by(s[0]) / 1000, s[column]) for s in samples
                  if s[0] >= self.settle]
        return fit_slope(points)

    def kb_per_1000_rekeys(self, who: str) -> float | None:
        fit = self.slope(who)
        return fit[0] if fit else None

    def window_slopes(self, who: str, span: float) -> list[float]:
        """The slope (kB per 1,000 rekeys) over every ``span`` seconds of settled samples,
        one window starting at each sample: how much a run of that length can read from
        the allocator's steps alone (the CI soak's bound is judged against it)."""
        samples = [s for s in self.memory_kb.get(who, []) if s[0] >= self.settle]
        out = []
        for i, first in enumerate(samples):
            if first[0] + span > samples[-1][0] + 1:
                break  # the run ends before this window would
            # a second of slack: the sampler's period drifts under load
            window = [s for s in samples[i:] if s[0] <= first[0] + span + 1]
            fit = fit_slope([(self.rekeys_by(t) / 1000, kb) for t, kb in window])
            if fit:
                out.append(fit[0])
        return out

    def save(self, path: str) -> None:
        data = {k: v for k, v in self.__dict__.items() if k != "ping_output"}
        data["rekeys"] = dict(self.rekeys)
        with open(path, "w") as f:
            json.dump(data, f)

    @classmethod
    def load(cls, path: str) -> SoakResult:
        with open(path) as f:
            data = json.load(f)
        r = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        r.rekeys = Counter(r.rekeys)
        r.tcp_sent, r.tcp_received = tuple(r.tcp_sent), tuple(r.tcp_received)
        r.memory_kb = {k: [tuple(s) for s in v] for k, v in r.memory_kb.items()}
        r.processes = {k: [tuple(s) for s in v] for k, v in r.processes.items()}
        return r

    def memory_report(self) -> str:
        """One line per process: Rss/Pss/Uss at the first settled sample and at the end,
        the fitted slope of each in kB per 1,000 rekeys (+- its standard error)."""
        lines = []
        for key, samples in self.processes.items():
            after = [s for s in samples if s[0] >= self.settle]
            if len(after) < 2:
                continue
            cols = []
            for i, name in ((1, "Rss"), (2, "Pss"), (3, "Uss")):
                fit = self.slope(key, i)
                fitted = f"{fit[0]:+.0f}+-{fit[1]:.0f}" if fit else "n/a"
                cols.append(f"{name} {after[0][i]}->{after[-1][i]} ({fitted})")
            lines.append(f"  {key}: " + ", ".join(cols))
        return (f"memory after {self.settle:.0f} s, kB (slope kB per 1,000 rekeys, "
                f"{self.rekeys_by(self.seconds + 60)} rekeys in all):\n" + "\n".join(lines))

    def summary(self) -> str:
        def fitted(who: str) -> str:
            fit = self.slope(who)
            return f"{fit[0]:+.0f}+-{fit[1]:.0f}" if fit else "n/a"

        mem = ", ".join(f"{who} {s[0][1]}->{s[-1][1]} kB ({fitted(who)} kB per 1,000 rekeys)"
                        for who in self.memory_kb if (s := self.settled(who)))
        return (f"{self.seconds:.0f} s: pings {self.pings_sent} sent, {self.pings_lost} lost; "
                f"TCP {self.tcp_sent[0]} bytes sent, {self.tcp_received[0]} received, "
                f"{'intact' if self.tcp_intact else 'NOT intact'}, {self.retransmits} "
                f"retransmitted segments; rekeys {dict(self.rekeys)}; memory {mem}")


class RekeyDriver(threading.Thread):
    """Calls ``rekey[(side, kind)]`` on a schedule: a CHILD_SA rekey every ``child_every``
    seconds and an IKE SA rekey every ``ike_every``, by side a in the first third of
    ``seconds``, side b in the second, and both sides at the same moment in the last."""

    def __init__(self, rekey: dict[tuple[str, str], Callable[[], object]], seconds: float, *,
                 child_every: float = 2.5, ike_every: float = 10.0,
                 result: SoakResult) -> None:
        super().__init__(daemon=True, name="soak-rekeys")
        self.rekey, self.seconds = rekey, seconds
        self.child_every, self.ike_every = child_every, ike_every
        self.result = result
        self.stop_event = threading.Event()
        self.started = time.monotonic()

    def _call(self, side: str, kind: str) -> None:
        try:
            self.rekey[(side, kind)]()
            self.result.rekeys[f"{side}/{kind}"] += 1
            self.result.rekey_times.append(time.monotonic() - self.started)
        except Exception as exc:  # noqa: BLE001 - counted and reported, the soak goes on
            self.result.rekey_errors.append(f"{side}/{kind}: {type(exc).__name__}: {exc}")

    def run(self) -> None:
        self.started = start = time.monotonic()
        next_child, next_ike = start + self.child_every, start + self.ike_every
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now - start >= self.seconds:
                return
            third = (now - start) / self.seconds * 3
            sides = ["a"] if third < 1 else ["b"] if third < 2 else ["a", "b"]
            kind = None
            if now >= next_ike:
                kind, next_ike = "ike", next_ike + self.ike_every
            elif now >= next_child:
                kind, next_child = "child", next_child + self.child_every
            if kind is None:
                self.stop_event.wait(0.05)
                continue
            threads = [threading.Thread(target=self._call, args=(s, kind)) for s in sides]
            for t in threads:  # both at once: the requests cross on the wire
                t.start()
            for t in threads:
                t.join(30)


class Soak:
    """Ping and a TCP stream from ``src_ns`` (address ``src``) to ``dst_ns`` (``dst``) for
    ``seconds``, with ``driver`` rekeying meanwhile; ``daemons`` maps a name to a pid whose
    memory (its own and each child's) is sampled every ``sample_every`` seconds; the samples
    after the first minute (or the first sixth of a shorter soak) are the settled ones.
    ``traced`` names the daemons (ocfpy's, started with OCFPY_MEMTRACE set) whose processes
    are asked for tracemalloc records (SIGUSR2) at the settle time and at the end."""

    def __init__(self, src_ns: str, src: str, dst_ns: str, dst: str, seconds: float, *,
                 rate: int = 50, tcp_rate: int = 200_000,
                 daemons: dict[str, int] | None = None, sample_every: float = 10.0,
                 traced: tuple[str, ...] = ()) -> None:
        self.src_ns, self.src, self.dst_ns, self.dst = src_ns, src, dst_ns, dst
        self.seconds, self.rate, self.tcp_rate = seconds, rate, tcp_rate
        self.daemons = daemons or {}
        self.sample_every = sample_every
        self.memtrace_dir = os.environ.get(memtrace.ENV, "")
        self.traced = traced if self.memtrace_dir else ()
        self.result = SoakResult(seconds=seconds, settle=min(60.0, seconds / 6))
        self.record = os.environ.get("OCFPY_SOAK_RECORD", "")  # a directory: the samples
        self._procs: list[subprocess.Popen] = []
        self._trace_pids: dict[str, int] = {}  # "who/process" -> pid signalled

    def sample(self, elapsed: float) -> None:
        r = self.result
        for who, pid in self.daemons.items():
            procs = process_memory(pid) if pid else {}
            if not procs:
                continue
            r.memory_kb.setdefault(who, []).append(
                (elapsed, sum(m.get("Rss", 0) for _, m in procs.values())))
            for label, (_, m) in procs.items():
                r.processes.setdefault(f"{who}/{label}", []).append(
                    (elapsed, m.get("Rss", 0), m.get("Pss", 0), m.get("Uss", 0)))

    def trace(self) -> None:
        """Ask each traced daemon and its workers for a memtrace record (SIGUSR2)."""
        for who in self.traced:
            for label, (pid, _) in process_memory(self.daemons[who]).items():
                self._trace_pids[f"{who}/{label}"] = pid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR2)

    def collect_traces(self, limit: int = 12) -> None:
        """Per traced process: the allocation sites that grew most between its first record
        and its last, and the accounts (smaps, mallinfo, traced bytes) of each record."""
        time.sleep(2)  # a record takes a moment (a snapshot of every traced block)
        for key, pid in self._trace_pids.items():
            def n(path: str) -> int:
                return int(path.rsplit("-", 1)[1].split(".")[0])

            snaps = sorted(glob.glob(os.path.join(self.memtrace_dir, f"{pid}-*.snap")), key=n)
            accounts = []
            for path in sorted(glob.glob(os.path.join(self.memtrace_dir, f"{pid}-*.json")),
                               key=n):
                with contextlib.suppress(OSError, ValueError), open(path) as f:
                    accounts.append(json.load(f))
            self.result.memtrace_accounts[key] = accounts
            if len(snaps) >= 2:
                self.result.memtrace[key] = memtrace.top_growth(snaps[0], snaps[-1], limit)

    def _popen(self, ns: str, argv: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, **kw)
        self._procs.append(proc)
        return proc

    def run(self, driver: RekeyDriver | None = None) -> SoakResult:
        r = self.result
        count = int(self.seconds * self.rate)
        server = self._popen(self.dst_ns, [sys.executable, "-c", _SERVER, self.dst,
                                           str(TCP_PORT)])
        assert server.stdout is not None
        if server.stdout.readline().strip() != "listening":
            raise RuntimeError("the soak's TCP receiver did not start")
        retrans0 = tcp_retransmits(self.src_ns)
        client = self._popen(self.src_ns, [sys.executable, "-c", _CLIENT, self.dst,
                                           str(TCP_PORT), str(self.tcp_rate)],
                             stdin=subprocess.PIPE)
        # -W: a reply later than 2 s counts as lost (ping's own default is far longer)
        ping = self._popen(self.src_ns, ["ping", "-q", "-c", str(count),
                                         "-i", f"{1 / self.rate:.3f}", "-W", "2",
                                         "-I", self.src, self.dst])
        if driver is not None:
            driver.start()
        start = time.monotonic()
        last_sample, traced, interrupted = -self.sample_every, False, False
        while ping.poll() is None:
            elapsed = time.monotonic() - start
            if elapsed - last_sample >= self.sample_every:
                last_sample = elapsed
                self.sample(round(elapsed, 1))
            if not traced and elapsed >= r.settle:
                traced = True
                self.trace()
            time.sleep(0.5)
            if elapsed > self.seconds * 1.1 + 60 and not interrupted:
                # ping lags its interval on a loaded machine (a 1,500 s run had not sent its
                # 75,000 by 1,560 s, and a kill lost its summary): SIGINT makes it stop and
                # print what it sent and received (a ping in flight then counts as lost)
                interrupted = True
                ping.send_signal(signal.SIGINT)
        if driver is not None:
            driver.stop_event.set()
            driver.join(30)
        self.sample(round(time.monotonic() - start, 1))
        if self.traced:
            self.trace()
            self.collect_traces()
        r.ping_output = ping.communicate(timeout=10)[0]
        m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", r.ping_output)
        if m:
            r.pings_sent, r.pings_received = int(m.group(1)), int(m.group(2))
        out, _ = client.communicate(input="", timeout=60)
        r.tcp_sent = _sized_digest(out)
        out, _ = server.communicate(timeout=60)
        r.tcp_received = _sized_digest(out)
        r.retransmits = tcp_retransmits(self.src_ns) - retrans0
        if self.record:
            os.makedirs(self.record, exist_ok=True)
            path = os.path.join(self.record, f"soak-{'-'.join(self.daemons)}-{os.getpid()}.json")
            r.save(path)
        return r

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(Exception):
                    proc.communicate(timeout=5)


def _sized_digest(out: str) -> tuple[int, str]:
    for line in reversed(out.strip().splitlines()):
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            return int(parts[0]), parts[1]
    return 0, out.strip()[-200:]


def main(argv: list[str] | None = None) -> int:
    """``python -m ocfpy.lab.soak RECORD.json [--window S]``: the memory report of a recorded
    soak (OCFPY_SOAK_RECORD=DIR), and the spread of the slope over windows of S seconds."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m ocfpy.lab.soak", description=main.__doc__)
    ap.add_argument("record")
    ap.add_argument("--window", type=float, default=0.0,
                    help="also fit the slope over every window of this many seconds")
    args = ap.parse_args(argv)
    r = SoakResult.load(args.record)
    print(r.summary())
    print(r.memory_report())
    if args.window:
        for who in r.memory_kb:
            w = sorted(r.window_slopes(who, args.window))
            if w:
                print(f"{who}: {len(w)} windows of {args.window:.0f} s: slope min {w[0]:+.0f}, "
                      f"median {w[len(w) // 2]:+.0f}, max {w[-1]:+.0f} kB per 1,000 rekeys")
    return 0


if __name__ == "__main__":
    sys.exit(main())
