"""Routes for the remote traffic selectors of a kernel-ESP tunnel (rtnetlink).

The kernel looks up a route before it consults the XFRM policies, so a packet to a remote
subnet that has no route never reaches the "out" policy (ENETUNREACH). strongSwan's
kernel_netlink therefore installs a route per remote selector towards the peer (its table
220); we do the same in the main table: same interface and next hop as the route to the
peer's outer address, and the local inner address (one inside the local selectors) as the
preferred source, so locally generated packets match the policy too.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_GETADDR, RTM_GETROUTE, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ocfpy.esp.dataplane.xfrm_msg import encode
from ocfpy.esp.dataplane.xfrm_netlink import NetlinkChannel
from ocfpy.esp.spec import IPAddress, IPNetwork

RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1


@dataclass(frozen=True)
class Path:
    """How the kernel reaches an address: interface index and next hop (None: on-link)."""

    oif: int
    gateway: IPAddress | None


def route_to(ch: NetlinkChannel, addr: IPAddress) -> Path:
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    msg = rtmsg()
    msg.update({"family": family, "dst_len": addr.max_prefixlen, "src_len": 0, "tos": 0,
                "table": 0, "proto": 0, "scope": 0, "type": 0, "flags": 0})
    msg["attrs"] = [("RTA_DST", str(addr))]
    answers = ch.request(encode(msg, RTM_GETROUTE, NLM_F_REQUEST), f"route to {addr}")
    if not answers:
        raise OSError(f"no route to {addr}")
    reply = rtmsg(answers[0])
    reply.decode()
    gateway = reply.get_attr("RTA_GATEWAY")
    return Path(reply.get_attr("RTA_OIF"), ipaddress.ip_address(gateway) if gateway else None)


def local_addresses(ch: NetlinkChannel) -> list[IPAddress]:
    msg = ifaddrmsg()
    msg.update({"family": 0, "prefixlen": 0, "flags": 0, "scope": 0, "index": 0})
    msg["attrs"] = []
    found = []
    for raw in ch.request(encode(msg, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP), "addresses"):
        reply = ifaddrmsg(raw)
        reply.decode()
        addr = reply.get_attr("IFA_LOCAL") or reply.get_attr("IFA_ADDRESS")
        if addr:
            found.append(ipaddress.ip_address(addr.split("%")[0]))
    return found


def _route_msg(net: IPNetwork) -> rtmsg:
    msg = rtmsg()
    msg.update({"family": socket.AF_INET6 if net.version == 6 else socket.AF_INET,
                "dst_len": net.prefixlen, "src_len": 0, "tos": 0, "table": RT_TABLE_MAIN,
                "proto": RTPROT_STATIC, "scope": RT_SCOPE_UNIVERSE, "type": RTN_UNICAST,
                "flags": 0})
    return msg


def add_route(ch: NetlinkChannel, net: IPNetwork, path: Path, prefsrc: IPAddress | None) -> None:
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


def del_route(ch: NetlinkChannel, net: IPNetwork) -> None:
    msg = _route_msg(net)
    msg["attrs"] = [("RTA_DST", str(net.network_address))]
    ch.request(encode(msg, RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK), f"delete route {net}")
