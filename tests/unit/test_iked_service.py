"""The daemon as a service (issue 16): sd_notify, [daemon.log], metrics and reload, on the real
daemon. No root: two daemons on 127.0.0.1 / 127.0.0.2 with high ports and dataplane "none";
systemd is played by a datagram socket the test owns (what systemd itself listens on)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("ocfpy.ike.engine", reason="the IKE engine is not merged")

OCFPY = str(Path(sys.executable).with_name("ocfpy"))
ADDRS = ("127.0.0.1", "127.0.0.2")
IDS = ("a.svc.example", "b.svc.example")


def _free_port(host: str, kind: int = socket.SOCK_DGRAM) -> int:
    s = socket.socket(socket.AF_INET, kind)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _conn(name: str, me: int, ports, subnet: int, rekey: str = "4h", child_extra: str = "",
          conn_extra: str = "") -> str:
    peer = 1 - me
    rekey, _, dpd = rekey.partition(",")  # "4h,1s": rekey_time, dpd_delay
    return f"""
[connections.{name}]
local_addrs = ["{ADDRS[me]}"]
remote_addrs = ["{ADDRS[peer]}"]
local_port = {ports[me][0]}
remote_port = {ports[peer][0]}
proposals = ["aes128gcm16-prfsha256-x25519"]
rekey_time = "{rekey}"
dpd_delay = "{dpd or '0s'}"
{conn_extra}
retransmit = {{ timeout = 0.5, tries = 2 }}
local = {{ id = "{name}.{IDS[me]}" }}
remote = {{ id = "{name}.{IDS[peer]}" }}

[connections.{name}.children.net]
local_ts = ["10.{subnet + me}.0.0/16"]
remote_ts = ["10.{subnet + peer}.0.0/16"]
esp_proposals = ["aes128gcm16"]
{child_extra}
"""


def _text(me: int, ports, control: Path, conns: dict[str, tuple],
          extra: str = "") -> str:
    head = f"""
