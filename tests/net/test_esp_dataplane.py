"""The dataplane as the IKE daemon drives it: inside an asyncio program, sharing the daemon's
UDP 4500 socket (IKE datagrams come back to the loop thread, marker stripped; keepalives are
swallowed), with lifetime limits that raise soft then hard events and remove the SA."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ocfpy.lab.netlab import Lab, can_build_lab, two_hosts
from ocfpy.lab.static_tunnel import StaticTunnel

pytestmark = pytest.mark.net

why = can_build_lab()
if why:
    pytest.skip(f"namespace lab unavailable: {why}", allow_module_level=True)

A, B = StaticTunnel.OUTER
IA, IB = StaticTunnel.INNER

# Plays the daemon on side b.
_DAEMON_SIDE = r"""
import asyncio, json, socket, sys, threading
from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.esp.dataplane.userspace import UserspaceDataplane
from ocfpy.lab.static_tunnel import static_spec

async def main():
    loop = asyncio.get_running_loop()
    dp = UserspaceDataplane(Dispatcher(), tun_name="oes-tun0")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("@B@", 4500)); sock.setblocking(False)
    ike = loop.create_future()
    events = []
    hard = loop.create_future()
    def on_ike(data, addr):
        if not ike.done():
            ike.set_result((data, addr, threading.current_thread() is threading.main_thread()))
    def on_event(e):
        events.append([e.unique_id, e.kind, e.reason])
        if e.kind == "hard" and not hard.done():
            hard.set_result(None)
    assert dp.attach_udp_encap(sock, on_ike) is True
    dp.set_event_handler(on_event)
    spec = static_spec("b", local="@B@", remote="@A@", local_ts=["@IB@/32"],
                       remote_ts=["@IA@/32"], seed=sys.argv[1], encap=True,
                       lifetime_packets=10, unique_id=7)
    dp.install(spec)
    print("ready", flush=True)
    data, addr, on_loop_thread = await asyncio.wait_for(ike, 20)
    sock.sendto(b"\0\0\0\0" + b"reply:" + data, addr)   # the daemon answers on the same socket
    await asyncio.wait_for(hard, 30)
    await asyncio.sleep(0.5)
    try:
        dp.counters(7)
        removed = False
    except KeyError:
        removed = True
    print(json.dumps({"ike": data.hex(), "on_loop_thread": on_loop_thread, "events": events,
                      "removed": removed, "stats": dp.stats()}), flush=True)
    dp.close()

asyncio.run(main())
"""

# Plays the peer's IKE on side a: one IKE message and one keepalive to b's port 4500.
_IKE_PEER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("@A@", 4501)); s.settimeout(10)
s.sendto(b"\xff", ("@B@", 4500))
s.sendto(b"\0\0\0\0" + b"IKE_SA_INIT-stand-in-28-bytes", ("@B@", 4500))
print(s.recv(2048).hex())
"""


def _fill(script: str) -> str:
    for key, value in (("@IA@", IA), ("@IB@", IB), ("@A@", A), ("@B@", B)):
        script = script.replace(key, value)
    return script


