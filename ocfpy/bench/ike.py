"""IKE establishment rate and memory per SA: ocfpy's daemon against strongSwan's charon.

Four pairings, one after the other in the same run, each between two fresh network
namespaces (``<prefix>-moon`` initiates, ``<prefix>-sun`` responds), PSK, x25519,
aes128gcm16 for IKE and ESP:

- ocfpy -> ocfpy: two ``ocfpy iked`` daemons (no dataplane: IKE is what is measured);
- charon -> charon: :func:`ocfpy.bench.strongswan.ike_establishment_rate`;
- ocfpy -> charon and charon -> ocfpy: the mixed pairs, which show which side is slow.

Each pairing measures a burst of ``n`` IKE_SA + CHILD_SA establishments fired at once
(concurrent rate: first request to last SA up) and ``sequential`` ones, one after the other
(the latency of one, control round trip included). Memory is the responder's RSS growth per
IKE_SA + CHILD_SA with ``memory`` of them up, for ocfpy and for charon.

Every initiation uses its own connection (a distinct initiator identity), so no daemon can
reuse an IKE_SA; the responder accepts any identity with the one PSK.

``auth`` other than "psk" (``ecdsa-p256``, ``rsa-3072``, ``ed25519``, any ocfpy.lab.pki key
kind) authenticates both sides with certificates instead (RFC 7296 3.8, RFC 7427 method 14:
ECDSA with SHA-256, RSA-PSS with SHA-256, Ed25519), one root CA of that kind and one
end-entity certificate per side, so every IKE_AUTH pays what a site-to-site gateway pays:
one signature made, the peer's CERT parsed, its chain validated to the root and its
signature verified, per side. The initiator's connections then share one identity (the one
its certificate names); reuse is still impossible: ocfpy reuses per connection, and charon
runs with reuse_ikesa = no (its IKE_SA reuse compares the peer config, not its name).
"""

from __future__ import annotations

import contextlib
import logging
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ocfpy.bench import strongswan
from ocfpy.crypto.errors import OcfError
from ocfpy.lab.iked_runner import IkedRunner
from ocfpy.lab.iked_toml import config_toml, connection_table, daemon_table, secret_table
from ocfpy.lab.netlab import Namespace, moon_and_sun

log = logging.getLogger(__name__)

IKE_PROPOSAL = "aes128gcm16-prfsha256-x25519"
ESP_PROPOSAL = "aes128gcm16"
PSK = strongswan.PSK
BATCH = 500  # initiations per burst while filling the memory test (a bounded half-open set)

Step = Callable[[str], None]


class IkeBenchError(OcfError, RuntimeError):
    """A pairing failed in a way that makes its figure meaningless (the message says why)."""


@dataclass
class PairResult:
    initiator: str  # "ocfpy" or "charon"
    responder: str
    n: int  # concurrent establishments asked for
    established: int  # IKE_SA + CHILD_SA that came up in time
    seconds: float  # first request to last SA up
    rate_per_s: float
    sequential_ms: float  # median of one-at-a-time establishments
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.initiator} -> {self.responder}"


@dataclass
class MemoryResult:
    implementation: str
    sas: int  # IKE_SA + CHILD_SA up when the RSS was read
    kb_per_sa: float  # responder RSS growth per SA, in kB (1000 bytes, as charon's anchor)
    rss_before_kb: float
    rss_after_kb: float
    fill_per_s: float
    notes: list[str] = field(default_factory=list)


@dataclass
class IkeReport:
    auth: str  # "psk" or the certificates' key kind (ocfpy.lab.pki)
    pairs: list[PairResult]
    memory: list[MemoryResult]
    ratios: dict[str, float]
    targets: dict[str, bool]
    skipped: dict[str, str]
    profile: list[dict[str, Any]]
    load_average: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- one ocfpy daemon ---------------------------------------------------------------------