[daemon]
crypto_backend = "openssl"
dataplane = "none"
listen = ["{ADDRS[me]}"]
port = {ports[me][0]}
port_nat_t = {ports[me][1]}
control_socket = "{control}"
{extra}
"""
    body = "".join(_conn(name, me, ports, *spec) for name, spec in conns.items())
    return head + body + '\n[secrets.ike]\nsecret = "svc-key"\n'


def _ports():
    return [(_free_port(a), _free_port(a)) for a in ADDRS]


# -- in process: the reload rules ------------------------------------------------------------
def _daemons(tmp_path: Path, ports, conns_a, conns_b):
    from ocfpy.crypto.dispatcher import Dispatcher
    from ocfpy.esp.dataplane.null import NullDataplane
    from ocfpy.ike.engine import IkeEngine
    from ocfpy.iked.configfile import load
    from ocfpy.iked.daemon import IkeDaemon

    dispatcher = Dispatcher(backend="openssl")
    out = []
    for me, conns in ((0, conns_a), (1, conns_b)):
        path = tmp_path / f"{me}.toml"
        path.write_text(_text(me, ports, tmp_path / f"{me}.sock", conns))
        conf = load(path)
        out.append(IkeDaemon(conf, IkeEngine(conf, dispatcher), NullDataplane(),
                             dispatcher=dispatcher, reloader=lambda path=path: load(path)))
    return out


async def _call(daemon, **line) -> dict:
    return await daemon.control.handle_line(json.dumps(line).encode())


def _sas(daemon) -> dict[str, dict]:
    return {sa["name"]: sa for sa in daemon.engine.sa_list()}


async def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:g}s")
        await asyncio.sleep(0.02)


def test_reload_adds_removes_replaces_and_leaves_the_rest(tmp_path):
    ports = _ports()
    before = {"keep": (20, "4h"), "change": (30, "4h"), "drop": (40, "4h")}
    a, b = _daemons(tmp_path, ports, before, {**before, "new": (50, "4h")})

    async def scenario():
        await a.start()
        await b.start()
        try:
            for name in before:
                answer = await _call(a, cmd="initiate", name=name, wait=10)
                assert answer["ok"], answer
            await _until(lambda: len(_sas(b)) == 3)
            old = _sas(a)
            old_conn = a.engine.sas.by_id(old["change"]["id"]).conn

            # a bad file changes nothing, and says file:line: key: reason
            path = tmp_path / "0.toml"
            good = path.read_text()
            path.write_text(good.replace('rekey_time = "4h"', 'rekey_time = "soon"', 1))
            bad = await _call(a, cmd="reload")
            assert not bad["ok"]
            assert f"{path}:" in bad["error"] and "connections.keep.rekey_time" in bad["error"]
            assert "nothing changed" in bad["error"], bad
            assert _sas(a) == old and set(a.config.connections) == set(before)

            path.write_text(_text(0, ports, tmp_path / "0.sock",
                                  {"keep": (20, "4h"), "change": (30, "2h"), "new": (50, "4h")}))
            answer = await _call(a, cmd="reload")
            assert answer["ok"], answer
            assert answer["result"] == {"added": ["new"], "removed": ["drop"],
                                        "changed": ["change"], "unchanged": ["keep"]}
            # removed: its IKE SA is deleted, and the peer hears of it
            await _until(lambda: "drop" not in _sas(a) and "drop" not in _sas(b))
            now = _sas(a)
            # unchanged and changed: the established SAs run on, same ids and SPIs
            for name in ("keep", "change"):
                assert now[name]["id"] == old[name]["id"]
                assert (now[name]["spi_i"], now[name]["spi_r"]) == (old[name]["spi_i"],
                                                                    old[name]["spi_r"])
                assert now[name]["children"] == old[name]["children"]
            # the changed connection's SA keeps the settings it was negotiated with; new SAs
            # of it take the new ones
            assert a.engine.sas.by_id(now["change"]["id"]).conn is old_conn
            assert a.config.connections["change"].rekey_time == 7200
            assert old_conn.rekey_time == 4 * 3600
            # [daemon] keys other than log are bound at start: said, not applied
            path.write_text(path.read_text().replace('crypto_backend = "openssl"',
                                                     'crypto_backend = "openssl"\n'
                                                     'cookie_threshold = 5'))
            answer = await _call(a, cmd="reload")
            assert answer["ok"] and answer["result"]["restart_needed"] == [
                "daemon.cookie_threshold"], answer
            assert a.config.daemon.cookie_threshold == 30
            # added: usable at once
            answer = await _call(a, cmd="initiate", name="new", wait=10)
            assert answer["ok"], answer
            assert (await _call(a, cmd="why", name="drop"))["ok"] is False  # gone
        finally:
            await a.shutdown()
            await b.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), 90))


def test_changed_connection_is_reestablished_under_the_new_config_at_its_next_rekey(tmp_path):
    """docs/operations.md (*Reload*): a changed connection's SAs run on until their next
    rekey; that rekey (here: the scheduled one, and one asked for with `sa rekey`) is a new
    IKE SA under the new config, make-before-break: the old one is deleted once the new one
    and its children are up. An unchanged connection still rekeys as before."""
    ports = _ports()
    before = {"keep": (20, "4h"), "timed": (30, "6s"), "asked": (40, "4h")}
    a, b = _daemons(tmp_path, ports, before, before)

    async def scenario():
        await a.start()
        await b.start()
        try:
            for name in before:
                assert (await _call(a, cmd="initiate", name=name, wait=10))["ok"]
            await _until(lambda: len(_sas(b)) == 3)
            old_a, old_b = _sas(a), _sas(b)
            path = tmp_path / "0.toml"
            path.write_text(_text(0, ports, tmp_path / "0.sock",
                                  {"keep": (20, "4h"), "timed": (30, "2h"), "asked": (40, "3h")}))
            answer = await _call(a, cmd="reload")
            assert answer["result"]["changed"] == ["timed", "asked"], answer
            assert {n: s["id"] for n, s in _sas(a).items()} == \
                {n: s["id"] for n, s in old_a.items()}  # nothing replaced yet

            def replaced(name: str) -> bool:
                now_a = _sas(a)
                return (name in now_a and now_a[name]["id"] != old_a[name]["id"]
                        and now_a[name]["state"] == "established"
                        and len(now_a[name]["children"]) == 1
                        and old_b[name]["id"] not in {s["id"] for s in b.engine.sa_list()}
                        and old_a[name]["id"] not in {s["id"] for s in a.engine.sa_list()})

            # asked for: `sa rekey asked --child` re-establishes instead of rekeying
            answer = await _call(a, cmd="rekey", name="asked", kind="child")
            assert answer["ok"], answer
            await _until(lambda: replaced("asked"))
            # scheduled: the old SA's own rekey time (6 s less jitter) comes, same outcome
            assert _sas(a)["timed"]["id"] == old_a["timed"]["id"]
            await _until(lambda: replaced("timed"), timeout=20)
            for name, rekey in (("asked", 3 * 3600), ("timed", 2 * 3600)):
                sa = _sas(a)[name]
                obj = a.engine.sas.by_id(sa["id"])
                assert obj.conn is a.config.connections[name]  # the new config's
                assert obj.conn.rekey_time == rekey
                assert [c["name"] for c in sa["children"]] == ["net"]
                assert sa["children"][0]["spi_in"] != old_a[name]["children"][0]["spi_in"]
                assert _sas(b)[name]["id"] != old_b[name]["id"]
            assert a.engine.stats["reestablished_after_reload"] == 2
            # unchanged: untouched all along, and its rekey is still a rekey (RFC 7296 2.8)
            def ids(sa: dict) -> tuple:
                return (sa["id"], sa["spi_i"], sa["spi_r"], [(c["unique_id"], c["spi_in"],
                                                              c["spi_out"]) for c in sa["children"]])

            assert ids(_sas(a)["keep"]) == ids(old_a["keep"])
            assert ids(_sas(b)["keep"]) == ids(old_b["keep"])
            answer = await _call(a, cmd="rekey", name="keep", kind="ike")
            assert answer["ok"], answer
            await _until(lambda: _sas(a)["keep"]["id"] != old_a["keep"]["id"])
            assert a.engine.sas.by_id(old_a["keep"]["id"]) is None or \
                a.engine.sas.by_id(old_a["keep"]["id"]).replaced_by == _sas(a)["keep"]["id"]
            assert a.engine.stats["reestablished_after_reload"] == 2
        finally:
            await a.shutdown()
            await b.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), 90))


def test_why_of_an_unknown_connection_is_an_error(tmp_path):
    ports = _ports()
    a, _ = _daemons(tmp_path, ports, {"t": (20, "4h")}, {"t": (20, "4h")})

    async def scenario():
        await a.start()
        try:
            answer = await _call(a, cmd="why", name="NOSUCH")
            assert not answer["ok"] and "no connection named 'NOSUCH'" in answer["error"]
            assert (await _call(a, cmd="why", name="t")) == {"ok": True, "result": None}
        finally:
            await a.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), 30))


# -- dpd_action / close_action ------------------------------------------------------------------
def test_close_action_start_brings_back_what_the_peer_closed(tmp_path):
    ports = _ports()
    a, b = _daemons(tmp_path, ports, {"t": (20, "4h", 'close_action = "start"')},
                    {"t": (20, "4h")})

    async def scenario():
        await a.start()
        await b.start()
        ev = await Events.open(a)
        try:
            assert (await _call(b, cmd="initiate", name="t", wait=10))["ok"]
            first = await ev.expect("ike-up", name="t")
            # the peer deletes the IKE SA: a starts it again at once
            assert (await _call(b, cmd="terminate", name="t"))["ok"]
            await ev.expect("ike-down", ike_id=first["ike_id"], reason="deleted by peer")
            restart = await ev.expect("restart", name="t")
            assert restart["delay"] == 0 and restart["action"] == "close_action"
            again = await ev.expect("ike-up", name="t")
            child = await ev.expect("child-up", name="t/net", ike_id=again["ike_id"])
            assert again["ike_id"] != first["ike_id"]
            # the peer deletes only the CHILD_SA: the child comes back in the same IKE SA,
            # after a back-off (a second restart within a minute)
            assert (await _call(b, cmd="terminate", name="t/net"))["ok"]
            await ev.expect("child-down", unique_id=child["unique_id"], reason="deleted by peer")
            restart = await ev.expect("restart", name="t")
            assert restart["delay"] == 1.0 and restart["children"] == ["net"]
            back = await ev.expect("child-up", name="t/net", timeout=15)
            assert back["ike_id"] == again["ike_id"]
            # our own terminate is no close by the peer: nothing restarts
            assert (await _call(a, cmd="terminate", name="t"))["ok"]
            await ev.expect("ike-down", ike_id=again["ike_id"])
            await asyncio.sleep(2.5)
            assert not _sas(a) and not _sas(b)
        finally:
            ev.close()
            await a.shutdown()
            await b.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), 90))


def test_dpd_action_start_re_establishes_once_the_peer_is_back(tmp_path):
    from ocfpy.crypto.dispatcher import Dispatcher
    from ocfpy.esp.dataplane.null import NullDataplane
    from ocfpy.ike.engine import IkeEngine
    from ocfpy.iked.configfile import load
    from ocfpy.iked.daemon import IkeDaemon

    ports = _ports()
    a, b = _daemons(tmp_path, ports, {"t": (20, "4h,1s", 'dpd_action = "start"',
                                            "keyingtries = 0")}, {"t": (20, "4h")})

    async def scenario():
        nonlocal b
        await a.start()
        await b.start()
        ev = await Events.open(a)
        try:
            assert (await _call(a, cmd="initiate", name="t", wait=10))["ok"]
            first = await ev.expect("ike-up", name="t")
            # the peer dies without a word (no Delete): its sockets just go
            for endpoint in b.endpoints:
                b._loop.remove_reader(endpoint.sock.fileno())
                endpoint.sock.close()
            b.endpoints.clear()
            await b.control.close()
            await ev.expect("dpd", name="t", timeout=30)
            restart = await ev.expect("restart", name="t", action="dpd_action")
            assert restart["delay"] == 0 and restart["children"] == ["net"]
            await ev.expect("ike-down", ike_id=first["ike_id"])
            await asyncio.sleep(1.0)  # a tries on (keyingtries = 0) while nobody answers
            # the peer comes back, same config and ports: the tunnel returns by itself
            conf = load(tmp_path / "1.toml")
            b = IkeDaemon(conf, IkeEngine(conf, Dispatcher(backend="openssl")),
                          NullDataplane())
            await b.start()
            back = await ev.expect("ike-up", name="t", timeout=30)
            await ev.expect("child-up", name="t/net", ike_id=back["ike_id"])
            await _until(lambda: "t" in _sas(b) and _sas(b)["t"]["state"] == "established")
        finally:
            ev.close()
            await a.shutdown()
            if b.control is not None:
                await b.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), 120))


# -- sa monitor: the event stream --------------------------------------------------------------
class Events:
    """A subscriber on the daemon's control socket, as `ocfpy sa monitor` is."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.seen: list[dict] = []

    @classmethod
    async def open(cls, daemon) -> Events:
        reader, writer = await asyncio.open_unix_connection(str(daemon.control.path))
        writer.write(b'{"cmd": "subscribe"}\n')
        await writer.drain()
        ack = json.loads(await reader.readline())
        assert ack == {"ok": True, "result": {"queue": daemon.control.queue_size}}, ack
        return cls(reader, writer)

    async def expect(self, kind: str, timeout: float = 15.0, **match) -> dict:
        """Read until an event of this kind (and these fields) arrives; the ones before it
        stay in self.seen, so the order of everything received is checked by the caller."""
        deadline = time.monotonic() + timeout
        while True:
            line = await asyncio.wait_for(self.reader.readline(),
                                          max(0.05, deadline - time.monotonic()))
            assert line, f"stream ended while waiting for {kind}; seen {self.seen}"
            event = json.loads(line)
            self.seen.append(event)
            if event["event"] == kind and all(event.get(k) == v for k, v in match.items()):
                return event

    def close(self) -> None:
        self.writer.close()


