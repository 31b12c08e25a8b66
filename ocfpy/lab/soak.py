"""The rekey soak (issue 18): traffic through a tunnel while its SAs are rekeyed again and
again, and what it takes to say that nothing was lost.

The traffic: a steady ping (50 per second by default) and one TCP stream whose SHA-256 the
receiver checks against the sender's. The rekeys: a callable per side and kind, called on a
schedule in three phases (side a alone, side b alone, both at once: simultaneous rekeys,
RFC 7296 2.8.1 collisions). The measures: pings sent and lost, the stream's bytes and digest,
TCP retransmissions on the sender (its namespace's /proc/net/snmp), and the resident memory
of a daemon and its children (the ESP workers) after the first minute and at the end.

Used by tests/net/test_rekey_soak.py, tests/interop/test_rekey_soak_charon.py and
scripts/soak.sh. Everything it starts is stopped by ``Soak.stop()``.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["RekeyDriver", "Soak", "SoakResult", "rss_kb", "tcp_retransmits"]

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


def rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and its children (the ESP workers), in kB."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in open(f"/proc/{pid}/task/{pid}/children").read().split():
            pids.append(int(task))
    for p in pids:
        with contextlib.suppress(OSError):
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


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
    memory_kb: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    ping_output: str = ""

    @property
    def pings_lost(self) -> int:
        return self.pings_sent - self.pings_received

    @property
    def tcp_intact(self) -> bool:
        return self.tcp_sent[0] > 0 and self.tcp_sent == self.tcp_received

    def memory_growth_kb(self, who: str) -> int:
        """kB gained between the first sample after the first minute and the last one."""
        samples = self.memory_kb.get(who, [])
        return samples[-1][1] - samples[0][1] if len(samples) >= 2 else 0

    def kb_per_1000_rekeys(self, who: str) -> float | None:
        """Memory growth per 1,000 rekeys (both sides' requests, CHILD and IKE) between the
        first and the last sample; None when no rekey fell between them."""
        samples = self.memory_kb.get(who, [])
        if len(samples) < 2:
            return None
        n = sum(1 for t in self.rekey_times if samples[0][0] <= t <= samples[-1][0])
        return self.memory_growth_kb(who) / n * 1000 if n else None

    def summary(self) -> str:
        mem = ", ".join(f"{who} {s[0][1]}->{s[-1][1]} kB ({self.kb_per_1000_rekeys(who) or 0:.0f}"
                        " kB per 1,000 rekeys)" for who, s in self.memory_kb.items() if s)
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
    memory (with its children) is sampled every 10 s after the first minute (or after the
    first sixth of a shorter soak)."""

    def __init__(self, src_ns: str, src: str, dst_ns: str, dst: str, seconds: float, *,
                 rate: int = 50, tcp_rate: int = 200_000,
                 daemons: dict[str, int] | None = None) -> None:
        self.src_ns, self.src, self.dst_ns, self.dst = src_ns, src, dst_ns, dst
        self.seconds, self.rate, self.tcp_rate = seconds, rate, tcp_rate
        self.daemons = daemons or {}
        self.result = SoakResult(seconds=seconds)
        self._procs: list[subprocess.Popen] = []

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
        settle = min(60.0, self.seconds / 6)
        while ping.poll() is None:
            elapsed = time.monotonic() - start
            if elapsed >= settle:
                for who, pid in self.daemons.items():
                    samples = r.memory_kb.setdefault(who, [])
                    if not samples or elapsed - samples[-1][0] >= 10:
                        samples.append((round(elapsed, 1), rss_kb(pid)))
            time.sleep(0.5)
            if elapsed > self.seconds + 60:
                ping.kill()
        if driver is not None:
            driver.stop_event.set()
            driver.join(30)
        for who, pid in self.daemons.items():
            r.memory_kb.setdefault(who, []).append((round(time.monotonic() - start, 1),
                                                    rss_kb(pid)))
        r.ping_output = ping.communicate(timeout=10)[0]
        m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", r.ping_output)
        if m:
            r.pings_sent, r.pings_received = int(m.group(1)), int(m.group(2))
        out, _ = client.communicate(input="", timeout=60)
        r.tcp_sent = _sized_digest(out)
        out, _ = server.communicate(timeout=60)
        r.tcp_received = _sized_digest(out)
        r.retransmits = tcp_retransmits(self.src_ns) - retrans0
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