class Auth:
    """How both sides authenticate in a run: "psk", or certificates of one key kind made once
    per run (a root CA and an end-entity certificate per side, ocfpy.lab.pki) and written
    for each daemon as swanctl's layout beside its configuration, or loaded into charon over
    vici (load-cert, load-key)."""

    def __init__(self, kind: str, prefix: str) -> None:
        self.kind = kind
        self.prefix = prefix
        self.pubkey = kind != "psk"
        if self.pubkey:
            from ocfpy.lab import pki

            if kind not in pki.KINDS:
                raise IkeBenchError(f"--auth {kind}: one of psk, {', '.join(pki.KINDS)}")
            self.root = pki.issue(f"{prefix} bench root", kind=kind, ca=True)
            self.certs = {"sun": pki.issue(responder_id(prefix), self.root, kind=kind),
                          "moon": pki.issue(self.initiator_id("c0"), self.root, kind=kind)}

    @property
    def label(self) -> str:
        return "PSK" if not self.pubkey else f"{self.kind} certificates"

    def initiator_id(self, name: str) -> str:
        """PSK: one identity per connection; certificates: the one the initiator's names."""
        return initiator_id(name if not self.pubkey else "ini", self.prefix)

    # -- ocfpy ----------------------------------------------------------------------------
    def ocfpy_side(self, role: str, folder: Path) -> tuple[list[dict], dict[str, Any]]:
        """([secret tables], connection_table keywords) for ``role`` ("sun"/"moon"); with
        certificates, x509/, x509ca/ and private/ are written into ``folder`` first."""
        if not self.pubkey:
            return [secret_table("ike", PSK)], {}
        from ocfpy.lab import pki

        pki.write_layout(str(folder), own=self.certs[role], cas=[self.root], name=role)
        return [], {"auth": ("pubkey", "pubkey"), "certs": [f"{role}.pem"]}

    # -- charon ---------------------------------------------------------------------------
    def charon_settings(self) -> dict[str, Any]:
        if not self.pubkey:
            return strongswan._RATE_SETTINGS
        # rsa_pss: charon signs RSA with PSS under RFC 7427, as ocfpy does, so both pay the
        # same signature; reuse_ikesa: see the module's docstring
        return {**strongswan._RATE_SETTINGS, "reuse_ikesa": False, "rsa_pss": True}

    def charon_load(self, c: strongswan.Charon, role: str) -> None:
        if not self.pubkey:
            c.load_psk(PSK, [responder_id(self.prefix)])
            return
        cert = self.certs[role]
        c.vici.load_cert({"type": "X509", "flag": "CA", "data": self.root.pem})
        c.vici.load_cert({"type": "X509", "flag": "NONE", "data": cert.pem})
        c.vici.load_key({"type": "any", "data": cert.key_pem()})

    def charon_conn(self, **kw: Any) -> dict[str, Any]:
        body = strongswan.psk_connection(**kw)
        if self.pubkey:  # charon finds the certificate (and its key) by the local identity
            body["local"]["auth"] = body["remote"]["auth"] = "pubkey"
        return body


def _daemon(me: Namespace) -> dict:
    """No cookies (a rate test must not pay the round trip a flood defence would want); a
    half-open timeout that outlives a burst on a busy machine. The flood caps (issue 13:
    half-open SAs in all and per address, the IKE_SA_INIT rate that turns cookies on) are
    off as charon's are in strongswan._RATE_SETTINGS: one initiator address firing a burst
    is what they exist to slow down (10 half-open per address held a burst of 50 to 10 at a
    time, the rest waiting for a retransmission), and defences are not what is measured."""
    return daemon_table(listen=[me.outer], cookie_threshold=1000000, half_open_timeout="120s",
                        half_open_limit=0, half_open_limit_per_ip=0, init_rate_threshold=0)


def responder_config(me: Namespace, peer: Namespace, local_id: str,
                     auth: Auth | None = None, folder: Path | None = None) -> str:
    """Answers any identity that knows the PSK (or holds a certificate of the root), one
    connection."""
    auth = auth or Auth("psk", "")
    secrets, kw = auth.ocfpy_side("sun", folder or Path("."))
    return config_toml(
        _daemon(me), *secrets,
        connection_table("r", local_addr=me.outer, remote_addr=peer.outer, local_id=local_id,
                         remote_id=None, proposals=[IKE_PROPOSAL], esp_proposals=[ESP_PROPOSAL],
                         children={"net": ([me.inner_net], [peer.inner_net])}, **kw))


