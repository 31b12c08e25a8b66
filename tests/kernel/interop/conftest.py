"""The interop rows of the VM lane: one ocfpy daemon, three foreign peers, kernel ESP.

The star (tests/kernel/peers.star): ocfpy in <prefix>-o with one veth per peer, so one ocfpy
daemon, started once per run (a minute and more in the emulated guest), serves every row; the
rows themselves run in rows.py, the peers in parallel. Every row writes a JSON record (peer, version, role, row, result, negotiated suites, reason,
date) to ``$OCFPY_VM_RESULTS/interop/`` (results/vm/interop/ on the host);
scripts/interop-table.py renders docs/interop.md's table from those records, so the table is
whatever the last lane run measured, failing rows included with their reason.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from pyroute2 import config as pyroute2_config

from ocfpy.lab.iked_runner import IkedRunner, wait_for
from ocfpy.lab.iked_toml import config_toml, connection_table, daemon_table, secret_table
from ocfpy.lab.netlab import Lab
from tests.kernel.peers import (
    OCFPY_HOST,
    OCFPY_ID,
    OCFPY_NET,
    PSK,
    Site,
    charon_kernel,
    libreswan,
    openiked,
    star,
)
from tests.vm.guest import results_dir

# pyroute2 opens a socket in a namespace from a forked child and gives up after 10 s (2 s per
# try): in the emulated guest, with the peers' threads busy, the fork alone took longer and the
# userspace star's set-up failed with "could not start netns socket within timeout" (measured
# 2026-12-02, load average 14 on the host). The guest is slow, not broken: wait longer.
pyroute2_config.default_create_socket_timeout = 120
pyroute2_config.default_communicate_timeout = 20

SITES = {"libreswan": Site("ls", 1), "openiked": Site("oi", 2), "strongswan": Site("ch", 3)}
PEER_CLASSES = {"libreswan": (libreswan.Libreswan, libreswan.unavailable_reason),
                "openiked": (openiked.OpenIked, openiked.unavailable_reason),
                "strongswan": (charon_kernel.CharonKernel, charon_kernel.unavailable_reason)}


# ocfpy's side of the matrix rows: everything the rows may pick, so that the peer's one-suite
# configuration decides the row (as responder ocfpy takes the peer's choice, as initiator the
# peer picks from this list). ESN both ways.
_MATRIX_KE = "x25519-x448-ecp256-ecp384-ecp521-modp2048-modp3072-modp4096"
MATRIX_IKE = [
    f"aes256gcm16-aes128gcm16-chacha20poly1305-prfsha512-prfsha384-prfsha256-{_MATRIX_KE}",
    f"aes256-aes128-sha512-sha384-sha256-prfsha512-prfsha384-prfsha256-{_MATRIX_KE}",
]
MATRIX_ESP = [
    "aes256gcm16-aes128gcm16-chacha20poly1305-noesn-esn",
    "aes256-aes128-sha512-sha384-sha256-noesn-esn",
    "aes128ctr-aes256ctr-sha256-sha512-noesn-esn",
    "aes256-aes128-sha1-noesn-esn",
]


def ocfpy_config(*, dataplane: str = "xfrm", psk: str = PSK) -> str:
    """ocfpy's config: per peer, connection <site> with no proposals at all (the zero-config
    rows) and connection <site>m with the matrix lists (MATRIX_IKE / MATRIX_ESP), on a second
    address pair of the same link."""
    conns, secrets = [], []
    listen = []
    for base in SITES.values():
        for site, (ike, esp) in ((base, (None, None)), (base.matrix(), (MATRIX_IKE, MATRIX_ESP))):
            listen.append(site.ocfpy_addr)
            conns.append(connection_table(
                site.conn, local_addr=site.ocfpy_addr, remote_addr=site.peer_addr,
                local_id=OCFPY_ID, remote_id=site.peer_id, proposals=ike, esp_proposals=esp,
                children={"net": ([OCFPY_NET], [site.peer_net])},
                # DPD on the matrix connections only: the DPD rows (rows.LIFECYCLE) use them;
                # the zero-config ones stay exactly the documented recipe
                dpd_delay="10s" if site.offset else "0s",
                keyingtries=1, retransmit={"timeout": 4.0, "tries": 4, "base": 1.5}))
        secrets.append(secret_table(f"ike-{base.name}", psk, [OCFPY_ID, base.peer_id]))
    return config_toml(daemon_table(dataplane=dataplane, listen=listen,
                                   half_open_timeout="30s"), *conns, *secrets)


class PeerUnavailable(Exception):
    """The peer's software is not installed here (the row is skipped, saying what is missing)."""


