"""ESP throughput: ocfpy's userspace dataplane against strongSwan's kernel-libipsec.

Two tunnels between two pairs of network namespaces, both up for the whole benchmark:

- ocfpy: two static-key gateways (:class:`ocfpy.lab.static_tunnel.StaticTunnel`, the dataplane the
  IKE daemon installs SAs into), TUN MTU ``mtu``; by default ESP in UDP 4500 like libipsec,
  so both put the same packets on the wire;
- strongSwan: two charons with kernel-libipsec (ESP over a TUN, UDP-encapsulated because
  libipsec forces NAT-T), the same MTU and ESP proposal.

Each run measures, on ocfpy's tunnel and then on libipsec's (interleaved, so both see the
same load on a shared machine): one iperf3 TCP stream (receiver's figure), and the UDP packet
rate that reaches the far side with 64-byte and ``mtu``-sized packets (``iperf3 -u -b 0``).
Figures are medians over the runs; the SA counters afterwards prove the traffic went
through the ESP SAs and not around them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ocfpy.bench import iperf as iperf3
from ocfpy.bench import strongswan
from ocfpy.bench.ike import profile_summary
from ocfpy.crypto.errors import OcfError
from ocfpy.lab.netlab import Namespace

log = logging.getLogger(__name__)

IP_UDP_HEADERS = 28  # an IPv4 + UDP header: iperf3's -l is the UDP payload

Step = Callable[[str], None]


class EspBenchError(OcfError, RuntimeError):
    """A measurement failed (the message says which and why)."""


# A measured path: iperf3 runs from the first gateway's inner host to the second's.
Path2 = tuple[Namespace, Namespace]


@dataclass
class Figures:
    tcp_mbit_s: list[float] = field(default_factory=list)
    udp64_pps: list[float] = field(default_factory=list)
    udp_mtu_pps: list[float] = field(default_factory=list)

    def median(self) -> dict[str, float]:
        return {k: statistics.median(v) if v else 0.0 for k, v in asdict(self).items()}


@dataclass
class EspReport:
    esp: str
    mtu: int
    encap: bool
    gso: int
    udp_gso: bool
    crypto_backend: str
    seconds: float
    runs: int
    ocfpy: dict[str, Any]  # runs, median, counters
    libipsec: dict[str, Any] | None
    ratios: dict[str, float]
    targets: dict[str, bool]
    skipped: dict[str, str]
    profile: dict[str, list[dict[str, Any]]]
    load_average: list[str]
    notes: list[str] = field(default_factory=list)
    # with several --crypto-backend names: each backend's tunnel, measured in the same runs
    # (interleaved), its figures and the drivers its gateways reported serving the SAs
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)
    offload: bool = True  # ocfpy's per-run offloads (esp/offload.py)
    # ocfpy's outbound workers (esp_workers); with several counts (--workers 1,2) one tunnel
    # each, measured in the same runs: their rows are in `backends`, labelled "<backend>, N
    # workers"
    workers: list[int] = field(default_factory=lambda: [1])
    streams: int = 1  # parallel TCP streams in the TCP figure (iperf3 -P)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- iperf3 -------------------------------------------------------------------------------

def iperf(path: Path2, args: list[str], seconds: float) -> dict[str, Any]:
    """One iperf3 client run from the client host to a one-shot server on the server host."""
    return iperf3.run(*path, args, seconds, EspBenchError)


def tcp_mbit(path: Path2, seconds: float, streams: int = 1) -> tuple[float, int]:
    end = iperf(path, ["-P", str(streams)] if streams > 1 else [], seconds)["end"]["sum_received"]
    return end["bits_per_second"] / 1e6, int(end["bytes"])


def udp_pps(path: Path2, payload: int, seconds: float) -> tuple[float, int]:
    """Packets per second that reached the server; and their payload bytes."""
    result = iperf(path, ["-u", "-b", "0", "-l", str(payload)], seconds)
    pps, received = iperf3.udp_received(result, payload, seconds)
    return pps, received * payload


def measure(path: Path2, figures: Figures, seconds: float, mtu: int, streams: int = 1) -> int:
    """One run of the three figures into ``figures``; payload bytes delivered."""
    delivered = 0
    mbit, n = tcp_mbit(path, seconds, streams)
    figures.tcp_mbit_s.append(mbit)
    delivered += n
    pps, n = udp_pps(path, 64, seconds)
    figures.udp64_pps.append(pps)
    delivered += n
    pps, n = udp_pps(path, mtu - IP_UDP_HEADERS, seconds)
    figures.udp_mtu_pps.append(pps)
    return delivered + n


# -- the two tunnels ----------------------------------------------------------------------

@contextlib.contextmanager
def ocfpy_tunnel(*, esp: str, mtu: int, encap: bool, gso: int, udp_gso: bool, crypto_backend: str,
                 prefix: str, profile_dir: str | None, workdir: Path,
                 calibration: str | None = None, offload: bool = True,
                 workers: int = 1) -> Iterator[tuple[Any, Path2]]:
    from ocfpy.lab.netlab import Lab
    from ocfpy.lab.static_tunnel import StaticTunnel

    saved = os.environ.get("OCFPY_ESP_PROFILE")
    if profile_dir:
        # The gateways' workers inherit it and each dump a cProfile file on exit.
        os.environ["OCFPY_ESP_PROFILE"] = str(Path(profile_dir).resolve())
    try:
        with Lab(prefix) as lab, StaticTunnel(lab, esp=esp, encap=encap, mtu=mtu,
                                              crypto_backend=crypto_backend,
                                              calibration=calibration,
                                              tun=f"{prefix}-tun0", gso=gso, udp_gso=udp_gso,
                                              offload=offload, workers=workers,
                                              workdir=workdir) as tun:
            yield tun, (tun.a, tun.b)
    finally:
        if saved is None:
            os.environ.pop("OCFPY_ESP_PROFILE", None)
        else:
            os.environ["OCFPY_ESP_PROFILE"] = saved


@contextlib.contextmanager
def libipsec_tunnel(*, esp: str, mtu: int, prefix: str, workdir: Path
                    ) -> Iterator[tuple[strongswan.Charon, Path2, dict[str, Any]]]:
    """Two charons with kernel-libipsec, one CHILD_SA between their inner hosts."""
    from ocfpy.lab.netlab import moon_and_sun

    settings = {"plugins": {"kernel-libipsec": {"mtu": mtu}}}
    proposal = "aes128gcm16-prfsha256-x25519"
    with moon_and_sun(prefix) as pair:
        moon, sun = pair.left, pair.right
        with strongswan.Charon(moon, workdir / "moon", settings=settings, ike_log=0) as a, \
                strongswan.Charon(sun, workdir / "sun", settings=settings, ike_log=0) as b:
            ids = {moon: f"moon.{prefix}.example", sun: f"sun.{prefix}.example"}
            for c, me, peer in ((a, moon, sun), (b, sun, moon)):
                c.load_psk(strongswan.PSK, ids.values())
                c.load_conn("bench", strongswan.psk_connection(
                    local_addr=me.outer, remote_addr=peer.outer, local_id=ids[me],
                    remote_id=ids[peer], proposals=[proposal],
                    children={"net": strongswan.child([me.inner_net], [peer.inner_net],
                                                      [esp])}))
            a.initiate("bench", "net")
            children = list(b.list_sas("bench")["bench"].get("child-sas", {}).values())
            info = {"strongswan": strongswan._version(a),
                    "encapsulated": bool(children) and children[0].get("encap") == "yes"}
            yield b, (moon, sun), info


def _libipsec_bytes_in(responder: strongswan.Charon) -> int:
    sas = responder.list_sas("bench").get("bench", {})
    return sum(int(c.get("bytes-in", 0)) for c in sas.get("child-sas", {}).values())


def _ocfpy_bytes_in(tun: Any) -> int:
    """Inbound bytes the far gateway's SA counted (inner packets, headers included)."""
    return int(tun.counters("b").get("sa", {}).get("bytes_in", 0))


