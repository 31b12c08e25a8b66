"""The network lab: N hosts as network namespaces joined by veth pairs.

The one lab of ocfpy: `ocfpy demo`, the benchmarks (`ocfpy bench esp`/`ike`), the static
tunnel, tests/net and tests/interop all build their hosts here (:class:`Lab`, and
:func:`two_hosts` for the usual two-gateway picture).

Everything the lab creates carries the caller's prefix (``oes-a``, ``oes-a0``...), so
engineers sharing one machine never collide, and the lab removes exactly what it created and
nothing else: on normal exit, on an exception, on Ctrl-C (``with Lab(...)``), and as a last
resort at interpreter exit. Deleting a namespace deletes the veth ends and TUN devices inside
it, so the lab only has to remember namespaces, root-namespace links and the processes it
started.

Configuration goes through pyroute2 (netlink). Running a command inside a namespace uses
``ip netns exec`` (iproute2), because it also gives the command the namespace's own /sys and
/etc/netns files, which a bare setns() in a child does not.

Safety: the lab only sends traffic to addresses it configured inside its own namespaces; it
never touches a namespace or link whose name lacks its prefix.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from ocfpy.crypto.errors import OcfError

log = logging.getLogger(__name__)

IFNAMSIZ = 15  # Linux interface names: at most 15 characters
NETNS_DIR = "/run/netns"


class LabError(OcfError, RuntimeError):
    """The lab could not be built; the message says which step failed and why."""


def have_root() -> bool:
    return os.geteuid() == 0


def can_build_lab() -> str | None:
    """None if this process can build a lab here, else the reason it cannot."""
    if not have_root():
        return "needs root (network namespaces, veth pairs and TUN devices)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (no TUN support in this kernel or container)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing: apt-get install iproute2"
    return None


@dataclass(eq=False)  # identity: a host is a dict key (charon ids per host) and unique anyway
class Namespace:
    """One host of the lab. As a gateway of :func:`two_hosts` it also knows its veth end
    (``ifname``), its outer address (the IKE/ESP endpoint), its inner address (the protected
    host, on lo) and the subnet it protects (``inner_net``)."""

    name: str
    links: list[str] = field(default_factory=list)
    ifname: str = ""
    outer: str = ""
    inner: str = ""
    inner_net: str = ""

    @property
    def path(self) -> str:
        return f"{NETNS_DIR}/{self.name}"

    def argv(self, *command: str) -> list[str]:
        """A command line that runs ``command`` inside this namespace."""
        return ["ip", "netns", "exec", self.name, *command]

    def run(self, *command: str, timeout: float = 30.0,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run ``command`` here and wait (time-boxed), output captured as text: for code that
        holds a host but not its lab (charon, iperf3, the interop peers)."""
        return subprocess.run(self.argv(*command), capture_output=True, text=True,
                              timeout=timeout, check=check)


@dataclass(frozen=True)
class VethPair:
    a: str  # interface name in namespace a
    b: str
    ns_a: str | None  # None: root namespace
    ns_b: str | None
    addr_a: str | None
    addr_b: str | None


_LIVE_LABS: weakref.WeakSet[Lab] = weakref.WeakSet()


@atexit.register
def _cleanup_at_exit() -> None:  # last resort: a lab left open when the interpreter exits
    for lab in list(_LIVE_LABS):
        lab.close()


