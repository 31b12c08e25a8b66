"""The namespace lab builds what it says and removes all of it, also when the body fails."""

from __future__ import annotations

import pytest

from ocfpy.lab.netlab import Lab, LabError, can_build_lab, two_hosts

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
