"""Trap policies on the kernel dataplane (issue 16, the VM lane): a has start_action = "trap"
with ``--dataplane xfrm``; the kernel's XFRM_MSG_ACQUIRE for the first ping (XFRMNLGRP_ACQUIRE)
brings the tunnel up; the kernel drops that ping (xfrm_larval_drop = 1, as with charon) and the
next ones pass. The trap's policy is in the kernel before any SA, the CHILD_SA's template
replaces it while it is up, and it is back (and acquires again) once the CHILD_SA is gone."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("ocfpy.ike.engine", reason="the IKE engine is not merged")

from tests.kernel.test_xfrm import _needs_af_alg, _no_kernel_esp  # noqa: E402,F401 - the skip
from tests.net import ike_harness as H  # noqa: E402

IKE, ESP = "aes256gcm16-prfsha384-ecp384", "aes256gcm16"
PING = ["ping", "-n", "-I", "10.177.1.1", "10.177.2.1"]


@pytest.fixture
def pair():
    with H.ike_lab("oxt") as pair:
        yield pair


def _trap(pair) -> dict | None:
    [conn] = pair.a.call("list-conns")
    return conn["children"][0]["trap"]


def test_kernel_acquire_brings_the_trapped_tunnel_up(pair):
    # under TCG an IKE_AUTH answer took over 4 s (measured): patient retransmits, and
    # keyingtries = 0 so that an acquire's negotiation keeps trying
    patient = {"timeout": 5, "tries": 4, "base": 1.5}
    pair.a.start(H.config(0, proposals=[IKE], esp=[ESP], dataplane="xfrm", keyingtries=0,
                          retransmit=patient, child_options={"start_action": "trap"}),
                 timeout=240)
    pair.b.start(H.config(1, proposals=[IKE], esp=[ESP], dataplane="xfrm",
                          retransmit=patient), timeout=240)
    policies = pair.lab.run(pair.a.ns, ["ip", "xfrm", "policy"], check=True).stdout
    assert "dir out" in policies and "10.177.2.0/24" in policies, policies
    assert pair.lab.run(pair.a.ns, ["ip", "xfrm", "state"], check=True).stdout.strip() == ""
    assert _trap(pair)["installed_by"] == "start_action"
    assert pair.a.sas() == []

    # the first packet: the kernel's ACQUIRE; the tunnel comes up by itself
    pair.lab.run(pair.a.ns, [*PING, "-c", "1", "-W", "1"], timeout=20)
    H.wait_for(pair.a.established, 180, "the acquire brings the tunnel up", on_fail=pair.logs)
    trap = _trap(pair)
    assert trap["acquires"] == 1 and trap["dataplane"]["acquires"] == 1, trap
    assert "hit trap t/net" in pair.a.log()
    second = pair.lab.run(pair.a.ns, [*PING, "-c", "3", "-i", "0.2", "-W", "5"], timeout=30)
    assert second.returncode == 0 and " 0% packet loss" in second.stdout, \
        second.stdout + pair.logs()

    # our terminate: the CHILD_SA goes, the trap's template is back, the next ping acquires
    pair.a.call("terminate", name="t")
    H.wait_for(lambda: not pair.a.sas(), 60, "terminated", on_fail=pair.logs)
    time.sleep(0.2)
    assert "dir out" in pair.lab.run(pair.a.ns, ["ip", "xfrm", "policy"], check=True).stdout
    pair.lab.run(pair.a.ns, [*PING, "-c", "1", "-W", "1"], timeout=20)
    H.wait_for(pair.a.established, 180, "up again by the trap", on_fail=pair.logs)
    assert _trap(pair)["acquires"] == 2
    assert pair.lab.run(pair.a.ns, [*PING, "-c", "2", "-i", "0.2", "-W", "5"],
                        timeout=30).returncode == 0

    # SIGTERM: the trap's policy goes with everything else
    assert pair.a.stop() == 0
    left = pair.lab.run(pair.a.ns, ["ip", "xfrm", "policy"], check=True).stdout
    assert "10.177.2.0/24" not in left, left
