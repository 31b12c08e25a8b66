"""strongSwan's side of the benchmarks: the reference figures ocfpy's targets are ratios of.

- :func:`ike_establishment_rate`: charon to charon, PSK, IKE_SA + CHILD_SA per second with
  ``n`` establishments in flight at once (and the sequential latency), plus charon's memory
  per IKE_SA + CHILD_SA.
- :func:`esp_throughput`: kernel-libipsec (charon's userspace ESP over TUN, UDP-encapsulated
  because libipsec forces NAT-T): TCP throughput of one iperf3 stream through the tunnel, the
  64-byte UDP packet rate that reaches the far side, and the ping round trip.

Both build their own pair of namespaces and charons and tear everything down on return or
failure. They are the functions ``ocfpy bench ike`` / ``ocfpy bench esp`` call; run ocfpy's
own measurement in the same run, on the same machine, and compare ratios.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ocfpy.bench import iperf as iperf3
from ocfpy.crypto.errors import OcfError
from ocfpy.lab.charon import Charon, child, decode, psk_connection, unavailable_reason
from ocfpy.lab.netlab import moon_and_sun

log = logging.getLogger(__name__)

PSK = "ocfpy-bench-psk-not-secret"


class BenchmarkUnavailable(OcfError, RuntimeError):
    """The benchmark cannot run on this machine (the message says what is missing)."""


@dataclass
class IkeRateResult:
    n: int  # concurrent establishments asked for
    established: int  # IKE_SA + CHILD_SA pairs that came up in time
    seconds: float  # first initiate to last CHILD_SA up
    rate_per_s: float  # established / seconds
    sequential_ms: float  # median of one-at-a-time establishments (vici round trip included)
    memory_per_sa_kb: dict[str, float]  # charon RSS growth per IKE_SA + CHILD_SA, per role
    proposal: str
    esp_proposal: str
    strongswan: str
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EspResult:
    tcp_mbit_s: float  # one TCP stream, receiver side
    udp64_pps: float  # 64-byte UDP payloads received per second at the far end
    udp64_sent_pps: float  # offered by the sender
    ping_ms: float  # average round trip through the tunnel
    mtu: int  # kernel-libipsec's TUN MTU
    esp_proposal: str
    encapsulated: bool  # ESP in UDP (RFC 3948), as libipsec forces it
    strongswan: str
    seconds: float
    runs: int
    tunnel_bytes_in: int  # the responder CHILD_SA's inbound byte counter afterwards
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _require(*tools: str) -> None:
    reason = unavailable_reason()
    if reason:
        raise BenchmarkUnavailable(reason)
    for tool in tools:
        if shutil.which(tool) is None:
            raise BenchmarkUnavailable(f"{tool} missing (apt-get install {tool})")


@contextlib.contextmanager
def _workdir(given: str | None, prefix: str) -> Iterator[Path]:
    """The caller's folder (kept, with charon's logs), or a temporary one removed afterwards."""
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        yield Path(given)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def _rss_kb(pid: int | None) -> int:
    if pid is None:
        return 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _version(c: Charon) -> str:
    v = decode(c.vici.version())
    return f"strongSwan {v.get('version', '?')} ({v.get('daemon', 'charon')})"


# Many IKE_SAs from one peer address at once: lift charon's DoS defences (cookies after a
# few half-open SAs, blocking per peer IP) that would otherwise turn the benchmark into a
# measurement of them. Routes are not what is measured either.
_RATE_SETTINGS = {
    "install_routes": False,
    "dos_protection": False,
    "cookie_threshold": 1000000,
    "block_threshold": 1000000,
    "init_limit_half_open": 0,
    "ikesa_table_size": 1024,
    "ikesa_table_segments": 16,
    "retransmit_timeout": 10,
    "retransmit_tries": 2,
}


def ike_establishment_rate(n: int = 200, *, proposal: str = "aes128gcm16-prfsha256-x25519",
                           esp_proposal: str = "aes128gcm16", sequential: int = 20,
                           prefix: str = "oss", workdir: str | None = None,
                           timeout: float = 120.0) -> IkeRateResult:
    """charon -> charon establishment rate with ``n`` IKE_SA + CHILD_SA in flight at once.

    Each establishment uses its own connection (a distinct initiator identity), so charon
    cannot reuse an IKE_SA; the responder accepts any identity with the one PSK.
    """
    _require()
    if n < 1:
        raise ValueError("n must be at least 1")
    with _workdir(workdir, f"{prefix}-ikerate-") as base, moon_and_sun(prefix) as pair:
        moon, sun = pair.left, pair.right
        with Charon(moon, base / "moon", settings=_RATE_SETTINGS, ike_log=0) as ini, \
                Charon(sun, base / "sun", settings=_RATE_SETTINGS, ike_log=0) as resp:
            sun_id = f"sun@{prefix}"
            for c in (ini, resp):
                c.load_psk(PSK, [sun_id])
            resp.load_conn("r", psk_connection(
                local_addr=sun.outer, remote_addr=moon.outer, local_id=sun_id, remote_id="%any",
                proposals=[proposal], unique="never",
                children={"c": child([sun.inner_net], [moon.inner_net], [esp_proposal])}))
            total = sequential + n
            for i in range(total):
                ini.load_conn(f"c{i}", psk_connection(
                    local_addr=moon.outer, remote_addr=sun.outer, local_id=f"c{i}@moon.{prefix}",
                    remote_id=sun_id, proposals=[proposal],
                    children={"c": child([moon.inner_net], [sun.inner_net], [esp_proposal])}))

            seq_ms = []
            for i in range(sequential):
                t0 = time.perf_counter()
                ini.initiate(f"c{i}", "c")
                seq_ms.append((time.perf_counter() - t0) * 1e3)

            rss0 = {"initiator": _rss_kb(ini.pid), "responder": _rss_kb(resp.pid)}
            up, first, last = _concurrent(ini, [f"c{i}" for i in range(sequential, total)], timeout)
            rss1 = {"initiator": _rss_kb(ini.pid), "responder": _rss_kb(resp.pid)}
            seconds = max(last - first, 1e-9)
            notes = []
            established = len([1 for _, sa in resp.list_sa_entries()
                               if sa.get("state") == "ESTABLISHED"
                               and any(c.get("state") == "INSTALLED"
                                       for c in sa.get("child-sas", {}).values())]) - sequential
            if up < n:
                notes.append(f"only {up} of {n} CHILD_SAs came up within {timeout}s")
            if established != up:
                notes.append(f"responder lists {established} installed, initiator saw {up} up")
            return IkeRateResult(
                n=n, established=up, seconds=seconds, rate_per_s=up / seconds,
                sequential_ms=statistics.median(seq_ms) if seq_ms else 0.0,
                memory_per_sa_kb={k: (rss1[k] - rss0[k]) / max(up, 1) for k in rss0},
                proposal=proposal, esp_proposal=esp_proposal, strongswan=_version(ini),
                notes=notes)


def _concurrent(ini: Charon, names: list[str], timeout: float) -> tuple[int, float, float]:
    """Fire all initiates without waiting, count child-updown events; (up, t_first, t_last)."""
    listener = ini.session(timeout=timeout)
    target = len(names)
    state = {"up": 0, "last": 0.0}
    done = threading.Event()
    ready = threading.Event()

    def listen() -> None:
        gen = listener.listen(["child-updown"], timeout=0.5)
        ready.set()
        deadline = time.monotonic() + timeout
        for label, event in gen:
            if label is not None and event.get("up") == b"yes":
                state["up"] += 1
                state["last"] = time.perf_counter()
                if state["up"] >= target:
                    break
            if time.monotonic() > deadline:
                break
        done.set()

    thread = threading.Thread(target=listen, name="oss-vici-listen", daemon=True)
    thread.start()
    ready.wait(5)
    time.sleep(0.05)  # the event registration is a round trip on the listener's session
    first = time.perf_counter()
    for name in names:
        # timeout -1: charon answers at once and works in the background.
        list(ini.vici.initiate({"ike": name, "child": "c", "timeout": -1, "init-limits": "no"}))
    done.wait(timeout + 5)
    thread.join(2)
    try:
        listener.transport.close()
    except Exception:  # noqa: BLE001
        pass
    return state["up"], first, state["last"] or time.perf_counter()




def _ping_ms(host: Any, target: str, src: str, count: int = 10) -> float:
    out = host.run("ping", "-c", str(count), "-i", "0.05", "-W", "1", "-I", src, target,
                   timeout=count + 10).stdout
    for line in out.splitlines():
        if line.startswith("rtt") or line.startswith("round-trip"):
            return float(line.split("=")[1].split("/")[1])
    raise RuntimeError(f"ping through the tunnel failed:\n{out}")


def esp_throughput(*, esp_proposal: str = "aes128gcm16",
                   proposal: str = "aes128gcm16-prfsha256-x25519", seconds: float = 5.0,
                   runs: int = 1, udp_size: int = 64, mtu: int = 1400, prefix: str = "oss",
                   workdir: str | None = None) -> EspResult:
    """kernel-libipsec ESP through a charon <-> charon tunnel: TCP, 64-byte UDP, ping.

    With ``runs`` > 1 each figure is the median of the runs.
    """
    _require("iperf3", "ping")
    settings = {"plugins": {"kernel-libipsec": {"mtu": mtu}}}
    with _workdir(workdir, f"{prefix}-esp-") as base, moon_and_sun(prefix) as pair:
        moon, sun = pair.left, pair.right
        with Charon(moon, base / "moon", settings=settings, ike_log=0) as a, \
                Charon(sun, base / "sun", settings=settings, ike_log=0) as b:
            ids = {moon: f"moon@{prefix}", sun: f"sun@{prefix}"}
            for c, me, peer in ((a, moon, sun), (b, sun, moon)):
                c.load_psk(PSK, ids.values())
                c.load_conn("bench", psk_connection(
                    local_addr=me.outer, remote_addr=peer.outer, local_id=ids[me],
                    remote_id=ids[peer], proposals=[proposal],
                    children={"net": child([me.inner_net], [peer.inner_net], [esp_proposal])}))
            a.initiate("bench", "net")
            sa = b.list_sas("bench")["bench"]
            children = list(sa.get("child-sas", {}).values())
            encap = bool(children) and children[0].get("encap") == "yes"

            ping = _ping_ms(moon, sun.inner, moon.inner)
            tcp, pps, sent = [], [], []
            delivered = 0
            for _ in range(runs):
                r = iperf3.run(moon, sun, [], seconds)
                tcp.append(r["end"]["sum_received"]["bits_per_second"] / 1e6)
                delivered += r["end"]["sum_received"]["bytes"]
                u = iperf3.run(moon, sun, ["-u", "-b", "0", "-l", str(udp_size)], seconds)
                rate, received = iperf3.udp_received(u, udp_size, seconds)
                pps.append(rate)
                s = u["end"].get("sum_sent", u["end"]["sum"])
                sent.append(s["packets"] / (s["seconds"] or seconds))
                delivered += received * udp_size
            notes = [] if encap else ["CHILD_SA is not UDP-encapsulated (expected with libipsec)"]
            # Proof that the traffic went through the ESP SA, not around it: the responder's
            # inbound counter must hold at least the payload iperf3 saw arrive.
            tunnel_in = sum(int(c.get("bytes-in", 0)) for c in
                            b.list_sas("bench")["bench"].get("child-sas", {}).values())
            if tunnel_in < delivered:
                notes.append(f"CHILD_SA counted {tunnel_in} bytes in, iperf3 delivered {delivered}:"
                             " traffic bypassed the tunnel")
            return EspResult(
                tcp_mbit_s=statistics.median(tcp), udp64_pps=statistics.median(pps),
                udp64_sent_pps=statistics.median(sent), ping_ms=ping, mtu=mtu,
                esp_proposal=esp_proposal, encapsulated=encap, strongswan=_version(a),
                seconds=seconds, runs=runs, tunnel_bytes_in=tunnel_in, notes=notes)
