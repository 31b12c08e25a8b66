"""Foreign IKEv2 daemons as ocfpy's peers in the VM lane (kernel ESP in the guest).

One class per peer, all with the same small surface (:class:`Peer`): each instance runs in its
own network namespace with its own config file, control socket and log under its own work
directory, is started by the test and stopped by the PID it was started with. The peers:

- :class:`~tests.kernel.peers.libreswan.Libreswan`: libreswan 4.10 ``pluto`` + ``whack``,
  kernel XFRM (unpacked from Debian's package by scripts/setup.sh: it conflicts with strongSwan);
- :class:`~tests.kernel.peers.openiked.OpenIked`: OpenIKED 7.2 ``iked`` + ``ikectl``, PF_KEY;
- :class:`~tests.kernel.peers.charon_kernel.CharonKernel`: strongSwan 5.9.8 charon with its
  kernel backend (kernel-netlink, not kernel-libipsec).

The topology (:func:`star`): ocfpy sits in one namespace with one veth per peer, so a single
ocfpy daemon (whose start costs a minute and more in the emulated guest) serves every peer; the
peers never see each other. Each :class:`Site` holds one peer's addresses and identities.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ocfpy.lab.netlab import Lab, Namespace

PSK = "ocfpy-interop-psk-not-a-real-secret"
OCFPY_ID = "ocfpy.interop.example"
OCFPY_HOST = "10.180.0.1"  # ocfpy's "inner" host (on lo), in OCFPY_NET
OCFPY_NET = "10.180.0.0/24"


@dataclass(frozen=True)
class Site:
    """One peer's place in the star: a /24 link and a protected /24 behind each end."""

    name: str  # short, used in namespace and connection names ("ls", "oi", "ch")
    index: int
    # 0: the zero-config connection's addresses (.1/.2); 10: the matrix connection's
    # (.11/.12) on the same link, so that ocfpy tells the two connections apart by address.
    offset: int = 0

    @property
    def conn(self) -> str:
        """ocfpy's connection name for this site."""
        return self.name + ("m" if self.offset else "")

    @property
    def ocfpy_addr(self) -> str:
        return f"10.79.{self.index}.{1 + self.offset}"

    @property
    def peer_addr(self) -> str:
        return f"10.79.{self.index}.{2 + self.offset}"

    def matrix(self) -> Site:
        return Site(self.name, self.index, 10)

    @property
    def peer_net(self) -> str:
        return f"10.181.{self.index}.0/24"

    @property
    def peer_host(self) -> str:
        return f"10.181.{self.index}.1"

    @property
    def peer_id(self) -> str:
        return f"{self.name}.interop.example"


class PeerError(RuntimeError):
    pass


@dataclass(frozen=True)
class SaView:
    """A peer's SAs as its own tool lists them, in ocfpy's keywords (``None``: that tool does
    not show it; the peer's kernel state, compared for every row, covers it then)."""

    tool: str  # the command, as a user would type it
    ike_spis: tuple[int, int] | None = None  # (initiator's, responder's)
    ike: dict[str, str] | None = None  # {encr, integ, prf, ke}
    child_spis: tuple[int, int] | None = None  # (the peer's inbound, the peer's outbound)
    child: dict[str, str] | None = None  # {encr, integ}
    esn: bool | None = None


