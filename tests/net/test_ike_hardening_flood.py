"""Issue 13 under load, with the real daemon: a flood of spoofed IKE_SA_INIT requests from
many source addresses while a legitimate peer connects. Root and namespaces: run it under
the shared lock (flock /tmp/ocfpy-root-lane.lock ...).

The forger here is deliberately simple (a raw IPv4 socket in the peer's namespace writing
UDP datagrams with source addresses from 10.78.0.0/22); the attacker lane brings a fuller
one. The figures (half-open peak, RSS growth, legitimate setup time) are printed; run with
-s to see them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ocfpy.lab.netlab import can_build_lab

pytestmark = pytest.mark.net

_why = can_build_lab()
if _why:
    pytest.skip(f"namespace lab unavailable: {_why}", allow_module_level=True)

from ike_harness import OUTER, Pair, config, ike_lab, wait_for  # noqa: E402

IKE, ESP = "aes128gcm16-prfsha256-x25519", "aes128gcm16"
FLOOD_PACKETS = 20_000
FLOOD_SOURCES = 1_000
FLOOD_SECONDS = 10.0
RSS_BOUND_KB = 40 * 1024  # the daemon may grow by at most this much during the flood

FORGER = textwrap.dedent("""
    import ipaddress, os, socket, struct, sys, time
    from ocfpy.ike.codec.message import Message, encode
    from ocfpy.ike.codec.payloads import KePayload, NoncePayload, SaPayload
    from ocfpy.ike.constants import ExchangeType
    from ocfpy.ike.proposals import parse_ike, to_raw

    dst, packets, sources, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    prop = to_raw(parse_ike("{ike}"), 1)
    def init(spi):
        m = Message(spi, bytes(8), ExchangeType.IKE_SA_INIT, 0, False, True,
                    [SaPayload([prop]), KePayload(31, os.urandom(32)), NoncePayload(os.urandom(32))])
        return encode(m)
    template = init(b"\\x00" * 8)
    base = int(ipaddress.ip_address("10.78.0.1"))
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    daddr = socket.inet_aton(dst)
    start = time.monotonic()
    sent = 0
    for i in range(packets):
        src = struct.pack("!I", base + i % sources)
        ike = os.urandom(8) + template[8:]
        udp = struct.pack("!HHHH", 500 + i % 7, 500, 8 + len(ike), 0) + ike
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, daddr)
        try:
            s.sendto(ip + udp, (dst, 0))
            sent += 1
        except OSError:
            pass
        due = start + seconds * (i + 1) / packets
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print(sent, round(time.monotonic() - start, 2))
""")


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def pair():
    with ike_lab("oih") as p:
        yield p


def _responder_for_anyone() -> str:
    """a's config plus a connection that takes IKE_SA_INITs from any address (a road-warrior
    responder): the flood can then cost state, which is what the limits must bound."""
    from ocfpy.lab.iked_toml import config_toml, connection_table

    anyone = connection_table("anyone", local_addr=OUTER[0], remote_addr="%any",
                              local_id="a.oid.example", remote_id="rw.oid.example",
                              proposals=[IKE], esp_proposals=[ESP],
                              children={"net": (["10.177.1.0/24"], ["dynamic"])})
    return config(0, proposals=[IKE], esp=[ESP]) + "\n" + config_toml(anyone)


def test_flood_of_spoofed_inits_while_a_peer_connects(pair: Pair):
    pair.a.start(_responder_for_anyone())
    pair.b.start(config(1, proposals=[IKE], esp=[ESP],
                        retransmit={"timeout": 1.0, "tries": 5, "base": 1.4}))
    # replies to the spoofed sources go back towards b (which drops them): no strict
    # reverse-path check can then refuse the forged packets either
    pair.lab.run(pair.a.ns, ["ip", "route", "add", "10.78.0.0/16", "via", OUTER[1]], check=True)
    stats0 = pair.a.stats()
    pid = stats0["pid"]
    rss0 = _rss_kb(pid)
    forger = subprocess.Popen(
        ["ip", "netns", "exec", pair.b.ns.name, sys.executable, "-c",
         FORGER.replace("{ike}", IKE), OUTER[0], str(FLOOD_PACKETS), str(FLOOD_SOURCES),
         str(FLOOD_SECONDS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)  # the flood is on
        t0 = time.monotonic()
        sa = pair.b.call("initiate", name="t", wait=20, timeout=30)
        setup = time.monotonic() - t0
        peak_rss = _rss_kb(pid)
        out, err = forger.communicate(timeout=60)
    finally:
        if forger.poll() is None:
            forger.kill()
            forger.wait()
    assert forger.returncode == 0, err
    sent, took = out.split()
    rss1 = max(peak_rss, _rss_kb(pid))
    wait_for(lambda: pair.a.stats()["half_open"]["now"] <= 1, 10, "half-open SAs expire")
    stats = pair.a.stats()
    eng = stats["engine"]
    figures = {
        "flood_sent": int(sent), "flood_seconds": float(took),
        "received": eng.get("received", 0) - stats0["engine"].get("received", 0),
        "cookies_sent": eng.get("cookies_sent", 0),
        "half_open_peak": stats["half_open"]["peak"], "half_open_limit": stats["half_open"]["limit"],
        "dropped_half_open_limit": eng.get("dropped_half_open_limit", 0),
        "half_open_timeouts": eng.get("half_open_timeouts", 0),
        "rss_kb_before": rss0, "rss_kb_after": rss1, "rss_growth_kb": rss1 - rss0,
        "legit_setup_s": round(setup, 2),
    }
    print("\nflood figures:", json.dumps(figures))
    assert sa["state"] == "established", pair.logs()
    assert pair.a.established(), pair.logs()
    assert "COOKIE" in pair.b.log(), "the legitimate peer never met a COOKIE: no load?"
    assert eng.get("init_refused", 0) == 0  # every forged request matched "anyone"
    # the legitimate peer had to answer a COOKIE: the flood had COOKIEs in force
    assert eng.get("cookies_sent", 0) > FLOOD_PACKETS // 4, figures
    assert figures["half_open_peak"] <= figures["half_open_limit"], figures
    assert figures["rss_growth_kb"] < RSS_BOUND_KB, figures
    assert int(sent) >= FLOOD_PACKETS * 0.95 and float(took) < FLOOD_SECONDS * 2, figures


def test_userspace_dataplane_survives_a_65kb_ike_datagram_and_dead_workers():
    """Finding 3: one ~65 KB IKE datagram to UDP 4500 used to kill the dataplane's reader.
    Now it is carried whole (and refused by the engine for its size), the reader lives, and
    when the workers are killed the watchdog restarts them with the SA: traffic flows again,
    NAT-T IKE still reaches the engine (b's Delete ends a's SA), `sa stats` counts it all."""
    import argparse
    import os
    import signal

    from ocfpy.cli.demo import INNER_HOSTS, Gateways
    from ocfpy.cli.demo import OUTER as DEMO_OUTER

    opts = argparse.Namespace(crypto_backend="openssl", calibration=None, proposal=None,
                              esp_proposal=["aes128gcm16"], dataplane="userspace", encap=True)
    sender = textwrap.dedent("""
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        dst = (sys.argv[1], 4500)
        s.sendto(b"\\x00\\x00\\x00\\x00" + b"\\x21" * 65000, dst)  # IKE (non-ESP marker)
        s.sendto(b"\\x21" * 65004, dst)  # no marker: ESP with an unknown SPI
    """)

    def ping(gw) -> bool:
        out = gw.lab.run(gw.a, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "-I",
                                INNER_HOSTS[0], INNER_HOSTS[1]], timeout=20)
        return out.returncode == 0

    with Gateways(opts, "oihd") as gw:
        gw.establish()
        assert ping(gw), gw.log_tail("a")
        out = gw.lab.run(gw.b, [sys.executable, "-c", sender, DEMO_OUTER[0]], timeout=20)
        assert out.returncode == 0, out.stderr
        wait_for(lambda: gw.call("a", "stats")["engine"].get("dropped_too_large", 0) >= 1, 10,
                 "the 65 KB IKE datagram reaches the engine (and is refused for its size)",
                 on_fail=lambda: gw.log_tail("a"))
        st = gw.call("a", "stats")
        dp = st["dataplane_stats"]
        assert dp.get("channel_truncated", 0) == 0 and dp.get("channel_errors", 0) == 0, dp
        assert ping(gw), gw.log_tail("a")
        # kill both ESP workers of daemon a: the watchdog brings them back with the SA
        workers = subprocess.run(["ps", "--ppid", str(st["pid"]), "-o", "pid="],
                                 capture_output=True, text=True).stdout.split()
        assert len(workers) == 2, workers
        for pid in workers:
            os.kill(int(pid), signal.SIGKILL)
        wait_for(lambda: gw.call("a", "stats")["dataplane_stats"].get("worker_restarts", 0)
                 == 2, 15, "both workers restarted", on_fail=lambda: gw.log_tail("a"))
        assert ping(gw), gw.log_tail("a")
        (sa,) = gw.call("a", "list")
        assert sa["state"] == "established"
        gw.call("b", "terminate", name="demo")  # its Delete arrives on a's UDP 4500
        wait_for(lambda: not gw.call("a", "list"), 10, "a's SA deleted by b's Delete",
                 on_fail=lambda: gw.log_tail("a"))
