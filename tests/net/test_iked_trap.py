"""Trap policies with the userspace dataplane (issue 16): two `ocfpy iked` daemons in two
namespaces; a has start_action = "trap", b is a plain responder. The first ping through the
trapped selector brings the tunnel up and is itself answered (held in the trap's queue and
released through the new CHILD_SA); the second passes; a burst while the peer is away fills
the queue (the rest dropped and counted) and what was held expires; the trap outlives a
failed negotiation; a reload that drops start_action = trap removes it."""

from __future__ import annotations

import pytest

from ocfpy.lab.netlab import can_build_lab

pytestmark = pytest.mark.net

_why = can_build_lab()
if _why:
    pytest.skip(f"namespace lab unavailable: {_why}", allow_module_level=True)
pytest.importorskip("ocfpy.esp.dataplane.userspace", reason="no userspace dataplane")

from ike_harness import config, ike_lab, wait_for  # noqa: E402

IKE, ESP = "aes128gcm16-prfsha256-x25519", "aes128gcm16"
PING = ["ping", "-n", "-I", "10.177.1.1", "10.177.2.1"]


def _trap(pair) -> dict | None:
    [conn] = pair.a.call("list-conns")
    return conn["children"][0]["trap"]


def test_first_ping_brings_the_trapped_tunnel_up_and_is_answered():
    with ike_lab("otp") as pair:
        a_conf = config(0, proposals=[IKE], esp=[ESP], dataplane="userspace",
                        child_options={"start_action": "trap"},
                        daemon_options={"trap_queue": 2, "trap_hold": "2s"})
        pair.a.start(a_conf, timeout=60)
        pair.b.start(config(1, proposals=[IKE], esp=[ESP], dataplane="userspace"), timeout=60)
        trap = _trap(pair)
        assert trap is not None and trap["installed_by"] == "start_action", trap
        assert trap["remote_ts"] == ["10.177.2.0/24"] and trap["acquires"] == 0
        assert pair.a.sas() == [] and pair.b.sas() == []  # nothing negotiated before a packet

        # the first ping: held by the trap, acquires, released through the new CHILD_SA
        first = pair.lab.run(pair.a.ns, [*PING, "-c", "1", "-W", "15"], timeout=30)
        assert first.returncode == 0, (first.stdout, _trap(pair), pair.a.sas(), pair.b.sas())
        [sa] = pair.a.established()
        assert sa["name"] == "t" and [c["name"] for c in sa["children"]] == ["net"]
        trap = _trap(pair)
        assert trap["acquires"] == 1, trap
        assert trap["dataplane"]["released"] == 1 and trap["dataplane"]["holding"] == 0, trap
        # the second passes straight through the CHILD_SA; the trap sees nothing
        second = pair.lab.run(pair.a.ns, [*PING, "-c", "2", "-i", "0.2", "-W", "5"], timeout=30)
        assert second.returncode == 0 and " 0% packet loss" in second.stdout, second.stdout
        assert _trap(pair)["acquires"] == 1

        # our own terminate: the trap stays; with b gone the next burst fills the queue
        assert pair.a.sa_cli("terminate", "t").returncode == 0
        wait_for(lambda: not pair.a.sas(), 10, "a's SAs are gone")
        pair.b.kill9()
        burst = pair.lab.run(pair.a.ns, [*PING, "-c", "6", "-i", "0.05", "-W", "1"], timeout=30)
        assert burst.returncode != 0  # nobody answers: b is gone
        dp = wait_for(lambda: (d := _trap(pair)["dataplane"]).get("dropped_timeout")
                      and not d["holding"] and d, 15, "the held packets expire")
        assert dp["queued"] == 1 + 2 and dp["dropped_full"] == 4, dp  # 2 held, 4 over the bound
        assert dp["dropped_timeout"] == 2 and dp["holding"] == 0, dp
        assert _trap(pair)["acquires"] >= 2  # one per burst (at most one per second)

        # the trap outlives the failed negotiation: b back, the next ping brings it up again
        pair.b.start(pair.b.config_text, timeout=60)
        wait_for(lambda: not [s for s in pair.a.sas() if s.get("state") != "established"],
                 30, "a's failed attempt is over")
        again = pair.lab.run(pair.a.ns, [*PING, "-c", "3", "-i", "0.5", "-W", "10"],
                             timeout=40)
        assert again.returncode == 0, again.stdout + pair.logs()
        assert len(pair.a.established()) == 1

        # a reload that drops start_action = trap removes the trap (the SA keeps running)
        pair.a.conf_path.write_text(a_conf.replace('start_action = "trap"',
                                                   'start_action = "none"'))
        assert pair.a.sa_cli("reload").returncode == 0
        assert _trap(pair) is None
        assert "trap t/net removed" in pair.a.log()