class Peer:
    """What every peer harness offers the tests. ``ike``/``esp`` are the peer's own algorithm
    syntax (None: no algorithm line at all, the peer's defaults); ``extra`` is further
    peer-specific configuration (libreswan: conn lines such as ``esn=yes``); ``remote_net``
    replaces ocfpy's protected net in the peer's selectors (the TS_UNACCEPTABLE rows)."""

    name = "peer"

    def __init__(self, lab: Lab, ns: Namespace, site: Site, workdir: Path) -> None:
        self.lab, self.ns, self.site = lab, ns, site
        self.dir = workdir / site.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    # -- to implement ------------------------------------------------------------------
    def version(self) -> str:
        raise NotImplementedError

    def start(self, *, initiate: bool = False, ike: str | None = None,
              esp: str | None = None, psk: str = PSK, extra: str | None = None,
              remote_net: str = OCFPY_NET) -> None:
        raise NotImplementedError

    def initiate(self) -> None:
        raise NotImplementedError

    def listing(self) -> str:
        """The peer's own view of its SAs, in its own words (for the record)."""
        raise NotImplementedError

    def log(self) -> str:
        raise NotImplementedError

    def sa_view(self) -> SaView:
        """The one established IKE_SA and CHILD_SA as the peer's own tool lists them."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------
    def run(self, *argv: str, timeout: float = 60, check: bool = True
            ) -> subprocess.CompletedProcess:
        proc = self.lab.run(self.ns, list(argv), timeout=timeout)
        if check and proc.returncode != 0:
            raise PeerError(f"{self.name}: {' '.join(argv)} failed ({proc.returncode}): "
                            f"{(proc.stdout + proc.stderr).strip()[-1500:]}")
        return proc

    def spawn(self, argv: list[str], log: Path) -> None:
        out = log.open("ab")
        try:
            self.proc = self.lab.popen(self.ns, argv, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        finally:
            out.close()

    def wait(self, predicate: Callable[[], object], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc is not None and self.proc.poll() is not None:
                raise PeerError(f"{self.name} exited ({self.proc.returncode}) before {what}:\n"
                                f"{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise PeerError(f"{self.name}: no {what} within {timeout} s:\n"
                                f"{self.log()[-3000:]}")
            time.sleep(0.2)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the daemon by the PID we started (SIGTERM, then SIGKILL)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            self.lab.stop(proc, timeout)

    # Rekeys started by the peer (issue 15: CHILD_SA and IKE_SA rekey "started by each side").
    # A peer whose tools cannot start one now says so in REKEY_IMPOSSIBLE, in its own words.
    REKEY_IMPOSSIBLE: str | None = None

    def rekey_child(self) -> None:
        raise NotImplementedError

    def rekey_ike(self) -> None:
        raise NotImplementedError

    def crash(self) -> None:
        """The peer dies without a word (SIGKILL, its whole process group where it has its own:
        OpenIKED's privilege-separated children too): what DPD is for. Its kernel states
        are flushed: nothing of the dead peer may answer for it."""
        import os
        import signal

        proc = self.proc
        if proc is None or proc.poll() is not None:
            raise PeerError(f"{self.name} is not running")
        try:
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
        # stale states would pass the next row's "the peer's kernel holds the SPIs" check
        self.flush_kernel()

    def kernel_states(self) -> list[dict[str, str]]:
        """The ESP states the peer installed in its namespace's kernel (``ip xfrm state``)."""
        return xfrm_states(self.lab, self.ns)

    def flush_kernel(self) -> None:
        self.run("ip", "xfrm", "state", "flush", check=False)
        self.run("ip", "xfrm", "policy", "flush", check=False)


_STATE = re.compile(r"^src (\S+) dst (\S+)\s+proto esp spi 0x([0-9a-f]+)", re.M)
_ALG = re.compile(r"^\s+(aead|enc|auth-trunc|auth) (\S+) 0x[0-9a-f]+(?: (\d+))?", re.M)


def xfrm_states(lab: Lab, ns: Namespace) -> list[dict[str, str]]:
    text = lab.run(ns, ["ip", "xfrm", "state"], timeout=30).stdout
    out = []
    for block in re.split(r"(?m)^(?=src )", text):
        m = _STATE.search(block)
        if not m:
            continue
        entry = {"src": m.group(1), "dst": m.group(2), "spi": m.group(3).rjust(8, "0")}
        for kind, alg, bits in _ALG.findall(block):
            entry[kind] = alg + (f"/{bits}" if bits and kind in ("aead", "auth-trunc") else "")
        entry["esn"] = "esn" if re.search(r"flag .*esn", block) else "noesn"
        out.append(entry)
    return out


def star(lab: Lab, sites: list[Site]) -> tuple[Namespace, dict[str, Namespace]]:
    """ocfpy's namespace <prefix>-o and one namespace <prefix>-<site> per peer, each joined to
    ocfpy's by a veth; the peers route ocfpy's inner net over their link, and the ocfpy daemon
    installs its own routes with each CHILD_SA."""
    hub = lab.namespace("o")
    lab.address(hub, f"{OCFPY_HOST}/32")
    spokes = {}
    for site in sites:
        ns = lab.namespace(site.name)
        veth = lab.veth(hub, f"{site.ocfpy_addr}/24", ns, f"{site.peer_addr}/24")
        # The link between the two gateways, where the rows capture: its peer end, and ocfpy's
        # end as a Namespace of its own (the hub has one such link per peer).
        ns.ifname = veth.b
        ns.hub_end = Namespace(hub.name, ifname=veth.a)
        m = site.matrix()
        lab.configure_link(hub, veth.a, f"{m.ocfpy_addr}/24")
        lab.configure_link(ns, veth.b, f"{m.peer_addr}/24")
        # Both ends of the matrix pair talk from their matrix address: a daemon bound to
        # 0.0.0.0 (OpenIKED) would otherwise send from the link's first address, and ocfpy
        # finds no connection for that address pair (measured: every OpenIKED-initiated
        # matrix row timed out).
        lab.run(hub, ["ip", "route", "add", f"{m.peer_addr}/32", "dev", veth.a, "src",
                      m.ocfpy_addr], check=True)
        lab.run(ns, ["ip", "route", "add", f"{m.ocfpy_addr}/32", "dev", veth.b, "src",
                     m.peer_addr], check=True)
        lab.address(ns, f"{site.peer_host}/32")
        # A plain route: the peer's XFRM policy, not the route, decides that it is protected;
        # the source address makes the peer's own pings leave from the protected host.
        lab.run(ns, ["ip", "route", "add", OCFPY_NET, "via", site.ocfpy_addr, "src",
                     site.peer_host], check=True)
        spokes[site.name] = ns
    return hub, spokes


def which(path: str) -> str | None:
    return path if Path(path).exists() else shutil.which(path)