class Lab:
    """Namespaces, veth pairs and processes with one name prefix; ``close()`` removes them all.

    >>> with Lab("oes") as lab:                       # doctest: +SKIP
    ...     a, b = lab.namespace("a"), lab.namespace("b")   # oes-a, oes-b
    ...     lab.veth(a, "10.99.0.1/24", b, "10.99.0.2/24")
    ...     lab.run(a, ["ping", "-c1", "10.99.0.2"])
    """

    def __init__(self, prefix: str):
        if not prefix or len(prefix) > 8 or not prefix.replace("-", "").isalnum():
            raise LabError(f"lab prefix {prefix!r}: use 1-8 letters/digits, e.g. 'oes'")
        self.prefix = prefix
        self.namespaces: dict[str, Namespace] = {}
        self.root_links: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self._closed = False
        self._owner = os.getpid()
        _LIVE_LABS.add(self)

    # -- naming ----------------------------------------------------------------------------
    def name(self, suffix: str) -> str:
        full = f"{self.prefix}-{suffix}" if not suffix.startswith(self.prefix) else suffix
        if len(full) > IFNAMSIZ:
            raise LabError(f"name {full!r} is longer than {IFNAMSIZ} characters")
        return full

    def _mine(self, name: str) -> None:
        if not name.startswith(self.prefix):
            raise LabError(f"{name!r} lacks the lab prefix {self.prefix!r}: refusing to touch it")

    # -- building --------------------------------------------------------------------------
    def namespace(self, suffix: str, *, disable_ipv6_dad: bool = True) -> Namespace:
        """Create namespace <prefix>-<suffix> with lo up. An existing one (left over by a
        crashed run of the same prefix) is removed first."""
        from pyroute2 import IPRoute, netns

        name = self.name(suffix)
        if name in netns.listnetns():
            log.warning("namespace %s exists (a previous run crashed?): removing it", name)
            netns.remove(name)
        ns = Namespace(name)
        for attempt in range(3):
            try:
                netns.create(name)
            except TimeoutError as exc:
                # pyroute2 waits 2 s for its helper process; in the VM lane (TCG) on a busy
                # host that is not always enough (seen: "no response from the child"), and
                # the namespace may exist all the same: the check below decides
                log.warning("namespace %s: %s (attempt %d)", name, exc, attempt + 1)
            except OSError as exc:
                raise LabError(f"cannot create namespace {name}: {exc}") from exc
            # Others on this machine create namespaces too; their `ip netns add` re-mounting
            # /run/netns at the same moment can leave our file unmounted or hidden (seen as
            # "Cannot open network namespace" a moment later). Check, and try again.
            deadline = time.monotonic() + 2
            while not os.path.ismount(ns.path) and time.monotonic() < deadline:
                time.sleep(0.01)
            if os.path.ismount(ns.path):
                break
            log.warning("namespace %s did not appear (attempt %d); creating it again", name,
                        attempt + 1)
            with contextlib.suppress(OSError):
                netns.remove(name)
        else:
            raise LabError(f"namespace {name} could not be created: {ns.path} is not mounted")
        self.namespaces[name] = ns
        with IPRoute(netns=name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        if disable_ipv6_dad:
            # Addresses become usable at once (no duplicate address detection delay).
            self.sysctl(ns, "net.ipv6.conf.all.accept_dad", "0")
            self.sysctl(ns, "net.ipv6.conf.default.accept_dad", "0")
        return ns

    def veth(
        self, ns_a: Namespace | None, addr_a: str | None, ns_b: Namespace | None,
        addr_b: str | None, *, name_a: str | None = None, name_b: str | None = None,
        mtu: int | None = None,
    ) -> VethPair:
        """A veth pair with one end in each namespace (None = the root namespace), addressed
        and up. Default names: <ns>0, <ns>1... within each namespace."""
        from pyroute2 import IPRoute

        a = self.name(name_a or self._next_link_name(ns_a))
        b = self.name(name_b or self._next_link_name(ns_b))
        try:
            with IPRoute() as ipr:
                for ifname in (a, b):
                    # An end left in the root namespace by a crashed run of this prefix
                    # (created, never moved): ours by its name, and in the way.
                    for idx in ipr.link_lookup(ifname=ifname):
                        log.warning("link %s exists (a previous run crashed?): removing it",
                                    ifname)
                        ipr.link("del", index=idx)
                ipr.link("add", ifname=a, kind="veth", peer={"ifname": b})
                # Until an end has moved into its namespace it lives in the root namespace,
                # where deleting the lab's namespaces would not take it along: close() must
                # see it (deleting either end deletes the pair).
                self.root_links += [a, b]
                for ifname, ns in ((a, ns_a), (b, ns_b)):
                    if ns is not None:
                        idx = ipr.link_lookup(ifname=ifname)[0]
                        ipr.link("set", index=idx, net_ns_fd=ns.name)
                        ns.links.append(ifname)
                        self.root_links.remove(ifname)
        except Exception as exc:
            raise LabError(f"cannot create veth pair {a}/{b}: {exc}") from exc
        for ifname, ns, addr in ((a, ns_a, addr_a), (b, ns_b, addr_b)):
            self.configure_link(ns, ifname, addr, mtu=mtu)
        return VethPair(a, b, ns_a.name if ns_a else None, ns_b.name if ns_b else None,
                        addr_a, addr_b)

    def _next_link_name(self, ns: Namespace | None) -> str:
        if ns is None:
            return f"{self.prefix}-r{len(self.root_links)}"
        return f"{ns.name}{len(ns.links)}"

    def configure_link(self, ns: Namespace | None, ifname: str, addr: str | None = None, *,
                       mtu: int | None = None, up: bool = True) -> None:
        with self.iproute(ns) as ipr:
            idx = ipr.link_lookup(ifname=ifname)
            if not idx:
                raise LabError(f"no interface {ifname} in {ns.name if ns else 'root namespace'}")
            if mtu:
                ipr.link("set", index=idx[0], mtu=mtu)
            if addr:
                self._add_address(ipr, idx[0], addr)
            if up:
                ipr.link("set", index=idx[0], state="up")

    def address(self, ns: Namespace, addr: str, ifname: str = "lo") -> None:
        """Add an address (e.g. an "inner" host address on lo: this kernel has no dummy links)."""
        self.configure_link(ns, ifname, addr)

    @staticmethod
    def _add_address(ipr, index: int, addr: str) -> None:
        iface = ipaddress.ip_interface(addr)
        kw = {"nodad": True} if iface.version == 6 else {}
        try:
            ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen,
                     **kw)
        except Exception as exc:
            if "File exists" not in str(exc):
                raise

    def route(self, ns: Namespace, dst: str, *, gateway: str | None = None,
              dev: str | None = None) -> None:
        with self.iproute(ns) as ipr:
            kw: dict = {"dst": dst}
            if gateway:
                kw["gateway"] = gateway
            if dev:
                kw["oif"] = ipr.link_lookup(ifname=dev)[0]
            ipr.route("replace", **kw)

    @contextlib.contextmanager
    def iproute(self, ns: Namespace | None) -> Iterator:
        """A pyroute2 IPRoute bound to the namespace (or the root one)."""
        from pyroute2 import IPRoute

        ipr = IPRoute(netns=ns.name) if ns is not None else IPRoute()
        try:
            yield ipr
        finally:
            ipr.close()

    def sysctl(self, ns: Namespace, key: str, value: str) -> None:
        self.run(ns, ["sysctl", "-qw", f"{key}={value}"], check=True)

    # -- running ---------------------------------------------------------------------------
    @staticmethod
    def _argv(ns: Namespace | None, argv: Sequence[str]) -> list[str]:
        return ns.argv(*argv) if ns is not None else list(argv)

    def run(self, ns: Namespace | None, argv: Sequence[str], *, timeout: float = 30,
            check: bool = False, **kw) -> subprocess.CompletedProcess:
        """Run a command in the namespace and wait (time-boxed); output captured as text."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        proc = subprocess.run(self._argv(ns, argv), timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise LabError(f"{' '.join(argv)} in {ns.name if ns else 'root'} failed "
                           f"({proc.returncode}): {(proc.stderr or '').strip()[-500:]}")
        return proc

    def popen(self, ns: Namespace | None, argv: Sequence[str], **kw) -> subprocess.Popen:
        """Start a command in the namespace; the lab stops it on close()."""
        kw.setdefault("start_new_session", True)  # Ctrl-C reaches us, we stop it in order
        proc = subprocess.Popen(self._argv(ns, argv), **kw)
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after the timeout, to the process group the lab started."""
        if proc.poll() is not None:
            return proc.returncode
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                return proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return None

    # -- teardown --------------------------------------------------------------------------
    def close(self) -> None:
        """Stop processes, delete namespaces and root links. Safe to call twice."""
        if self._closed:
            return
        if os.getpid() != self._owner:
            # A forked child (pyroute2 forks to create namespaces; so does multiprocessing)
            # that unwinds through our `with` block must not tear down its parent's lab.
            return
        self._closed = True
        # Ctrl-C during teardown must not leave half a lab behind.
        old = signal.getsignal(signal.SIGINT)
        restore = _in_main_thread()
        if restore:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for proc in reversed(self.procs):
                try:
                    self.stop(proc)
                except Exception as exc:
                    log.warning("stopping pid %d failed: %s", proc.pid, exc)
            self._delete_links_and_namespaces()
        finally:
            if restore:
                signal.signal(signal.SIGINT, old)
            _LIVE_LABS.discard(self)

    def _delete_links_and_namespaces(self) -> None:
        from pyroute2 import IPRoute, netns

        with contextlib.suppress(Exception), IPRoute() as ipr:
            for ifname in self.root_links:
                self._mine(ifname)
                idx = ipr.link_lookup(ifname=ifname)
                if idx:
                    ipr.link("del", index=idx[0])
        present = set(netns.listnetns())
        for name in self.namespaces:
            self._mine(name)
            if name not in present:
                continue
            for attempt in range(20):
                try:
                    netns.remove(name)
                    break
                except OSError as exc:  # EBUSY while a process is still leaving it
                    if attempt == 19:
                        log.error("could not remove namespace %s: %s", name, exc)
                    time.sleep(0.05)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class HostPair(NamedTuple):
    """Two gateways of :func:`two_hosts` and the veth pair between them (unpacks as
    ``a, b, link``)."""

    left: Namespace
    right: Namespace
    link: VethPair


