"""Two real `ocfpy iked` daemons with ``--dataplane xfrm`` in two namespaces (the VM lane).

IKE negotiates, the daemon installs the CHILD_SA through XfrmDataplane, and the kernel
carries the traffic: ping and a TCP transfer between the inner addresses, only ESP leaves
either host, `ip xfrm state` shows the negotiated algorithms, `sa list` shows the kernel's
counters, a delete removes the kernel state, and SIGTERM leaves nothing behind. Mixed: one
daemon on the kernel, the other on the userspace dataplane, over ESP-in-UDP (NAT-T).

The harness (two daemons, configs, control socket) is the IKE daemon's own,
tests/net/ike_harness.py, with this lane's name prefix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

pytest.importorskip("ocfpy.ike.engine", reason="the IKE engine (branch ike-core) is not merged")

from ocfpy.lab.netlab import tcp_transfer  # noqa: E402
from tests.kernel.test_xfrm import _needs_af_alg, _no_kernel_esp  # noqa: E402,F401 - the skip
from tests.net import ike_harness as H  # noqa: E402

IKE, ESP = "aes256gcm16-prfsha384-ecp384", "aes256gcm16"
INNER_A, INNER_B = "10.177.1.1", "10.177.2.1"


@pytest.fixture
def pair():
    with H.ike_lab("oxd") as pair:  # this lane's namespaces: oxd-a, oxd-b
        yield pair


def _start(pair, *, dataplanes=("xfrm", "xfrm"), encap: bool = False) -> None:
    for side, d in ((0, pair.a), (1, pair.b)):
        text = H.config(side, proposals=[IKE], esp=[ESP], dataplane=dataplanes[side])
        if encap:
            text = text.replace("keyingtries = 1", "keyingtries = 1\nencap = true")
        d.start(text, timeout=240)  # VM lane: pyroute2's import alone takes 20-35 s there


def _ip(pair, ns, *args: str) -> str:
    return pair.lab.run(ns, ["ip", *args], check=True).stdout


def _kernel_policies(pair, ns) -> str:
    blocks = _ip(pair, ns, "xfrm", "policy").replace("\n\t", "\t").splitlines()
    return "\n".join(b for b in blocks if "\tsocket " not in b).strip()


def _ping(pair, count: int = 3):
    return pair.lab.run(pair.a.ns, ["ping", "-c", str(count), "-i", "0.2", "-W", "2", "-I",
                                    INNER_A, INNER_B], timeout=30)


def test_two_daemons_on_kernel_esp(pair, tmp_path):
    _start(pair)
    assert pair.b.call("initiate", name="t", wait=30, timeout=40)["state"] == "established"
    H.wait_for(pair.a.established, 10, "a established", on_fail=pair.logs)
    for d in (pair.a, pair.b):
        state = _ip(pair, d.ns, "xfrm", "state")
        assert state.count("proto esp") == 2, state + pair.logs()
        assert "aead rfc4106(gcm(aes))" in state and "mode tunnel" in state
        assert "dir fwd" in _kernel_policies(pair, d.ns)

    cap = None
    if shutil.which("tcpdump"):
        pcap = tmp_path / "a-out.pcap"
        cap = pair.lab.popen(pair.a.ns, ["tcpdump", "-i", f"{pair.a.ns.name}0", "-Q", "out",
                                         "-U", "-n", "-w", str(pcap)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not pcap.exists() or pcap.stat().st_size == 0:
            assert time.monotonic() < deadline, "tcpdump did not start"
            time.sleep(0.1)
    ping = _ping(pair, 5)
    assert ping.returncode == 0, ping.stdout + ping.stderr + pair.logs()
    transfer = tcp_transfer(pair.lab, pair.a.ns, INNER_A, pair.b.ns, INNER_B, 2 * 10**6,
                            timeout=120)
    assert transfer.ok, (transfer.sent, transfer.received)
    if cap is not None:
        time.sleep(0.3)
        pair.lab.stop(cap)
        out = subprocess.run(["tcpdump", "-r", str(pcap), "-n", "not arp and not ip6"],
                             capture_output=True, text=True, timeout=60).stdout.splitlines()
        assert len(out) > 2 * 10**6 // 1500
        assert all(" ESP" in line or ".500 " in line or ".4500 " in line for line in out), \
            [ln for ln in out if " ESP" not in ln][:5]

    child = pair.b.sas()[0]["children"][0]
    counters = child["dataplane"]
    assert counters["name"] == "xfrm", child
    assert counters["packets_in"] > 2 * 10**6 // 1500 and counters["bytes_in"] > 2 * 10**6
    assert counters["auth_failures"] == 0 and counters["replay_drops"] == 0
    assert counters["drivers"]["in"].startswith("kernel:")

    pair.a.call("terminate", name="t")
    H.wait_for(lambda: not pair.a.sas() and not pair.b.sas(), 10, "deleted", on_fail=pair.logs)
    for d in (pair.a, pair.b):
        H.wait_for(lambda d=d: _ip(pair, d.ns, "xfrm", "state").strip() == "", 5,
                   f"{d.name}'s kernel states removed")
        assert _kernel_policies(pair, d.ns) == ""
    assert _ping(pair, 1).returncode != 0  # the routes went with the CHILD_SA

    # up again, then SIGTERM: each daemon deletes its SAs and leaves no kernel state
    assert pair.a.call("initiate", name="t", wait=30, timeout=40)["state"] == "established"
    assert _ping(pair, 2).returncode == 0
    for d in (pair.a, pair.b):
        assert d.stop() == 0, d.log()[-2000:]
        assert _ip(pair, d.ns, "xfrm", "state").strip() == "", d.log()[-2000:]
        assert _ip(pair, d.ns, "xfrm", "policy").strip() == ""  # socket bypass went too
        assert "10.177." not in _ip(pair, d.ns, "route")


def test_kernel_and_userspace_daemons_over_nat_t(pair):
    if not os.path.exists("/dev/net/tun"):
        subprocess.run(["modprobe", "tun"], capture_output=True, timeout=30)
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("no TUN device for the userspace side")
    # The TUN set-up once ran on a helper thread with a 10 s limit that pyroute2's first import
    # in the guest (20-35 s) could eat, and was let off here with an xfail; it is now a plain
    # netlink request on the daemon's own thread (esp/netlink.py), so it must just work.
    _start(pair, dataplanes=("xfrm", "userspace"), encap=True)
    assert pair.a.call("initiate", name="t", wait=30, timeout=40)["state"] == "established"
    child = H.wait_for(pair.b.established, 10, "b established", on_fail=pair.logs)[0]
    assert child["children"][0]["encap"] is True
    state = _ip(pair, pair.a.ns, "xfrm", "state")
    assert "encap type espinudp sport 4500 dport 4500" in state, state
    ping = _ping(pair, 3)
    assert ping.returncode == 0, ping.stdout + ping.stderr + pair.logs()
    transfer = tcp_transfer(pair.lab, pair.a.ns, INNER_A, pair.b.ns, INNER_B, 10**6,
                            timeout=120)
    assert transfer.ok
    kernel = pair.a.sas()[0]["children"][0]["dataplane"]
    user = pair.b.sas()[0]["children"][0]["dataplane"]
    assert kernel["name"] == "xfrm" and user["name"] == "userspace"
    assert user["packets_in"] >= 3 + 10**6 // 1500 and kernel["packets_in"] >= 3
    # IKE still reaches the kernel side's daemon on its UDP_ENCAP socket: a DPD-like round
    assert pair.b.call("terminate", name="t") is not None
    H.wait_for(lambda: not pair.a.sas(), 10, "a saw the delete over 4500", on_fail=pair.logs)
    H.wait_for(lambda: _ip(pair, pair.a.ns, "xfrm", "state").strip() == "", 5, "states gone")


def test_rekey_soak_on_kernel_esp_loses_nothing(pair):
    """Issue 18's soak on the XFRM dataplane, shorter (the guest is slow): CHILD_SA rekeys
    every 2.5 s, IKE SA rekeys every 10 s, from a, then b, then both at once, under 50
    pings a second and a TCP stream; no ping lost, the stream intact, no replay drop.
    OCFPY_SOAK_SECONDS_VM sets the length (default 40 s)."""
    from ocfpy.lab.soak import RekeyDriver, Soak

    seconds = float(os.environ.get("OCFPY_SOAK_SECONDS_VM", "40"))
    for side, d in ((0, pair.a), (1, pair.b)):
        d.start(H.config(side, proposals=[IKE], esp=[ESP + "-ecp384"], dataplane="xfrm"),
                timeout=240)
    assert pair.a.call("initiate", name="t", wait=30, timeout=40)["state"] == "established"
    H.wait_for(lambda: pair.b.established(), 20, "b sees the IKE SA")

    def rekey(d, kind):
        return lambda: d.call("rekey", name="t", kind=kind, timeout=30)

    soak = Soak(pair.a.ns.name, INNER_A, pair.b.ns.name, INNER_B, seconds, tcp_rate=50_000)
    driver = RekeyDriver({(s, k): rekey(d, k) for s, d in (("a", pair.a), ("b", pair.b))
                          for k in ("child", "ike")}, seconds, result=soak.result)
    try:
        r = soak.run(driver)
    finally:
        soak.stop()
    report = f"{r.summary()}\nrekey errors: {r.rekey_errors[:5]}"
    print(report)
    assert r.rekeys["a/child"] and r.rekeys["b/child"], report
    assert r.pings_lost == 0, report + "\n" + pair.logs()
    assert r.tcp_intact, report
    for d in (pair.a, pair.b):
        assert d.stats()["daemon"].get("sa_replay_drops", 0) == 0, report
        for sa in d.established():
            for c in sa.get("children", []):
                assert c.get("dataplane", {}).get("replay_drops", 0) == 0, (c, report)