def initiator_config(me: Namespace, peer: Namespace, remote_id: str, names: list[str],
                     prefix: str, auth: Auth | None = None, folder: Path | None = None) -> str:
    """One connection per IKE_SA it will hold (c0, c1, ...), each with its own identity."""
    auth = auth or Auth("psk", prefix)
    secrets, kw = auth.ocfpy_side("moon", folder or Path("."))
    return config_toml(
        _daemon(me), *secrets,
        *(connection_table(name, local_addr=me.outer, remote_addr=peer.outer,
                           local_id=auth.initiator_id(name), remote_id=remote_id,
                           proposals=[IKE_PROPOSAL], esp_proposals=[ESP_PROPOSAL],
                           children={"net": ([me.inner_net], [peer.inner_net])},
                           retransmit={"timeout": 3.0, "tries": 4, "base": 1.5}, **kw)
          for name in names))


def initiator_id(name: str, prefix: str) -> str:
    return f"{name}.moon.{prefix}.example"


def responder_id(prefix: str) -> str:
    return f"sun.{prefix}.example"


class Iked(IkedRunner):
    """``ocfpy iked`` in ``host``'s namespace (ocfpy.lab.iked_runner), reached over its control
    socket; warnings only (per-message debug logging would be what we measure)."""

    def __init__(self, host: Namespace, workdir: Path, name: str) -> None:
        super().__init__(host.name, workdir, name, verbosity="", error=IkeBenchError)
        self.host = host
        self.profile_path: Path | None = None

    def start(self, config_text: str, *extra_args: str, timeout: float = 120.0,
              profile: Path | None = None) -> Iked:
        python = None
        if profile is not None:
            # cProfile writes its file when the daemon returns from main after SIGTERM.
            self.profile_path = profile
            python = [sys.executable, "-m", "cProfile", "-o", str(profile)]
        super().start(config_text, *extra_args, timeout=timeout, python=python)
        return self

    def call(self, cmd: str, timeout: float = 60.0, **params: Any) -> Any:
        return super().call(cmd, timeout=timeout, **params)

    def established(self) -> int:
        """IKE_SAs this daemon has established so far (a counter: listing 10,000 SAs over
        the control socket would measure the listing); callers take differences."""
        return int(self.call("stats")["engine"].get("ike_established", 0))

    def stop(self, timeout: float = 10.0) -> int | None:
        return super().stop(timeout)


def rss_kb(pid: int) -> float:
    """Resident set size in kB (1000 bytes: charon's figures are quoted that way)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1.024
    raise IkeBenchError(f"no VmRSS for pid {pid}")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.1) -> float:
    """perf_counter() when ``predicate`` first held; IkeBenchError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise IkeBenchError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# -- the pairings -------------------------------------------------------------------------

def _ocfpy_sequential(ini: Iked, name: str, count: int) -> list[float]:
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        r = ini.call("initiate", name=name, wait=10)
        out.append((time.perf_counter() - t0) * 1e3)
        if r.get("state") != "established" or r.get("reused"):
            raise IkeBenchError(f"sequential initiation did not establish a new SA: {r}")
        ini.call("terminate", id=r["ike_id"])
    return out


def _ocfpy_burst(ini: Iked, names: list[str], count_on: Callable[[], int],
                 timeout: float) -> tuple[int, float]:
    """Initiate one IKE_SA per name without waiting; (established, seconds)."""
    from ocfpy.iked.control import ControlClient

    base = count_on()
    t0 = time.perf_counter()
    with ControlClient(ini.control, timeout=60) as client:
        for name in names:
            client.call("initiate", name=name)
    try:
        t1 = wait_until(lambda: count_on() >= base + len(names), timeout,
                        f"{len(names)} IKE_SAs", interval=0.05)
    except IkeBenchError:
        return count_on() - base, time.perf_counter() - t0
    return len(names), t1 - t0


def _workdir(given: str | None, name: str, prefix: str) -> contextlib.AbstractContextManager[Path]:
    if given:
        path = Path(given) / name
        path.mkdir(parents=True, exist_ok=True)
        return contextlib.nullcontext(path)
    return _tmp(f"{prefix}-{name}")