def test_monitor_receives_each_event_type_in_order(tmp_path):
    from ocfpy.plugins.openssl import OpenSSLDriver

    from ocfpy.crypto.registry import DriverStatus

    ports = _ports()
    a, b = _daemons(tmp_path, ports, {"t": (20, "4h,1s"), "lonely": (30, "4h")},
                    {"t": (20, "4h")})

    class Unplugged(OpenSSLDriver):
        name = "openssl-card"  # a second driver that comes and goes, as a device does

    async def scenario():
        await a.start()
        await b.start()
        ev = await Events.open(a)
        try:
            assert (await _call(a, cmd="initiate", name="t", wait=10))["ok"]
            up = await ev.expect("ike-up", name="t")
            child = await ev.expect("child-up", name="t/net", ike_id=up["ike_id"])
            now = asyncio.get_running_loop().time()
            a.engine.rekey_child(child["unique_id"], now)
            a._service()
            rekeyed = await ev.expect("child-rekey", name="t/net",
                                      old_unique_id=child["unique_id"])
            await ev.expect("child-down", unique_id=child["unique_id"])
            a.engine.rekey_ike(up["ike_id"], asyncio.get_running_loop().time())
            a._service()
            new_ike = await ev.expect("ike-rekey", name="t", old_ike_id=up["ike_id"])
            await ev.expect("ike-down", ike_id=up["ike_id"])
            # b has no connection "lonely": a negotiation failure, explained
            assert not (await _call(a, cmd="initiate", name="lonely", wait=10))["ok"]
            failure = await ev.expect("failure", name="lonely")
            assert failure["explanation"] and failure["notify"], failure
            # reloads, refused and accepted
            path = tmp_path / "0.toml"
            good = path.read_text()
            path.write_text(good + "\n[daemon.log]\nike = 7\n")
            assert not (await _call(a, cmd="reload"))["ok"]
            refused = await ev.expect("reload")
            assert refused["ok"] is False and "daemon.log.ike" in refused["error"], refused
            path.write_text(good)
            assert (await _call(a, cmd="reload"))["ok"]
            accepted = await ev.expect("reload")
            assert accepted["ok"] is True and accepted["unchanged"] == ["t", "lonely"]
            # a driver that appears and goes (hot-plug; its sessions would fail over)
            record = a.dispatcher.registry.add(Unplugged(), entry_point="test")
            assert record.status is DriverStatus.ACTIVE, record
            await ev.expect("driver-added", driver="openssl-card")
            a.dispatcher.registry.remove("openssl-card", "device unplugged")
            gone = await ev.expect("driver-removed", driver="openssl-card")
            assert gone["reason"] == "device unplugged"
            # the peer dies without a word: dead peer detection (dpd_delay 1s, 2 retransmits)
            for endpoint in b.endpoints:
                b._loop.remove_reader(endpoint.sock.fileno())
                endpoint.sock.close()
            b.endpoints.clear()
            dead = await ev.expect("dpd", name="t", timeout=30)
            assert dead["result"] == "dead" and "did not answer" in dead["explanation"]
            await ev.expect("ike-down", ike_id=new_ike["ike_id"])
            await a.shutdown()
            await ev.expect("shutdown")
            assert await ev.reader.readline() == b""  # the stream ends with the daemon
            kinds = [e["event"] for e in ev.seen]
            order = ["ike-up", "child-up", "child-rekey", "child-down", "ike-rekey", "ike-down",
                     "failure", "reload", "reload", "driver-added", "driver-removed", "dpd",
                     "ike-down", "shutdown"]
            it = iter(kinds)
            assert all(k in it for k in order), kinds  # each, in this order
            assert rekeyed["unique_id"] != child["unique_id"]
        finally:
            ev.close()
            if a.control is not None:
                await a.shutdown()
            await b.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_a_subscriber_that_does_not_read_never_blocks_the_daemon(tmp_path):
    ports = _ports()
    a, _ = _daemons(tmp_path, ports, {"t": (20, "4h")}, {"t": (20, "4h")})

    async def scenario():
        await a.start()
        try:
            slow = await Events.open(a)  # subscribes, then never reads
            quick = await Events.open(a)
            started = time.monotonic()
            for i in range(20000):
                a._publish("ike-up", name="x" * 200, ike_id=i)
            assert time.monotonic() - started < 5  # put_nowait only: no waiting on anyone
            assert a.control.events_dropped > 0
            # the daemon still answers, and a reading subscriber gets events with the count
            # of what it missed
            assert (await _call(a, cmd="stats"))["result"]["monitor"]["events_dropped"] > 0
            first = await quick.expect("ike-up")
            assert first["ike_id"] == 0
            while "dropped" not in (await quick.expect("ike-up", timeout=30)):
                pass
            # a subscriber that vanishes is forgotten
            slow.close()
            quick.close()
            for _ in range(200):
                if not a.control.subscribers:
                    break
                await asyncio.sleep(0.02)
            assert not a.control.subscribers
        finally:
            await a.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), 60))