def test_daemon_socket_ike_demux_and_lifetimes(tmp_path):
    seed = "lifetimes"
    with Lab("oesd") as lab:
        a, b, _ = two_hosts(lab, outer=(f"{A}/24", f"{B}/24"), inner=(f"{IA}/32", f"{IB}/32"))
        daemon = lab.popen(b, [sys.executable, "-c", _fill(_DAEMON_SIDE), seed],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert daemon.stdout.readline().strip() == "ready", daemon.stderr.read()
        peer = lab.popen(a, [sys.executable, "-m", "ocfpy.lab.static_tunnel", "--side", "a",
                             "--local", A, "--remote", B, "--local-ts", f"{IA}/32",
                             "--remote-ts", f"{IB}/32", "--seed", seed, "--encap",
                             "--tun", "oes-tun0", "--ready", str(tmp_path / "a.ready")],
                         stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while not (tmp_path / "a.ready").exists():
            assert peer.poll() is None and time.monotonic() < deadline, peer.stderr.read()
            time.sleep(0.05)
        reply = lab.run(a, [sys.executable, "-c", _fill(_IKE_PEER)], timeout=20)
        assert reply.returncode == 0, reply.stderr
        assert bytes.fromhex(reply.stdout.strip()) == b"\0\0\0\0reply:IKE_SA_INIT-stand-in-28-bytes"
        # 10 packets in either direction use up the SA: 9 pass before the soft limit...
        ping = lab.run(a, ["ping", "-c", "14", "-i", "0.1", "-W", "1", "-I", IA, IB], timeout=30)
        out, err = daemon.communicate(timeout=30)
        assert daemon.returncode == 0, err
        result = json.loads(out.strip().splitlines()[-1])
    assert bytes.fromhex(result["ike"]) == b"IKE_SA_INIT-stand-in-28-bytes"
    assert result["on_loop_thread"] is True
    assert result["stats"]["keepalives"] == 1 and result["stats"]["ike_forwarded"] == 1
    kinds = [e[1] for e in result["events"]]
    assert kinds[0] == "soft" and "hard" in kinds, result["events"]
    assert all(e[0] == 7 for e in result["events"])
    assert result["removed"] is True
    received = int(ping.stdout.split(" received")[0].rsplit(" ", 1)[-1])
    # Replies stop once the SA is used up; under load a late reply counts as lost, so the
    # lower bound has slack.
    assert 5 <= received <= 10, ping.stdout


# Plays the daemon on side b with a driver that dies: test_flaky (real AES-GCM, preferred as
# "hardware") fails after 5 operations in each worker, so both directions move to openssl.
# Runs inside an asyncio loop, as the daemon does: install() and its routes must work there.
_MIGRATING_SIDE = r"""
import asyncio, json, os, sys, time
sys.path.insert(0, "@TESTDRIVERS@")
os.environ["OCFPY_TESTDRIVERS"] = "1"
import ocfpy_testdrivers
from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.esp.dataplane.userspace import UserspaceDataplane
from ocfpy.lab.static_tunnel import static_spec

async def main():
    dispatcher = Dispatcher()
    ocfpy_testdrivers.FAULTS.reset(fail_after=5)  # forked into each worker, counted there
    dp = UserspaceDataplane(dispatcher, tun_name="oes-tun0")
    spec = static_spec("b", local="@B@", remote="@A@", local_ts=["@IB@/32"],
                       remote_ts=["@IA@/32"], esp="aes256gcm16", seed=sys.argv[1],
                       unique_id=3)
    dp.install(spec)
    print(json.dumps(dp.counters(3).drivers), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    deadline = time.monotonic() + 5
    while set(dp.counters(3).drivers.values()) != {"openssl"} and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    print(json.dumps(vars(dp.counters(3))), flush=True)
    dp.close()

asyncio.run(main())
"""


def test_counters_name_the_driver_that_serves_the_sa_after_a_migration(tmp_path):
    """The driver of record (SaCounters.drivers) is the dispatcher session's driver as it is
    now: when the driver dies mid-stream the sessions move to the next driver, traffic goes
    on, and the counters say so for each direction."""
    testdrivers = Path(__file__).resolve().parents[2] / ".testdrivers"
    if not (testdrivers / "ocfpy_testdrivers").is_dir():
        pytest.skip("ocfpy-testdrivers not installed: run scripts/setup.sh")
    seed = "migrate"
    script = _fill(_MIGRATING_SIDE).replace("@TESTDRIVERS@", str(testdrivers))
    with Lab("oesm") as lab:
        a, b, _ = two_hosts(lab, outer=(f"{A}/24", f"{B}/24"), inner=(f"{IA}/32", f"{IB}/32"))
        daemon = lab.popen(b, [sys.executable, "-c", script, seed], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = daemon.stdout.readline()
        assert first, daemon.stderr.read()
        assert json.loads(first) == {"in": "test_flaky", "out": "test_flaky"}
        peer = lab.popen(a, [sys.executable, "-m", "ocfpy.lab.static_tunnel", "--side", "a",
                             "--local", A, "--remote", B, "--local-ts", f"{IA}/32",
                             "--remote-ts", f"{IB}/32", "--seed", seed, "--esp", "aes256gcm16",
                             "--tun", "oes-tun0", "--ready", str(tmp_path / "a.ready")],
                         stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while not (tmp_path / "a.ready").exists():
            assert peer.poll() is None and time.monotonic() < deadline, peer.stderr.read()
            time.sleep(0.05)
        ping = lab.run(a, ["ping", "-c", "12", "-i", "0.1", "-W", "2", "-I", IA, IB], timeout=40)
        out, err = daemon.communicate("go\n", timeout=30)
        assert daemon.returncode == 0, err
        counters = json.loads(out.strip().splitlines()[-1])
        lab.stop(peer)
    assert " 0% packet loss" in ping.stdout, ping.stdout + err
    assert counters["drivers"] == {"in": "openssl", "out": "openssl"}, err
    assert counters["packets_in"] == counters["packets_out"] == 12
    # one session per worker moved, each once (the dispatcher logs it in the worker)
    assert err.count("from test_flaky to openssl") == 2, err


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_leave_when_the_daemon_dies_and_survive_its_sigterm(tmp_path):
    """Workers ignore SIGTERM to the group (the daemon stops them in order) and exit on
    their own when the daemon vanishes (kill -9), instead of holding the TUN and sockets."""
    with Lab("oesk") as lab:
        a, b, _ = two_hosts(lab, outer=(f"{A}/24", f"{B}/24"), inner=(f"{IA}/32", f"{IB}/32"))
        proc = lab.popen(a, [sys.executable, "-m", "ocfpy.lab.static_tunnel", "--side", "a",
                             "--local", A, "--remote", B, "--local-ts", f"{IA}/32",
                             "--remote-ts", f"{IB}/32", "--seed", "k", "--tun", "oes-tun0",
                             "--ready", str(tmp_path / "ready")], stderr=subprocess.PIPE,
                         text=True)
        deadline = time.monotonic() + 20
        while not (tmp_path / "ready").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        workers = _children(proc.pid)
        assert len(workers) == 2
        import os
        import signal

        for w in workers:
            os.kill(w, signal.SIGTERM)
        time.sleep(0.5)
        assert all(_alive(w) for w in workers)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers)
        links = lab.run(a, ["ip", "-br", "link"]).stdout
        assert "oes-tun0" not in links  # the device went with the last fd
