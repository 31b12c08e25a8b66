"""rtnetlink requests of the ESP layer: links, addresses and routes (NETLINK_ROUTE).

The one place in ocfpy/esp that builds them. They go over a ``NetlinkChannel(NETLINK_ROUTE)``
(esp/netlink.py): the TUN set-up (tun.py), the userspace dataplane's routes into its TUN
device and the xfrm dataplane's routes towards the peer all use these functions, so there
is one way to add a route and one way to take it out again.

Why routes at all, per dataplane:
- userspace (strongSwan's kernel-libipsec): a route per remote traffic selector through the
  TUN device, or the kernel never hands those packets to us;
- xfrm (strongSwan's kernel_netlink, its table 220; we use the main table): the kernel looks
  up a route before it consults the XFRM policies, so a packet to a remote subnet without a
  route never reaches the "out" policy (ENETUNREACH). The route goes where the route to the
  peer's outer address goes (interface and next hop).
Both use a local address inside the local traffic selectors as the preferred source, so that
locally generated packets match the policy too.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.rtnl import (
    RTM_DELROUTE,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_NEWLINK,
    RTM_NEWROUTE,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ocfpy.esp.netlink import NetlinkChannel, NetlinkError, encode
from ocfpy.esp.spec import IPAddress, IPNetwork, TrafficSelector

RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1
IFF_UP = 0x1


@dataclass(frozen=True)
class Path:
    """How the kernel reaches an address: interface index and next hop (None: on-link)."""

    oif: int
    gateway: IPAddress | None = None


# -- links --------------------------------------------------------------------------------------
def _link_msg(index: int = 0) -> ifinfmsg:
    msg = ifinfmsg()
    msg.update({"family": socket.AF_UNSPEC, "ifi_type": 0, "index": index, "flags": 0,
                "change": 0})
    return msg


def link_index(ch: NetlinkChannel, name: str) -> int:
    """The interface index of ``name`` in the channel's namespace (RTM_GETLINK by name)."""
    msg = _link_msg()
    msg["attrs"] = [("IFLA_IFNAME", name)]
    answers = ch.request(encode(msg, RTM_GETLINK, NLM_F_REQUEST), f"link {name}")
    if not answers:
        raise NetlinkError(errno.ENODEV, f"no interface {name}", f"link {name}")
    reply = ifinfmsg(answers[0])
    reply.decode()
    return reply["index"]


def set_link(ch: NetlinkChannel, index: int, *, mtu: int | None = None,
             txqlen: int | None = None, gso_max_size: int | None = None,
             up: bool | None = None) -> None:
    """Change an existing link, as ``ip link set`` does (RTM_NEWLINK without NLM_F_CREATE):
    the kernel applies MTU, queue length and GSO size before it changes the flags."""
    msg = _link_msg(index)
    attrs: list = []
    if mtu is not None:
        attrs.append(("IFLA_MTU", mtu))
    if txqlen is not None:
        attrs.append(("IFLA_TXQLEN", txqlen))
    if gso_max_size is not None:
        attrs.append(("IFLA_GSO_MAX_SIZE", gso_max_size))
    if up is not None:
        msg["flags"] = IFF_UP if up else 0
        msg["change"] = IFF_UP
    msg["attrs"] = attrs
    what = ", ".join(f"{a[0][5:].lower()} {a[1]}" for a in attrs)
    what += ("" if up is None else (", " if what else "") + ("up" if up else "down"))
    ch.request(encode(msg, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK),
               f"link {index}: set {what}")


# -- addresses ------------------------------------------------------------------------------------
def local_addresses(ch: NetlinkChannel) -> list[IPAddress]:
    msg = ifaddrmsg()
    msg.update({"family": 0, "prefixlen": 0, "flags": 0, "scope": 0, "index": 0})
    msg["attrs"] = []
    found = []
    for raw in ch.request(encode(msg, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP), "addresses"):
        reply = ifaddrmsg(raw)
        reply.decode()
        # IFA_LOCAL is the interface's own address on point-to-point links, where
        # IFA_ADDRESS is the peer's; elsewhere only IFA_ADDRESS may be present.
        addr = reply.get_attr("IFA_LOCAL") or reply.get_attr("IFA_ADDRESS")
        if addr:
            found.append(ipaddress.ip_address(addr.split("%")[0]))
    return found