# -- the real command under a fake systemd -----------------------------------------------------
class FakeSystemd:
    """The notify socket: an AF_UNIX datagram socket, as systemd binds it."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.seen: list[dict[str, str]] = []

    def next(self, timeout: float = 60.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        fields = dict(line.split("=", 1) for line in data.splitlines() if line)
        self.seen.append(fields)
        return fields

    def until(self, key: str, timeout: float = 60.0) -> dict[str, str]:
        """The next datagram carrying key (STATUS-only updates may come in between)."""
        deadline = time.monotonic() + timeout
        while True:
            fields = self.next(max(0.1, deadline - time.monotonic()))
            if key in fields:
                return fields

    def close(self) -> None:
        self.sock.close()


def _timeless(sas: list[dict]) -> list[dict]:
    """An SA listing without what moves on its own (seconds up, seconds to rekey)."""
    drop = ("established_s", "rekey_in_s")
    return [{**{k: v for k, v in sa.items() if k not in drop},
             "children": [{k: v for k, v in c.items() if k not in drop}
                          for c in sa["children"]]} for sa in sas]


def _sa(*argv: str, control: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([OCFPY, "sa", *argv, "--control", str(control)], capture_output=True,
                          text=True, timeout=timeout)


def test_service_notify_logs_metrics_and_reload(tmp_path):
    pytest.importorskip("prometheus_client")
    from ocfpy.iked.control import ControlClient

    ports = _ports()
    metrics_port = _free_port("127.0.0.1", socket.SOCK_STREAM)
    conns = {"t": (20, "4h")}
    log_table = (f'metrics = "127.0.0.1:{metrics_port}"\n\n[daemon.log]\ndefault = 1\n'
                 'net = -1\nctl = 2\n')
    ctl = [tmp_path / "a.sock", tmp_path / "b.sock"]
    conf = [tmp_path / "a.toml", tmp_path / "b.toml"]
    conf[0].write_text(_text(0, ports, ctl[0], conns, log_table))
    conf[1].write_text(_text(1, ports, ctl[1], conns))
    systemd = FakeSystemd(tmp_path / "notify")
    # WatchdogSec=2s: systemd passes WATCHDOG_USEC, the daemon pings every second
    env = {**os.environ, "NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "2000000"}
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [subprocess.Popen([OCFPY, "iked", "--config", str(conf[0]), "--foreground",
                               "--log-file", str(logs[0])], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    benv = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    procs.append(subprocess.Popen([OCFPY, "iked", "--config", str(conf[1]), "--foreground",
                                   "--log-file", str(logs[1])], env=benv,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        ready = systemd.next(120)
        assert ready.get("READY") == "1", ready
        assert "0 IKE_SA(s), 0 CHILD_SA(s) up; 1 connection(s) loaded" in ready["STATUS"]
        assert ctl[0].exists()  # READY=1 only once the control socket is there
        # (generous waits: a daemon starved by a loaded 2-core machine still pings, late)
        assert systemd.until("WATCHDOG", 30)["WATCHDOG"] == "1"
        assert systemd.until("WATCHDOG", 30)["WATCHDOG"] == "1"  # and again: a running task
        for _ in range(600):
            if ctl[1].exists():
                break
            time.sleep(0.1)
        monitor = subprocess.Popen([OCFPY, "sa", "monitor", "--count", "2", "--control",
                                    str(ctl[0])], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        with ControlClient(ctl[0], timeout=30) as client:
            for _ in range(1200):  # subscribed before anything happens
                if client.call("stats")["monitor"]["subscribers"]:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError("`ocfpy sa monitor` did not subscribe within 120 s")
        up = _sa("initiate", "t", "--wait", "60", control=ctl[0])
        assert up.returncode == 0, up.stderr
        out, err = monitor.communicate(timeout=60)
        assert monitor.returncode == 0, err
        lines = out.splitlines()
        assert len(lines) == 2 and "ike-up" in lines[0] and "t[1]" in lines[0], out
        assert "child-up" in lines[1] and "t/net{1}" in lines[1], out
        status = systemd.until("STATUS", 30)
        while "1 CHILD_SA(s)" not in status["STATUS"]:
            status = systemd.until("STATUS", 30)
        assert status["STATUS"].startswith("1 IKE_SA(s), 1 CHILD_SA(s) up"), status

        # metrics, scraped from the running daemon
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                      timeout=30).read().decode()
        assert 'ocfpy_ike_sas{state="established"} 1.0' in body, body
        assert 'ocfpy_child_sas{state="installed"} 1.0' in body, body
        assert 'ocfpy_crypto_operations_total{driver="openssl"}' in body

        why = _sa("why", "NOSUCH", control=ctl[0])
        assert why.returncode == 1 and "no connection named 'NOSUCH'" in why.stderr, why
        # every operator command says what failed, with a non-zero exit
        for argv, words in ((("rekey", "NOSUCH", "--ike"), "no established IKE SA"),
                            (("terminate", "t", "--child", "nosuch"), "no CHILD_SA named"),
                            (("terminate", "NOSUCH"), "no IKE SA matches"),
                            (("initiate", "NOSUCH", "--wait", "1"), "no connection named")):
            failed = _sa(*argv, control=ctl[0])
            assert failed.returncode == 1 and words in failed.stderr, (argv, failed)
        conns = _sa("list-conns", control=ctl[0])
        assert conns.returncode == 0 and conns.stdout.startswith("t: 127.0.0.1["), conns
        listing = subprocess.run([OCFPY, "sa", "list", "--control", str(ctl[0])],
                                 capture_output=True, text=True, timeout=60,
                                 env={**os.environ, "COLUMNS": "250"})
        assert listing.returncode == 0 and "rekey in" in listing.stdout, listing
        with ControlClient(ctl[0], timeout=30) as client:
            sa_before = client.call("list")
        # a bad file: RELOADING=1, then READY=1 with the refusal in STATUS; non-zero exit
        good = conf[0].read_text()
        conf[0].write_text(good.replace("net = -1", "net = 9"))
        bad = _sa("reload", control=ctl[0])
        assert bad.returncode == 1, bad
        assert f"{conf[0]}:" in bad.stderr and "daemon.log.net" in bad.stderr, bad.stderr
        assert systemd.until("RELOADING", 30)["RELOADING"] == "1"
        again = systemd.until("READY", 30)
        assert "reload refused" in again["STATUS"], again
        # a good file by SIGHUP (systemctl reload): RELOADING=1 then READY=1, SA untouched
        conf[0].write_text(good)
        procs[0].send_signal(signal.SIGHUP)
        reloading = systemd.until("RELOADING", 30)
        assert int(reloading["MONOTONIC_USEC"]) > 0
        again = systemd.until("READY", 30)
        assert again["STATUS"].startswith("1 IKE_SA(s)"), again
        with ControlClient(ctl[0], timeout=30) as client:
            assert _timeless(client.call("list")) == _timeless(sa_before)

        procs[0].send_signal(signal.SIGTERM)
        assert systemd.until("STOPPING", 30)["STOPPING"] == "1"
        assert procs[0].wait(60) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        systemd.close()
    text = logs[0].read_text()
    # [daemon.log]: net = -1 silences the socket lines, ctl = 2 lets its debug through,
    # SA up/down are AUDIT lines with the name and id
    assert "listening on UDP" not in text
    assert "[CTL]" in text and "control socket at" in text
    assert "IKE_SA t[1] established" in text and "CHILD_SA t/net{1} established" in text, text
    assert "reload refused, nothing changed" in text or "reloaded" in text
    assert "[CFG]" in text
    # B, without [daemon.log], logs its sockets at the default level
    assert "listening on UDP" in logs[1].read_text()


def test_check_refuses_missing_metrics_support(tmp_path, monkeypatch, capsys):
    from ocfpy.cli.main import main

    ports = _ports()
    conf = tmp_path / "m.toml"
    conf.write_text(_text(0, ports, tmp_path / "m.sock", {"t": (20, "4h")},
                          'metrics = "127.0.0.1:9641"'))
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # not installed, as far as
    assert main(["iked", "--config", str(conf), "--check"]) == 1  # an import can tell
    assert "metrics need the prometheus-client package" in capsys.readouterr().err


def test_check_refuses_a_log_target_start_would_refuse(tmp_path, capsys):
    from ocfpy.cli.main import main

    ports = _ports()
    conf = tmp_path / "c.toml"
    extra = f'\n[daemon.log]\nfile = "{tmp_path}/no/such/dir/iked.log"\n'
    conf.write_text(_text(0, ports, tmp_path / "c.sock", {"t": (20, "4h")}, extra))
    assert main(["iked", "--config", str(conf), "--check"]) == 1
    conf.write_text(_text(0, ports, tmp_path / "c.sock", {"t": (20, "4h")},
                          f'\n[daemon.log]\nfile = "{tmp_path}/iked.log"\nike = 2\n'))
    assert main(["iked", "--config", str(conf), "--check"]) == 0
    # the dataplane is opened (and closed) as the start would open it
    assert "dataplane none: none opened and closed" in capsys.readouterr().out
    conf.write_text(_text(0, ports, tmp_path / "c.sock", {"t": (20, "4h")},
                          '\n[daemon.log]\nike = 5\n'))
    assert main(["iked", "--config", str(conf), "--check"]) == 78  # file:line: key: reason


def test_trap_actions_are_accepted_and_other_values_refused(tmp_path):
    """dpd_action / close_action = trap (swanctl's) now install the child's trap; an unknown
    action is still refused with file:line: key: reason."""
    from ocfpy.iked.configfile import ConfigError, loads

    ports = _ports()
    for key in ("dpd_action", "close_action"):
        text = _text(0, ports, tmp_path / "c.sock", {"t": (20, "4h", f'{key} = "trap"')})
        conf = loads(text, "t.toml")
        assert getattr(conf.connections["t"].children["net"], key) == "trap"
        with pytest.raises(ConfigError) as info:
            loads(text.replace('"trap"', '"hold"'), "t.toml")
        assert f"connections.t.children.net.{key}" in str(info.value)
    conf = loads(_text(0, ports, tmp_path / "c.sock", {"t": (20, "4h")},
                       'trap_queue = 3\ntrap_hold = "2s"'), "t.toml")
    assert (conf.daemon.trap_queue, conf.daemon.trap_hold) == (3, 2.0)
    with pytest.raises(ConfigError) as info:
        loads(_text(0, ports, tmp_path / "c.sock", {"t": (20, "4h")}, "trap_queue = 5000"),
              "t.toml")
    assert "daemon.trap_queue" in str(info.value)


# -- operator commands and config traps --------------------------------------------------------
def test_list_times_list_conns_rekey_and_terminate_child(tmp_path):
    ports = _ports()
    a, b = _daemons(tmp_path, ports, {"t": (20, "4h")}, {"t": (20, "4h")})

    async def scenario():
        await a.start()
        await b.start()
        ev = await Events.open(a)
        try:
            assert (await _call(a, cmd="initiate", name="t", wait=10))["ok"]
            up = await ev.expect("ike-up", name="t")
            child = await ev.expect("child-up", name="t/net")
            await asyncio.sleep(0.3)
            [sa] = (await _call(a, cmd="list"))["result"]
            assert 0.2 <= sa["established_s"] < 30
            assert 0.9 * 4 * 3600 - 60 <= sa["rekey_in_s"] <= 4 * 3600  # rekey_time minus jitter
            assert sa["expires_in_s"] is None  # no time-based hard lifetime
            [c] = sa["children"]
            assert 0.2 <= c["established_s"] < 30 and c["rekey_in_s"] <= 3600
            [conn] = (await _call(a, cmd="list-conns"))["result"]
            assert conn["name"] == "t" and conn["ike_sas_up"] == 1
            assert conn["local_port"] == ports[0][0] and conn["children"][0]["name"] == "net"

            answer = await _call(a, cmd="rekey", name="t", kind="child")
            assert answer["ok"] and answer["result"]["ids"] == [child["unique_id"]], answer
            new_child = await ev.expect("child-rekey", old_unique_id=child["unique_id"])
            answer = await _call(a, cmd="rekey", name=str(up["ike_id"]), kind="ike")
            assert answer["ok"], answer
            new_ike = await ev.expect("ike-rekey", old_ike_id=up["ike_id"])
            await ev.expect("ike-down", ike_id=up["ike_id"])
            # one CHILD_SA deleted, by name: its IKE SA stays
            assert (await _call(a, cmd="terminate", name="t", child="net"))["ok"]
            await ev.expect("child-down", unique_id=new_child["unique_id"])
            await asyncio.sleep(0.2)
            [sa] = (await _call(a, cmd="list"))["result"]
            assert sa["id"] == new_ike["ike_id"] and sa["children"] == []
            bad = await _call(a, cmd="rekey", name="t", kind="child")
            assert not bad["ok"] and "has no CHILD_SA" in bad["error"]
            bad = await _call(a, cmd="terminate", name=str(sa["id"]), child="net")
            assert not bad["ok"] and "needs the connection's name" in bad["error"]
        finally:
            ev.close()
            await a.shutdown()
            await b.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_local_port_defaults_to_the_daemon_port(tmp_path):
    """A daemon on a high port and a connection without local_port: it sends from the daemon's
    port (it used to send from 500, where nothing listened), the peer's port stays 500."""
    from ocfpy.iked.configfile import loads

    ports = _ports()
    text = _text(0, ports, tmp_path / "c.sock", {"t": (20, "4h")})
    no_ports = "\n".join(line for line in text.splitlines()
                         if not line.startswith(("local_port", "remote_port")))
    conn = loads(no_ports, "c.toml").connections["t"]
    assert (conn.local_port, conn.remote_port) == (ports[0][0], 500)

    for me in (0, 1):  # both without local_port: they still find each other
        path = tmp_path / f"{me}.toml"
        path.write_text("\n".join(line for line in _text(
            me, ports, tmp_path / f"{me}.sock", {"t": (20, "4h")}).splitlines()
            if not line.startswith("local_port")))
    from ocfpy.crypto.dispatcher import Dispatcher
    from ocfpy.esp.dataplane.null import NullDataplane
    from ocfpy.ike.engine import IkeEngine
    from ocfpy.iked.configfile import load
    from ocfpy.iked.daemon import IkeDaemon

    dispatcher = Dispatcher(backend="openssl")
    a, b = (IkeDaemon(c, IkeEngine(c, dispatcher), NullDataplane(), dispatcher=dispatcher)
            for c in (load(tmp_path / "0.toml"), load(tmp_path / "1.toml")))

    async def scenario():
        await a.start()
        await b.start()
        try:
            answer = await _call(a, cmd="initiate", name="t", wait=10)
            assert answer["ok"] and answer["result"]["state"] == "established", answer
        finally:
            await a.shutdown()
            await b.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_send_errors_reach_initiate_and_why(tmp_path):
    """The connection's local address is not one the daemon listens on: nothing can be sent,
    and `sa initiate` and `sa why` say so instead of "not established"."""
    ports = _ports()
    a, _ = _daemons(tmp_path, ports, {"t": (20, "4h")}, {"t": (20, "4h")})
    a.config.connections["t"].local_addrs = ["127.0.0.3"]

    async def scenario():
        await a.start()
        try:
            answer = await _call(a, cmd="initiate", name="t", wait=1.5)
            assert not answer["ok"] and "no socket for sending from 127.0.0.3" in answer["error"]
            why = (await _call(a, cmd="why", name="t"))["result"]
            assert "no socket for sending from 127.0.0.3" in why, why
        finally:
            await a.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), 30))
