"""The dataplane as the IKE daemon drives it: inside an asyncio program, sharing the daemon's
UDP 4500 socket (IKE datagrams come back to the loop thread, marker stripped; keepalives are
swallowed), with lifetime limits that raise soft then hard events and remove the SA."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from ocfpy.esp.static import StaticTunnel
from ocfpy.netlab import Lab, can_build_lab, two_hosts

pytestmark = pytest.mark.net

why = can_build_lab()
if why:
    pytest.skip(f"namespace lab unavailable: {why}", allow_module_level=True)

A, B = StaticTunnel.OUTER
IA, IB = StaticTunnel.INNER

# Plays the daemon on side b.
_DAEMON_SIDE = r"""
import asyncio, json, socket, sys, threading
from ocfpy.dispatcher import Dispatcher
from ocfpy.esp.dataplane.userspace import UserspaceDataplane
from ocfpy.esp.static import static_spec

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
        peer = lab.popen(a, [sys.executable, "-m", "ocfpy.esp.static", "--side", "a",
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
    assert 8 <= received <= 10, ping.stdout  # replies stop once the SA is used up