class Star:
    def __init__(self, lab: Lab, workdir: Path, prefix: str) -> None:
        self.lab, self.workdir = lab, workdir
        self.hub, self.spokes = star(lab, list(SITES.values()))
        self.ocfpy = IkedRunner(self.hub.name, workdir, "ocfpy", on_start=lab.procs.append)
        self.peers: dict[str, object] = {}

    def peer(self, name: str, *, matrix: bool = False):
        cls, reason = PEER_CLASSES[name]
        why = reason()
        if why:
            raise PeerUnavailable(f"{name}: {why}")
        site = SITES[name].matrix() if matrix else SITES[name]
        return cls(self.lab, self.spokes[site.name], site, self.workdir)

    def sas(self, conn: str) -> list[dict]:
        return [sa for sa in self.ocfpy.call("list", timeout=60) if sa.get("name") == conn]

    def established(self, conn: str) -> list[dict]:
        return [sa for sa in self.sas(conn) if str(sa.get("state", "")).lower() == "established"
                and sa.get("children")]

    def ping(self, site: Site, count: int = 3):
        return self.lab.run(self.hub, ["ping", "-c", str(count), "-i", "0.3", "-W", "3",
                                       "-I", OCFPY_HOST, site.peer_host], timeout=60)

    def clear(self, conn: str, timeout: float = 60) -> None:
        """ocfpy deletes what it has with this peer, and waits until it is gone."""
        if self.sas(conn):
            try:
                self.ocfpy.call("terminate", name=conn, timeout=60)
            except Exception:  # noqa: BLE001 - already gone, or the peer never answers
                pass
            wait_for(lambda: not self.sas(conn), timeout, f"{conn} SAs deleted",
                     on_fail=lambda: self.ocfpy.log_tail(3000))


def start_star(prefix: str, config: str):
    """A context: the star lab with a started ocfpy daemon (module fixtures use it)."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))  # /tmp: sockets work there
        try:
            with Lab(prefix) as lab:
                s = Star(lab, workdir, prefix)
                # VM lane: the daemon's imports and driver self-tests take a minute and more
                # in the emulated guest.
                s.ocfpy.start(config, timeout=600)
                try:
                    yield s
                finally:
                    keep_logs(workdir, prefix)
                    s.ocfpy.stop()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    return ctx()


@pytest.fixture(scope="session")
def istar():
    """The star with one ocfpy daemon (xfrm dataplane) for every interop row of the run."""
    with start_star("iop", ocfpy_config()) as s:
        yield s


def keep_logs(workdir: Path, prefix: str) -> None:
    """Copy every daemon's log to the results directory (the guest's /tmp goes away)."""
    out = results_dir()
    if out is None:
        return
    dest = out / "interop" / "logs" / prefix
    dest.mkdir(parents=True, exist_ok=True)
    for path in workdir.rglob("*"):
        if path.is_file() and path.suffix in (".log", ".conf", ".toml", ".secrets") \
                and "nss" not in path.parts:
            name = "-".join(path.relative_to(workdir).parts)
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            # The PSK is a test value, but a results directory travels: keep it out anyway.
            (dest / name).write_text(text.replace(PSK, "<psk>"))


@pytest.fixture(scope="session")
def interop_outcomes(istar, request):
    """The rows of table.ROWS this session selected (``-k libreswan`` plays only libreswan's),
    played once per run: the peers in parallel (rows.play_all)."""
    from tests.kernel.interop.rows import play_all
    from tests.kernel.interop.table import ROWS

    wanted = set()
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "peer" in params and "row" in params:
            wanted.add((params["peer"], params["row"].key))
    table = {peer: [r for r in rows if (peer, r.key) in wanted] for peer, rows in ROWS.items()}
    return play_all(istar, {peer: rows for peer, rows in table.items() if rows})


def report(outcomes: dict, peer: str, row) -> None:
    """One row's outcome as this test's: pass, xfail (impossible, with the peer's reason) or
    fail (with the reason the row recorded)."""
    outcome = outcomes.get((peer, row.key))
    assert outcome is not None, f"row {row.key} against {peer} did not run"
    if outcome.result == "impossible":
        pytest.xfail(outcome.reason)
    if outcome.result == "skipped":
        pytest.skip(outcome.reason)
    if outcome.result != "pass":
        detail = outcome.record.get("traceback", "")
        pytest.fail(f"{peer}, {row.key}: {outcome.reason}\n{detail}", pytrace=False)