def two_hosts(lab: Lab, *, names: tuple[str, str] = ("a", "b"),
              outer: tuple[str, str] = ("10.99.0.1/24", "10.99.0.2/24"),
              inner: tuple[str, str] = ("10.199.1.1/32", "10.199.2.1/32"),
              inner_nets: tuple[str, str] | None = None, mtu: int | None = None,
              ipv6_on_new_links: bool = True) -> HostPair:
    """The usual two-gateway picture: namespaces <p>-<names[i]> joined by a veth pair with the
    outer addresses, and one "inner" host address on each side's lo (this kernel has no dummy
    links). ``inner_nets`` are the subnets each gateway protects (default: the inner
    address's own network). ``ipv6_on_new_links=False`` keeps IPv6 off links created later
    (charon's libipsec TUN: no router solicitations in its logs)."""
    hosts = []
    for name in names:
        hosts.append(lab.namespace(name))
    left, right = hosts
    link = lab.veth(left, outer[0], right, outer[1], mtu=mtu)
    for i, (ns, ifname) in enumerate(((left, link.a), (right, link.b))):
        lab.address(ns, inner[i])
        ns.ifname = ifname
        ns.outer = str(ipaddress.ip_interface(outer[i]).ip)
        ns.inner = str(ipaddress.ip_interface(inner[i]).ip)
        ns.inner_net = inner_nets[i] if inner_nets else str(
            ipaddress.ip_interface(inner[i]).network)
        if not ipv6_on_new_links:
            lab.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
    return HostPair(left, right, link)