@contextlib.contextmanager
def _tmp(name: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as d:
        yield Path(d)


def ocfpy_pair(n: int, sequential: int, memory: int, *, prefix: str, workdir: str | None,
               profile: Path | None, step: Step, timeout: float = 180.0,
               auth: Auth | None = None) -> tuple[PairResult, MemoryResult | None]:
    """ocfpy -> ocfpy: sequential, then a burst of n, then (memory > 0) fill up to memory
    SAs in bursts of BATCH and read the responder's RSS."""
    auth = auth or Auth("psk", prefix)
    names = [f"c{i}" for i in range(max(n, memory, 1))]
    with _workdir(workdir, "ocfpy", prefix) as base, moon_and_sun(prefix) as pair, \
            Iked(pair.right, base / "sun", "sun") as resp, \
            Iked(pair.left, base / "moon", "moon") as ini:
        rid = responder_id(prefix)
        resp.start(responder_config(pair.right, pair.left, rid, auth, base / "sun"),
                   profile=profile)
        ini.start(initiator_config(pair.left, pair.right, rid, names, prefix, auth,
                                   base / "moon"), timeout=300)
        ini.call("initiate", name="c0", wait=10)  # warm both ends (imports, first sessions)
        ini.call("terminate", name="c0")
        wait_until(lambda: not resp.call("list"), 30, "a clean start")
        step("ocfpy -> ocfpy: sequential")
        seq = _ocfpy_sequential(ini, "c0", sequential)
        wait_until(lambda: not resp.call("list"), 30, "the sequential SAs to go")
        step(f"ocfpy -> ocfpy: burst of {n}")
        up, seconds = _ocfpy_burst(ini, names[:n], resp.established, timeout)
        notes = [] if up == n else [f"only {up} of {n} came up within {timeout} s"]
        rate = PairResult("ocfpy", "ocfpy", n, up, seconds, up / max(seconds, 1e-9),
                          statistics.median(seq) if seq else 0.0, notes)
        from ocfpy.iked.control import ControlError

        for name in names[:n]:
            try:
                ini.call("terminate", name=name)
            except ControlError:  # it never came up: the notes above already count it
                pass
        wait_until(lambda: not resp.call("list"), 120, "the burst SAs to go", interval=0.5)
        mem = None
        if memory:
            step(f"ocfpy responder memory: filling {memory} SAs")
            before = rss_kb(resp.pid)
            t0 = time.perf_counter()
            held = 0
            for start in range(0, memory, BATCH):
                chunk = names[start:start + BATCH]
                got, _ = _ocfpy_burst(ini, chunk, resp.established, timeout * 2)
                held += got
            fill = time.perf_counter() - t0
            time.sleep(1.0)  # let the last exchanges' garbage go
            after = rss_kb(resp.pid)
            listed = len(resp.call("list", timeout=120))
            mnotes = [] if listed == memory else [f"responder lists {listed} IKE_SAs"]
            mem = MemoryResult("ocfpy", held, (after - before) / max(held, 1), before, after,
                               held / fill, mnotes)
        return rate, mem


def charon_pair(n: int, sequential: int, *, prefix: str, workdir: str | None,
                step: Step, auth: Auth | None = None, timeout: float = 180.0) -> PairResult:
    step(f"charon -> charon: {sequential} sequential, burst of {n}")
    if auth is not None and auth.pubkey:
        return _charon_cert_pair(n, sequential, prefix=prefix, workdir=workdir, auth=auth,
                                 timeout=timeout)
    r = strongswan.ike_establishment_rate(n, sequential=sequential, prefix=prefix,
                                          workdir=workdir and str(Path(workdir) / "charon"))
    return PairResult("charon", "charon", n, r.established, r.seconds, r.rate_per_s,
                      r.sequential_ms, [*r.notes, r.strongswan])


def _charon_pair_loaded(pair: Any, ini: Any, resp: Any, auth: Auth, prefix: str) -> str:
    """Credentials on both charons and the responder's connection (any initiator ID);
    returns the responder's ID."""
    rid = responder_id(prefix)
    auth.charon_load(ini, "moon")
    auth.charon_load(resp, "sun")
    resp.load_conn("r", auth.charon_conn(
        local_addr=pair.right.outer, remote_addr=pair.left.outer, local_id=rid,
        remote_id="%any", proposals=[IKE_PROPOSAL], unique="never",
        children={"c": strongswan.child([pair.right.inner_net], [pair.left.inner_net],
                                        [ESP_PROPOSAL])}))
    return rid


def _charon_initiator_conn(pair: Any, ini: Any, auth: Auth, rid: str, name: str) -> None:
    """One initiator connection ``name`` (its own ID, so the responder keeps every SA)."""
    ini.load_conn(name, auth.charon_conn(
        local_addr=pair.left.outer, remote_addr=pair.right.outer,
        local_id=auth.initiator_id(name), remote_id=rid, proposals=[IKE_PROPOSAL],
        children={"c": strongswan.child([pair.left.inner_net], [pair.right.inner_net],
                                        [ESP_PROPOSAL])}))


def _charon_cert_pair(n: int, sequential: int, *, prefix: str, workdir: str | None,
                      auth: Auth, timeout: float) -> PairResult:
    """charon -> charon with certificates, measured as strongswan.ike_establishment_rate
    measures PSK (sequential through vici, then a burst counted by child-updown events)."""
    with _workdir(workdir, "charon", prefix) as base, moon_and_sun(prefix) as pair, \
            _charon(pair.right, base / "sun", auth) as resp, \
            _charon(pair.left, base / "moon", auth) as ini:
        rid = _charon_pair_loaded(pair, ini, resp, auth, prefix)
        total = sequential + n
        for i in range(total):
            _charon_initiator_conn(pair, ini, auth, rid, f"c{i}")
        seq = []
        for i in range(sequential):
            t0 = time.perf_counter()
            ini.initiate(f"c{i}", "c")
            seq.append((time.perf_counter() - t0) * 1e3)
        up, first, last = strongswan._concurrent(ini, [f"c{i}" for i in range(sequential, total)],
                                                 timeout)
        notes = [] if up == n else [f"only {up} of {n} came up within {timeout} s"]
        seconds = max(last - first, 1e-9)
        return PairResult("charon", "charon", n, up, seconds, up / seconds,
                          statistics.median(seq) if seq else 0.0,
                          [*notes, strongswan._version(ini)])


def charon_memory(memory: int, *, prefix: str, workdir: str | None, step: Step,
                  timeout: float = 300.0, auth: Auth | None = None) -> MemoryResult:
    """charon -> charon, filled in bursts of BATCH as ocfpy's responder is (one burst of
    10,000 makes charon retransmit and time out half-open SAs: it measures the overload)."""
    step(f"charon responder memory: filling {memory} SAs")
    auth = auth or Auth("psk", prefix)
    names = [f"c{i}" for i in range(memory)]
    with _workdir(workdir, "cmem", prefix) as base, moon_and_sun(prefix) as pair, \
            _charon(pair.right, base / "sun", auth) as resp, \
            _charon(pair.left, base / "moon", auth) as ini:
        rid = _charon_pair_loaded(pair, ini, resp, auth, prefix)
        for name in names:
            _charon_initiator_conn(pair, ini, auth, rid, name)
        assert resp.pid is not None
        before = rss_kb(resp.pid)
        t0 = time.perf_counter()
        held = 0
        for start in range(0, memory, BATCH):
            up, _first, _last = strongswan._concurrent(ini, names[start:start + BATCH], timeout)
            held += up
        fill = time.perf_counter() - t0
        time.sleep(1.0)
        after = rss_kb(resp.pid)
        notes = [] if held == memory else [f"only {held} of {memory} came up"]
        return MemoryResult("charon", held, (after - before) / max(held, 1), before, after,
                            held / fill, [*notes, strongswan._version(ini)])


def _charon(host: Namespace, base: Path, auth: Auth | None = None) -> strongswan.Charon:
    from ocfpy.lab.charon import LOAD

    # pkcs8: the keys are PKCS#8 PEM (vici load-key, type any)
    return strongswan.Charon(host, base, settings=(auth or Auth("psk", "")).charon_settings(),
                             ike_log=0, load=LOAD + " pkcs8")


def ocfpy_to_charon(n: int, sequential: int, *, prefix: str, workdir: str | None,
                    step: Step, timeout: float = 180.0, auth: Auth | None = None) -> PairResult:
    auth = auth or Auth("psk", prefix)
    names = [f"c{i}" for i in range(max(n, 1))]
    with _workdir(workdir, "o2c", prefix) as base, moon_and_sun(prefix) as pair, \
            _charon(pair.right, base / "sun", auth) as resp, \
            Iked(pair.left, base / "moon", "moon") as ini:
        rid = responder_id(prefix)
        auth.charon_load(resp, "sun")
        resp.load_conn("r", auth.charon_conn(
            local_addr=pair.right.outer, remote_addr=pair.left.outer, local_id=rid,
            remote_id="%any", proposals=[IKE_PROPOSAL], unique="never",
            children={"c": strongswan.child([pair.right.inner_net], [pair.left.inner_net],
                                            [ESP_PROPOSAL])}))
        ini.start(initiator_config(pair.left, pair.right, rid, names, prefix, auth,
                                   base / "moon"))
        step("ocfpy -> charon: sequential")
        seq = _ocfpy_sequential(ini, "c0", sequential)
        step(f"ocfpy -> charon: burst of {n}")
        up, seconds = _ocfpy_burst(ini, names, ini.established, timeout)
        notes = [] if up == n else [f"only {up} of {n} came up within {timeout} s"]
        return PairResult("ocfpy", "charon", n, up, seconds, up / max(seconds, 1e-9),
                          statistics.median(seq) if seq else 0.0, notes)


def charon_to_ocfpy(n: int, sequential: int, *, prefix: str, workdir: str | None,
                    step: Step, timeout: float = 180.0, auth: Auth | None = None) -> PairResult:
    auth = auth or Auth("psk", prefix)
    with _workdir(workdir, "c2o", prefix) as base, moon_and_sun(prefix) as pair, \
            Iked(pair.right, base / "sun", "sun") as resp, \
            _charon(pair.left, base / "moon", auth) as ini:
        rid = responder_id(prefix)
        resp.start(responder_config(pair.right, pair.left, rid, auth, base / "sun"))
        auth.charon_load(ini, "moon")
        total = sequential + n
        for i in range(total):
            ini.load_conn(f"c{i}", auth.charon_conn(
                local_addr=pair.left.outer, remote_addr=pair.right.outer,
                local_id=auth.initiator_id(f"c{i}"), remote_id=rid,
                proposals=[IKE_PROPOSAL],
                children={"c": strongswan.child([pair.left.inner_net], [pair.right.inner_net],
                                                [ESP_PROPOSAL])}))
        step("charon -> ocfpy: sequential")
        seq = []
        for i in range(sequential):
            t0 = time.perf_counter()
            ini.initiate(f"c{i}", "c")
            seq.append((time.perf_counter() - t0) * 1e3)
        step(f"charon -> ocfpy: burst of {n}")
        base_count = resp.established()
        up, first, last = strongswan._concurrent(ini, [f"c{i}" for i in range(sequential, total)],
                                                 timeout)
        counted = resp.established() - base_count
        notes = [] if up == n else [f"only {up} of {n} came up within {timeout} s"]
        if counted != up:
            notes.append(f"ocfpy counted {counted} IKE_SAs, charon saw {up} CHILD_SAs up")
        seconds = max(last - first, 1e-9)
        return PairResult("charon", "ocfpy", n, up, seconds, up / seconds,
                          statistics.median(seq) if seq else 0.0, notes)


# -- profile summary ----------------------------------------------------------------------

IDLE = ("<method 'poll' of 'select.epoll' objects>", "<method 'select' of 'select.epoll' objects>",
        "<built-in method select.select>", "<method 'poll' of 'select.poll' objects>")


def profile_summary(path: Path, top: int = 15) -> list[dict[str, Any]]:
    """The top entries of a cProfile file by own time: where the process's CPU went. Time
    blocked in the event loop's poll is waiting, not work: it is left out of the shares."""
    stats = pstats.Stats(str(path))
    entries = stats.stats.items()  # type: ignore[attr-defined]
    busy = [(key, value) for key, value in entries if key[2] not in IDLE]
    total = sum(value[2] for _, value in busy) or 1e-9
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in busy:
        rows.append({"function": f"{Path(file).name}:{line}({func})", "calls": nc,
                     "tottime_s": round(tt, 4), "cumtime_s": round(ct, 4),
                     "share": round(tt / total, 4)})
    rows.sort(key=lambda r: -r["tottime_s"])
    return rows[:top]


# -- the whole benchmark ------------------------------------------------------------------

def run(n: int = 200, sequential: int = 50, memory: int = 10000, *, charon: bool = True,
        prefix: str = "obn", workdir: str | None = None, profile_dir: str | None = None,
        step: Step = lambda label: None, auth: str = "psk") -> IkeReport:
    """Every pairing and both memory figures; a pairing that cannot run is listed in
    ``skipped`` with the reason rather than failing the others. ``auth``: "psk" or a key
    kind for certificates (the same PKI for every pairing of the run)."""
    how = Auth(auth, prefix)
    pairs: list[PairResult] = []
    memories: list[MemoryResult] = []
    skipped: dict[str, str] = {}
    profile_path = None
    if profile_dir:
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        profile_path = Path(profile_dir) / "ike-responder.prof"
    rate, mem = ocfpy_pair(n, sequential, memory, prefix=prefix, workdir=workdir,
                           profile=profile_path, step=step, auth=how)
    pairs.append(rate)
    if mem:
        memories.append(mem)
    if charon:
        for label, fn in (("charon -> charon", lambda: charon_pair(
                              n, sequential, prefix=prefix, workdir=workdir, step=step,
                              auth=how)),
                          ("ocfpy -> charon", lambda: ocfpy_to_charon(
                              n, sequential, prefix=prefix, workdir=workdir, step=step,
                              auth=how)),
                          ("charon -> ocfpy", lambda: charon_to_ocfpy(
                              n, sequential, prefix=prefix, workdir=workdir, step=step,
                              auth=how))):
            try:
                pairs.append(fn())
            except (strongswan.BenchmarkUnavailable, IkeBenchError) as exc:
                skipped[label] = str(exc)
        if memory:
            try:
                memories.append(charon_memory(memory, prefix=prefix, workdir=workdir,
                                              step=step, auth=how))
            except strongswan.BenchmarkUnavailable as exc:
                skipped["charon memory"] = str(exc)
    else:
        skipped["charon"] = "--no-strongswan"
    ratios, targets = compare(pairs, memories)
    profile = profile_summary(profile_path) if profile_path and profile_path.exists() else []
    return IkeReport(auth, pairs, memories, ratios, targets, skipped, profile,
                     Path("/proc/loadavg").read_text().split()[:3])


def compare(pairs: list[PairResult], memories: list[MemoryResult]
            ) -> tuple[dict[str, float], dict[str, bool]]:
    """ocfpy's figures over charon's (targets: rate ratio >= 1, memory ratio <= 1)."""
    by = {(p.initiator, p.responder): p for p in pairs}
    mem = {m.implementation: m for m in memories}
    ratios: dict[str, float] = {}
    targets: dict[str, bool] = {}
    ours, theirs = by.get(("ocfpy", "ocfpy")), by.get(("charon", "charon"))
    if ours and theirs and theirs.rate_per_s:
        ratios["rate_vs_charon"] = round(ours.rate_per_s / theirs.rate_per_s, 3)
        ratios["sequential_ms_vs_charon"] = round(ours.sequential_ms / theirs.sequential_ms, 3) \
            if theirs.sequential_ms else 0.0
        targets["rate >= charon's"] = ratios["rate_vs_charon"] >= 1.0
    if "ocfpy" in mem and "charon" in mem and mem["charon"].kb_per_sa > 0:
        ratios["memory_per_sa_vs_charon"] = round(mem["ocfpy"].kb_per_sa
                                                  / mem["charon"].kb_per_sa, 3)
        targets["memory per SA <= charon's"] = ratios["memory_per_sa_vs_charon"] <= 1.0
    return ratios, targets
