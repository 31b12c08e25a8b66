"""Two hosts on one machine: a pair of network namespaces joined by a veth.

Each side gets an outer address on its veth end (the IKE/ESP endpoints) and an inner
address on its loopback (the host behind the gateway; this kernel has no dummy interfaces).
Everything is created through netlink (pyroute2) and removed again by ``close()``, also
when setup failed half-way, so a test or a benchmark never leaves a namespace behind.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from pyroute2 import IPRoute, NetNS, netns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Host:
    """One side of the pair."""

    netns: str
    ifname: str
    outer: str  # address on the veth, the IKE endpoint
    inner: str  # address on lo, the protected host
    inner_net: str  # the subnet the gateway protects (contains ``inner``)

    def argv(self, *command: str) -> list[str]:
        """A command line that runs ``command`` inside this namespace."""
        return ["ip", "netns", "exec", self.netns, *command]

    def run(self, *command: str, timeout: float = 30.0,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*command), capture_output=True, text=True,
                              timeout=timeout, check=check)


class NetnsPair:
    """``left`` and ``right``: two namespaces, a veth between them, inner hosts on lo.

    Names carry the caller's prefix (``oss`` -> ``oss-moon``, ``oss-sun``, ``oss-v0``,
    ``oss-v1``) so that several users of one machine never collide.
    """

    def __init__(self, prefix: str = "oss", *, left: str = "moon", right: str = "sun",
                 outer_net: str = "10.97.0.0/24", inner_nets: Sequence[str] = ("10.98.1.0/24",
                                                                             "10.98.2.0/24"),
                 mtu: int = 1500) -> None:
        hosts = list(ipaddress.ip_network(outer_net).hosts())
        names = (left, right)
        self.left, self.right = (
            Host(netns=f"{prefix}-{names[i]}", ifname=f"{prefix}-v{i}", outer=str(hosts[i]),
                 inner=str(next(ipaddress.ip_network(inner_nets[i]).hosts())),
                 inner_net=inner_nets[i])
            for i in (0, 1))
        for h in (self.left, self.right):
            if len(h.netns) > 15 or len(h.ifname) > 15:
                raise ValueError(f"name too long for the kernel (15 chars): {h.netns}/{h.ifname}")
        self._prefixlen = ipaddress.ip_network(outer_net).prefixlen
        self._mtu = mtu
        self._created: list[str] = []

    def open(self) -> NetnsPair:
        if os.geteuid() != 0:
            raise PermissionError("network namespaces need root")
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def _setup(self) -> None:
        existing = set(netns.listnetns())
        for h in (self.left, self.right):
            if h.netns in existing:
                # A leftover of a crashed run of ours (the prefix is ours alone): start clean.
                log.warning("removing stale namespace %s", h.netns)
                netns.remove(h.netns)
            netns.create(h.netns)
            self._created.append(h.netns)
        with IPRoute() as ip:
            for h in (self.left, self.right):
                # A veth end still in the root namespace: a crashed run of ours, half set up.
                for idx in ip.link_lookup(ifname=h.ifname):
                    log.warning("removing stale link %s", h.ifname)
                    ip.link("del", index=idx)
            ip.link("add", ifname=self.left.ifname, kind="veth",
                    peer={"ifname": self.right.ifname})
            for h in (self.left, self.right):
                idx = ip.link_lookup(ifname=h.ifname)[0]
                ip.link("set", index=idx, net_ns_fd=h.netns)
        for h in (self.left, self.right):
            with NetNS(h.netns) as n:
                lo = n.link_lookup(ifname="lo")[0]
                n.link("set", index=lo, state="up")
                n.addr("add", index=lo, address=h.inner, prefixlen=32)
                idx = n.link_lookup(ifname=h.ifname)[0]
                n.addr("add", index=idx, address=h.outer, prefixlen=self._prefixlen)
                n.link("set", index=idx, state="up", mtu=self._mtu)
            # No IPv6 on new links (charon's TUN): no router solicitations in the logs.
            h.run("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", check=True)

    def close(self) -> None:
        # Deleting a namespace deletes the veth pair with it.
        for name in reversed(self._created):
            try:
                netns.remove(name)
            except OSError as exc:
                log.warning("could not remove namespace %s: %s", name, exc)
        self._created.clear()

    def __enter__(self) -> NetnsPair:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