# -- the whole benchmark ------------------------------------------------------------------

def run(*, seconds: float = 5.0, runs: int = 3, esp: str = "aes128gcm16",
        crypto_backend: str = "openssl", calibration: str | None = None, mtu: int = 1400,
        encap: bool = True, gso: int = 0,
        udp_gso: bool = False, offload: bool = True, workers: list[int] | None = None,
        streams: int = 1, strongswan_too: bool = True, prefix: str = "obn", workdir: str | None = None,
        profile_dir: str | None = None, step: Step = lambda label: None) -> EspReport:
    # "openssl,af_alg": one tunnel per backend, all up at once and measured run by run in
    # turn, so that the backends are compared inside the tunnel under the same load
    names = list(dict.fromkeys(b.strip() for b in crypto_backend.split(",") if b.strip()))
    if not names:
        raise EspBenchError("--crypto-backend: no backend named")
    counts = list(dict.fromkeys(workers or [1]))
    # one tunnel per backend and worker count: label -> (backend, workers)
    variants = {(b if len(counts) == 1 else f"{b}, {w} worker{'s' if w > 1 else ''}"): (b, w)
                for b in names for w in counts}
    backends = list(variants)
    figures = {b: Figures() for b in backends}
    ours, theirs = figures[backends[0]], Figures()
    skipped: dict[str, str] = {}
    notes: list[str] = []
    libipsec: dict[str, Any] | None = None
    if profile_dir:
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        base = Path(workdir) if workdir else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix=f"{prefix}-esp-")))
        (base / "ocfpy").mkdir(parents=True, exist_ok=True)
        tunnels: dict[str, tuple[Any, Path2]] = {}
        for i, backend in enumerate(backends):
            step(f"starting ocfpy's gateways ({backend})")
            (base / f"ocfpy{i or ''}").mkdir(parents=True, exist_ok=True)
            tunnels[backend] = stack.enter_context(ocfpy_tunnel(
                esp=esp, mtu=mtu, encap=encap, gso=gso, udp_gso=udp_gso,
                crypto_backend=variants[backend][0], workers=variants[backend][1],
                calibration=calibration, offload=offload, prefix=f"{prefix}e{i or ''}",
                profile_dir=profile_dir, workdir=base / f"ocfpy{i or ''}"))
        tun, our_path = tunnels[backends[0]]
        sw = None
        if strongswan_too:
            step("starting two charons with kernel-libipsec")
            try:
                strongswan._require("iperf3")
                sw = stack.enter_context(libipsec_tunnel(esp=esp, mtu=mtu, prefix=f"{prefix}s",
                                                         workdir=base / "charon"))
            except strongswan.BenchmarkUnavailable as exc:
                skipped["libipsec"] = str(exc)
        else:
            skipped["libipsec"] = "--no-strongswan"
        our_delivered = their_delivered = 0
        delivered = dict.fromkeys(backends, 0)
        for i in range(runs):
            for backend in backends:
                step(f"run {i + 1}/{runs}: ocfpy ({backend})")
                delivered[backend] += measure(tunnels[backend][1], figures[backend], seconds,
                                              mtu, streams)
            our_delivered = delivered[backends[0]]
            if sw:
                step(f"run {i + 1}/{runs}: libipsec")
                their_delivered += measure(sw[1], theirs, seconds, mtu, streams)
        our_in = _ocfpy_bytes_in(tun)
        if our_in < our_delivered:
            notes.append(f"ocfpy's SAs counted {our_in} bytes in, iperf3 delivered "
                         f"{our_delivered}: traffic bypassed the tunnel")
        ocfpy = {"runs": asdict(ours), "median": ours.median(), "sa_bytes_in": our_in,
                 "payload_delivered": our_delivered, "counters_b": tun.counters("b")}
        per_backend = {}
        if len(backends) > 1:
            for backend, (t, _) in tunnels.items():
                bytes_in = _ocfpy_bytes_in(t)
                if bytes_in < delivered[backend]:
                    notes.append(f"{backend}: the SAs counted {bytes_in} bytes in, iperf3 "
                                 f"delivered {delivered[backend]}: traffic bypassed the tunnel")
                per_backend[backend] = {"runs": asdict(figures[backend]),
                                        "median": figures[backend].median(),
                                        "sa_bytes_in": bytes_in, "drivers": t.drivers}
        if sw:
            their_in = _libipsec_bytes_in(sw[0])
            if their_in < their_delivered:
                notes.append(f"libipsec's CHILD_SA counted {their_in} bytes in, iperf3 "
                             f"delivered {their_delivered}: traffic bypassed the tunnel")
            libipsec = {"runs": asdict(theirs), "median": theirs.median(),
                        "sa_bytes_in": their_in, "payload_delivered": their_delivered,
                        **sw[2]}
    profile = {}
    if profile_dir:
        for f in sorted(Path(profile_dir).glob("esp-*.prof")):
            with contextlib.suppress(Exception):
                profile[f.name] = profile_summary(f)
    ratios, targets = compare(ours, theirs if libipsec else None)
    return EspReport(esp, mtu, encap, gso, udp_gso, names[0], seconds, runs, ocfpy, libipsec,
                     ratios, targets, skipped, profile,
                     Path("/proc/loadavg").read_text().split()[:3], notes, per_backend,
                     offload, counts, streams)