def local_sources(ch: NetlinkChannel,
                  local_ts: Iterable[TrafficSelector]) -> dict[int, IPAddress | None]:
    """Per IP version (4, 6), a local address inside the local traffic selectors, if this
    host has one: the preferred source of the routes, so that locally sent packets match the
    outbound policy (their source must be inside local_ts)."""
    selectors = list(local_ts)
    addresses = local_addresses(ch)
    return {v: next((a for a in addresses if a.version == v
                     for ts in selectors if ts.contains(a)), None) for v in (4, 6)}


# -- routes ---------------------------------------------------------------------------------------
def route_to(ch: NetlinkChannel, addr: IPAddress) -> Path:
    """The kernel's route to ``addr`` (RTM_GETROUTE, as ``ip route get``)."""
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    msg = rtmsg()
    msg.update({"family": family, "dst_len": addr.max_prefixlen, "src_len": 0, "tos": 0,
                "table": 0, "proto": 0, "scope": 0, "type": 0, "flags": 0})
    msg["attrs"] = [("RTA_DST", str(addr))]
    answers = ch.request(encode(msg, RTM_GETROUTE, NLM_F_REQUEST), f"route to {addr}")
    if not answers:
        raise NetlinkError(errno.ENETUNREACH, f"no route to {addr}", f"route to {addr}")
    reply = rtmsg(answers[0])
    reply.decode()
    gateway = reply.get_attr("RTA_GATEWAY")
    return Path(reply.get_attr("RTA_OIF"), ipaddress.ip_address(gateway) if gateway else None)


def _route_msg(net: IPNetwork) -> rtmsg:
    msg = rtmsg()
    msg.update({"family": socket.AF_INET6 if net.version == 6 else socket.AF_INET,
                "dst_len": net.prefixlen, "src_len": 0, "tos": 0, "table": RT_TABLE_MAIN,
                "proto": RTPROT_STATIC, "scope": RT_SCOPE_UNIVERSE, "type": RTN_UNICAST,
                "flags": 0})
    return msg


def add_route(ch: NetlinkChannel, net: IPNetwork, path: Path,
              prefsrc: IPAddress | None = None) -> None:
    """``ip route replace net dev <oif> [via <gateway>] [src <prefsrc>] proto static``."""
    msg = _route_msg(net)
    attrs: list = [("RTA_DST", str(net.network_address)), ("RTA_OIF", path.oif)]
    if path.gateway is not None:
        attrs.append(("RTA_GATEWAY", str(path.gateway)))
    if prefsrc is not None:
        attrs.append(("RTA_PREFSRC", str(prefsrc)))
    msg["attrs"] = attrs
    ch.request(encode(msg, RTM_NEWROUTE,
                      NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE),
               f"route {net}")


def del_route(ch: NetlinkChannel, net: IPNetwork, oif: int | None = None) -> None:
    """Delete the route to ``net`` (only the one through ``oif``, when given)."""
    msg = _route_msg(net)
    attrs: list = [("RTA_DST", str(net.network_address))]
    if oif is not None:
        attrs.append(("RTA_OIF", oif))
    msg["attrs"] = attrs
    ch.request(encode(msg, RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK), f"delete route {net}")


class Routes:
    """The routes a dataplane installed, shared by its CHILD_SAs: a route goes into the kernel
    with its first user and comes out with its last (a rekeyed CHILD_SA comes up before the
    old one goes, with the same selectors). Not thread-safe: the dataplane's lock guards it."""

    def __init__(self, ch: NetlinkChannel):
        self.ch = ch
        self._users: dict[IPNetwork, int] = {}
        self._paths: dict[IPNetwork, Path] = {}

    def __contains__(self, net: IPNetwork) -> bool:
        return net in self._users

    def add(self, net: IPNetwork, path: Path, prefsrc: IPAddress | None = None) -> None:
        """One more user of the route to ``net``; raises NetlinkError if the kernel refuses
        the first one (then nothing is counted)."""
        if not self._users.get(net):
            if prefsrc is not None and prefsrc.version != net.version:
                prefsrc = None
            add_route(self.ch, net, path, prefsrc)
            self._paths[net] = path
        self._users[net] = self._users.get(net, 0) + 1

    def remove(self, net: IPNetwork) -> None:
        """One user fewer; the last one takes the route out. A route already gone (deleted
        by hand, or with its interface) is not an error."""
        users = self._users.get(net, 0) - 1
        if users > 0:
            self._users[net] = users
            return
        self._users.pop(net, None)
        path = self._paths.pop(net, None)
        try:
            del_route(self.ch, net, path.oif if path is not None else None)
        except NetlinkError as exc:
            if exc.errno not in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
                raise