@contextlib.contextmanager
def moon_and_sun(prefix: str) -> Iterator[HostPair]:
    """A lab of its own with the benchmarks' and the interop lane's pair: <prefix>-moon and
    <prefix>-sun on 10.97.0.0/24, protecting 10.98.1.0/24 and 10.98.2.0/24 (inner hosts .1
    on lo), as strongSwan's test network names its gateways. Removed on exit."""
    with Lab(prefix) as lab:
        yield two_hosts(lab, names=("moon", "sun"), outer=("10.97.0.1/24", "10.97.0.2/24"),
                        inner=("10.98.1.1/32", "10.98.2.1/32"),
                        inner_nets=("10.98.1.0/24", "10.98.2.0/24"), ipv6_on_new_links=False)


# A TCP transfer with a checksum on both ends, run as two small Python programs (one per
# namespace), so the bytes really cross whatever sits between the namespaces.
_SINK = """
import hashlib, socket, sys, json, time
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.create_server((sys.argv[1], int(sys.argv[2])), family=family)
s.settimeout(float(sys.argv[3]))
print("listening", flush=True)
c, _ = s.accept()
c.settimeout(float(sys.argv[3]))
h = hashlib.sha256(); n = 0; t0 = time.monotonic()
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    h.update(b); n += len(b)
print(json.dumps({"bytes": n, "sha256": h.hexdigest(), "seconds": time.monotonic() - t0}))
"""
_SOURCE = """
import hashlib, os, socket, sys, json, time
dst, port, src, total = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
# argv[6], when given, seeds the bytes (transfer_stream() rebuilds them): else random
block = (hashlib.shake_256(sys.argv[6].encode()).digest(1 << 20) if len(sys.argv) > 6
         else os.urandom(1 << 20))
h = hashlib.sha256(); sent = 0
c = socket.create_connection((dst, port), timeout=float(sys.argv[5]), source_address=(src, 0))
t0 = time.monotonic()
while sent < total:
    chunk = block[: min(len(block), total - sent)]
    chunk = hashlib.sha256(sent.to_bytes(8, "big")).digest() + chunk[32:]  # no two chunks alike
    c.sendall(chunk); h.update(chunk); sent += len(chunk)
c.shutdown(socket.SHUT_WR)
c.recv(1)
print(json.dumps({"bytes": sent, "sha256": h.hexdigest(), "seconds": time.monotonic() - t0}))
"""