def compare(ours: Figures, theirs: Figures | None) -> tuple[dict[str, float], dict[str, bool]]:
    """ocfpy over libipsec; targets (/work/shared/performance.md, raised 2026-12-02): TCP >= 3x,
    64-byte packet rate >= 2x, MTU-sized packet rate >= 1.5x."""
    if theirs is None:
        return {}, {}
    a, b = ours.median(), theirs.median()
    ratios = {k: round(a[k] / b[k], 3) for k in a if b[k]}
    targets = {}
    if "tcp_mbit_s" in ratios:
        targets["TCP >= 3x libipsec"] = ratios["tcp_mbit_s"] >= 3.0
    if "udp64_pps" in ratios:
        targets["64-byte rate >= 2x libipsec"] = ratios["udp64_pps"] >= 2.0
    if "udp_mtu_pps" in ratios:
        targets["MTU-sized rate >= 1.5x libipsec"] = ratios["udp_mtu_pps"] >= 1.5
    return ratios, targets


def unavailable_reason() -> str | None:
    """Why ocfpy's side cannot run here (root, TUN, iperf3), or None."""
    from ocfpy.lab.netlab import can_build_lab

    why = can_build_lab()
    if why:
        return why
    if shutil.which("iperf3") is None:
        return "iperf3 is missing (apt-get install iperf3)"
    return None
