"""The xfrm dataplane's parts that the host kernel can check (root, a namespace of our own).

This host has XFRM netlink but no ESP (CONFIG_INET_ESP unset), which is the situation the
dataplane must explain; and policies, routes and socket options need no ESP, so they are
checked here against the real kernel. Traffic through kernel ESP is tests/kernel/test_xfrm.py.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

import pytest

from ocfpy.esp import rtnl
from ocfpy.esp.dataplane import xfrm_msg as X
from ocfpy.esp.dataplane.xfrm_selectors import priority, selectors
from ocfpy.esp.netlink import NETLINK_ROUTE, NETLINK_XFRM, NetlinkChannel, NetlinkError
from ocfpy.esp.spec import TrafficSelector
from ocfpy.lab.netlab import Lab, can_build_lab

pytestmark = pytest.mark.net

_why = can_build_lab()
if _why:
    pytest.skip(f"namespace lab unavailable: {_why}", allow_module_level=True)


@pytest.fixture
def lab():
    with Lab("oxfh") as lab:
        a = lab.namespace("a")
        b = lab.namespace("b")
        lab.veth(a, "10.98.0.1/24", b, "10.98.0.2/24")
        lab.address(a, "10.198.1.1/32")
        lab.a, lab.b = a, b
        yield lab


def _ip(lab, ns, *args) -> str:
    return lab.run(ns, ["ip", *args], check=True).stdout


def _host_has_esp(ns: str) -> bool:
    from ocfpy.esp.dataplane.xfrm import XfrmDataplane, XfrmUnavailable

    try:
        XfrmDataplane(netns=ns).close()
    except XfrmUnavailable:
        return False
    return True


def test_missing_kernel_esp_is_explained_and_leaves_nothing(lab):
    from ocfpy.esp.dataplane.xfrm import XfrmDataplane, XfrmUnavailable

    if _host_has_esp(lab.a.name):
        pytest.skip("this kernel has ESP: the refusal cannot be shown here")
    with pytest.raises(XfrmUnavailable) as err:
        XfrmDataplane(netns=lab.a.name)
    text = str(err.value)
    assert "CONFIG_INET_ESP" in text and "CONFIG_XFRM_USER" in text
    assert "Requested type not found" in text  # the kernel's own words, via extended ACK
    assert _ip(lab, lab.a, "xfrm", "state").strip() == ""


def test_auto_picks_userspace_and_says_why(lab, caplog):
    from ocfpy.esp.dataplane.select import DataplaneUnavailable, choose_dataplane
    from ocfpy.esp.dataplane.userspace import UserspaceDataplane

    if _host_has_esp(lab.a.name):
        pytest.skip("this kernel has ESP: auto would take xfrm")
    with pytest.raises(DataplaneUnavailable, match="dataplane xfrm is not available.*CONFIG_INET_ESP"):
        choose_dataplane("xfrm", None, netns=lab.a.name)
    caplog.set_level(logging.INFO, logger="ocfpy.esp.dataplane.select")
    from ocfpy.crypto.dispatcher import Dispatcher

    dp = choose_dataplane("auto", Dispatcher(), netns=lab.a.name)
    try:
        assert isinstance(dp, UserspaceDataplane)
        assert "userspace, because the kernel cannot" in caplog.text
        assert "Requested type not found" in caplog.text
    finally:
        dp.close()
    with pytest.raises(DataplaneUnavailable, match="unknown dataplane 'kernel'"):
        choose_dataplane("kernel", None)


def test_policies_from_selectors_are_accepted_and_removed_by_the_kernel(lab):
    local = [TrafficSelector.from_network("10.198.1.0/24", protocol=6, ports=(1000, 1003))]
    remote = [TrafficSelector(ipaddress.ip_address("10.198.2.0"),
                              ipaddress.ip_address("10.198.3.255"), 6, 80, 80)]
    sels = selectors(local, remote)
    # 1000-1003 is one aligned block; 10.198.2.0-10.198.3.255 is one /23
    assert len(sels) == 1 and sels[0].sport_mask == 0xFFFC and sels[0].dst_prefix == 23
    tmpl = X.TemplateParams(ipaddress.ip_address("10.98.0.1"), ipaddress.ip_address("10.98.0.2"), 42)
    with NetlinkChannel(NETLINK_XFRM, netns=lab.a.name) as ch:
        for direction in (X.XFRM_POLICY_OUT, X.XFRM_POLICY_IN, X.XFRM_POLICY_FWD):
            ch.request(X.newpolicy(sels[0], direction, tmpl, priority=priority(sels[0]),
                                   msg_type=X.XFRM_MSG_UPDPOLICY), "policy")
        # UPDPOLICY twice is a replace, not an error (rekeyed CHILD_SAs share policies)
        ch.request(X.newpolicy(sels[0], X.XFRM_POLICY_OUT, tmpl, msg_type=X.XFRM_MSG_UPDPOLICY))
        shown = _ip(lab, lab.a, "xfrm", "policy")
        assert "src 10.198.1.0/24 dst 10.198.2.0/23 proto tcp sport 1000 dport 80" in shown
        assert shown.count("reqid 42 mode tunnel") == 3 and "dir fwd" in shown
        for direction in (X.XFRM_POLICY_OUT, X.XFRM_POLICY_IN, X.XFRM_POLICY_FWD):
            ch.request(X.delpolicy(sels[0], direction), "delete")
    assert _ip(lab, lab.a, "xfrm", "policy").strip() == ""


def test_kernel_error_carries_the_kernel_message(lab):
    sel = selectors([TrafficSelector.from_network("10.198.1.0/24")],
                    [TrafficSelector.from_network("10.198.2.0/24")])[0]
    with NetlinkChannel(NETLINK_XFRM, netns=lab.a.name) as ch, pytest.raises(NetlinkError) as err:
        ch.request(X.delpolicy(sel, X.XFRM_POLICY_OUT), "delete a policy that is not there")
    assert err.value.errno == 2  # ENOENT
    assert "delete a policy that is not there" in str(err.value)


def test_routes_follow_the_path_to_the_peer(lab):
    net = ipaddress.ip_network("10.198.2.0/24")
    with NetlinkChannel(NETLINK_ROUTE, netns=lab.a.name) as ch:
        path = rtnl.route_to(ch, ipaddress.ip_address("10.98.0.2"))
        assert path.gateway is None and path.oif == rtnl.link_index(ch, "oxfh-a0")
        assert ipaddress.ip_address("10.198.1.1") in rtnl.local_addresses(ch)
        local = [TrafficSelector.from_network("10.198.1.0/24")]
        assert rtnl.local_sources(ch, local) == {4: ipaddress.ip_address("10.198.1.1"), 6: None}
        rtnl.add_route(ch, net, path, ipaddress.ip_address("10.198.1.1"))
        shown = _ip(lab, lab.a, "route")
        assert "10.198.2.0/24 dev oxfh-a0 proto static src 10.198.1.1" in shown, shown
        rtnl.del_route(ch, net, path.oif)
        assert "10.198.2.0" not in _ip(lab, lab.a, "route")
        with pytest.raises(NetlinkError):  # a route that is not there is the kernel's error
            rtnl.del_route(ch, net)


def test_shared_routes_leave_with_their_last_user(lab):
    """Two CHILD_SAs with the same remote selector share one route (a rekey overlaps the old
    CHILD_SA with the new one): it goes into the kernel once and out with the last user."""
    net = ipaddress.ip_network("10.198.2.0/24")
    with NetlinkChannel(NETLINK_ROUTE, netns=lab.a.name) as ch:
        routes = rtnl.Routes(ch)
        path = rtnl.route_to(ch, ipaddress.ip_address("10.98.0.2"))
        routes.add(net, path, ipaddress.ip_address("10.198.1.1"))
        routes.add(net, path, ipaddress.ip_address("10.198.1.1"))
        routes.remove(net)
        assert "10.198.2.0/24 dev oxfh-a0 proto static src 10.198.1.1" in _ip(lab, lab.a, "route")
        routes.remove(net)
        assert "10.198.2.0" not in _ip(lab, lab.a, "route")
        routes.add(net, path)
        _ip(lab, lab.a, "route", "del", str(net))  # gone behind our back: no error
        routes.remove(net)
        assert net not in routes


def test_links_are_configured_by_index(lab):
    """What the TUN set-up (esp/tun.py) sends: MTU, queue length, GSO size and state."""
    with NetlinkChannel(NETLINK_ROUTE, netns=lab.a.name) as ch:
        index = rtnl.link_index(ch, "oxfh-a0")
        rtnl.set_link(ch, index, mtu=1280, txqlen=4096, gso_max_size=8192, up=False)
        shown = _ip(lab, lab.a, "-d", "link", "show", "oxfh-a0")
        assert "mtu 1280" in shown and "qlen 4096" in shown and "gso_max_size 8192" in shown
        assert "state DOWN" in shown, shown
        rtnl.set_link(ch, index, mtu=1500, up=True)
        shown = _ip(lab, lab.a, "link", "show", "oxfh-a0")
        assert "mtu 1500" in shown and "UP" in shown.split(">")[0], shown
        with pytest.raises(NetlinkError) as err:
            rtnl.link_index(ch, "oxfh-none")
        assert err.value.errno == 19  # ENODEV


def test_udp_encap_socket_and_ike_bypass(lab):
    """What attach_udp_encap does to the daemon's 4500 socket works on this kernel."""
    from pyroute2.netns import create_socket

    from ocfpy.esp.dataplane.xfrm import SOL_UDP, UDP_ENCAP, bypass_socket

    for family, addr in ((socket.AF_INET, "10.98.0.1"), (socket.AF_INET6, "::")):
        sock = create_socket(netns=lab.a.name, family=family, socket_type=socket.SOCK_DGRAM,
                             flags=0)
        try:
            sock.bind((addr, 4500))
            sock.setsockopt(SOL_UDP, UDP_ENCAP, X.UDP_ENCAP_ESPINUDP)
            assert sock.getsockopt(SOL_UDP, UDP_ENCAP) == X.UDP_ENCAP_ESPINUDP
            bypass_socket(sock)
        finally:
            sock.close()