@dataclass
class Transfer:
    sent: dict
    received: dict

    @property
    def ok(self) -> bool:
        return (self.sent["bytes"] == self.received["bytes"]
                and self.sent["sha256"] == self.received["sha256"])

    @property
    def mbit_per_s(self) -> float:
        return self.received["bytes"] * 8 / max(self.sent["seconds"], 1e-9) / 1e6


def tcp_transfer(lab: Lab, client: Namespace, client_ip: str, server: Namespace,
                 server_ip: str, nbytes: int, *, port: int = 5001,
                 timeout: float = 120, seed: str | None = None) -> Transfer:
    """Send nbytes from client to server over TCP; both ends hash what they saw. With a
    ``seed`` the bytes sent are ``transfer_stream(nbytes, seed)`` (a test that reads the
    transfer off the wire knows what every byte must be), else random."""
    import json
    import sys

    sink = lab.popen(server, [sys.executable, "-c", _SINK, server_ip, str(port), str(timeout)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = sink.stdout.readline()
        if "listening" not in line:
            raise LabError(f"TCP sink did not start: {sink.stderr.read()[-500:]}")
        src = lab.run(client, [sys.executable, "-c", _SOURCE, server_ip, str(port), client_ip,
                               str(nbytes), str(timeout), *([seed] if seed else [])],
                      timeout=timeout + 10)
        if src.returncode != 0:
            raise LabError(f"TCP source failed: {src.stderr[-500:]}")
        out, err = sink.communicate(timeout=timeout)
        if sink.returncode != 0:
            raise LabError(f"TCP sink failed: {err[-500:]}")
        return Transfer(json.loads(src.stdout.strip().splitlines()[-1]),
                        json.loads(out.strip().splitlines()[-1]))
    finally:
        lab.stop(sink)


def transfer_stream(nbytes: int, seed: str) -> bytes:
    """The bytes ``tcp_transfer(..., nbytes, seed=seed)`` sends, in order (what _SOURCE does:
    1 MiB blocks from the seed, each starting with the SHA-256 of its offset)."""
    import hashlib

    block = hashlib.shake_256(seed.encode()).digest(1 << 20)
    out = bytearray()
    while len(out) < nbytes:
        chunk = block[: min(len(block), nbytes - len(out))]
        out += hashlib.sha256(len(out).to_bytes(8, "big")).digest() + chunk[32:]
    return bytes(out)
