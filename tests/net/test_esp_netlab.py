"""The namespace lab builds what it says and removes all of it, also when the body fails."""

from __future__ import annotations

import pytest

from ocfpy.lab.netlab import Lab, LabError, Namespace, can_build_lab, moon_and_sun, two_hosts

pytestmark = pytest.mark.net

why = can_build_lab()
if why:
    pytest.skip(f"namespace lab unavailable: {why}", allow_module_level=True)


def _netns() -> set[str]:
    from pyroute2 import netns

    return set(netns.listnetns())


def test_two_hosts_ping_and_cleanup_on_error():
    with pytest.raises(RuntimeError, match="boom"), Lab("oesl") as lab:
        a, b, pair = two_hosts(lab)
        assert {"oesl-a", "oesl-b"} <= _netns()
        assert lab.run(a, ["ping", "-c1", "-W2", "10.99.0.2"]).returncode == 0
        # the inner address of b is not reachable without a route: the lab adds none
        assert lab.run(a, ["ping", "-c1", "-W1", "10.199.2.1"]).returncode != 0
        sleeper = lab.popen(b, ["sleep", "60"])
        raise RuntimeError("boom")
    assert not {"oesl-a", "oesl-b"} & _netns()
    assert sleeper.poll() is not None


def test_names_are_checked():
    lab = Lab("oesl")
    try:
        with pytest.raises(LabError, match="longer than 15"):
            lab.name("a-very-long-suffix")
        with pytest.raises(LabError, match="prefix"):
            Lab("no spaces!")
    finally:
        lab.close()


def _root_links() -> set[str]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}


def test_moon_and_sun_are_gateways_that_know_their_addresses():
    # The pair the benchmarks and the interop lane stand on: each host knows its veth end,
    # outer and inner address and protected subnet, and runs commands without its lab.
    with moon_and_sun("oesp") as (moon, sun, link):
        assert {"oesp-moon", "oesp-sun"} <= _netns()
        assert (moon.outer, sun.outer) == ("10.97.0.1", "10.97.0.2")
        assert (moon.inner, sun.inner) == ("10.98.1.1", "10.98.2.1")
        assert (moon.inner_net, sun.inner_net) == ("10.98.1.0/24", "10.98.2.0/24")
        assert (moon.ifname, sun.ifname) == (link.a, link.b)
        assert f"inet {sun.inner}/32" in sun.run("ip", "-4", "addr", "show", "dev", "lo").stdout
        assert moon.run("ping", "-c1", "-W2", sun.outer).returncode == 0
        # new links (charon's TUN) come up without IPv6
        assert sun.run("sysctl", "-n", "net.ipv6.conf.default.disable_ipv6").stdout.strip() == "1"
    assert not {"oesp-moon", "oesp-sun"} & _netns()


def test_a_veth_that_cannot_move_is_not_left_in_the_root_namespace():
    with Lab("oesv") as lab:
        a = lab.namespace("a")
        gone = Namespace("oesv-gone")  # never created: moving the far end there fails
        with pytest.raises(LabError, match="cannot create veth pair"):
            lab.veth(a, "10.99.0.1/24", gone, "10.99.0.2/24")
        assert "oesv-gone0" in lab.root_links  # not moved: close() will delete the pair
    assert not {"oesv-a0", "oesv-gone0"} & _root_links()


def test_a_stale_veth_end_of_a_crashed_run_is_replaced():
    from pyroute2 import IPRoute

    with IPRoute() as ipr:  # what a run killed between `add` and the move leaves behind
        ipr.link("add", ifname="oesw-a0", kind="veth", peer={"ifname": "oesw-x"})
    try:
        with Lab("oesw") as lab:
            a, b, link = two_hosts(lab)
            assert link.a == "oesw-a0"
            assert lab.run(a, ["ping", "-c1", "-W2", "10.99.0.2"]).returncode == 0
    finally:
        leftover = {"oesw-a0", "oesw-x"} & _root_links()
        if leftover:
            with IPRoute() as ipr:
                for name in leftover:
                    ipr.link("del", index=ipr.link_lookup(ifname=name)[0])
    assert not leftover
