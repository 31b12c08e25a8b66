"""The control socket protocol: JSON lines over a real unix socket, served by asyncio in a
thread and spoken to by the real blocking client the CLI uses."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ocfpy.iked.control import CommandError, ControlClient, ControlError, ControlServer


@contextmanager
def serving(path: Path, handlers) -> Iterator[ControlServer]:
    """A ControlServer on its own event loop thread, closed (socket removed) at the end."""
    loop = asyncio.new_event_loop()
    server = ControlServer(path, handlers)
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as exc:  # reported to the test below
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(server.close())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(5)
    if failure:
        thread.join(5)
        loop.close()
        raise failure[0]
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


async def _slow(request):
    await asyncio.sleep(0.01)
    return {"slept": True, "name": request.get("name")}


def _boom(request):
    raise RuntimeError("handler bug")


def _refuse(request):
    raise CommandError(f"no connection named {request.get('name')!r}")


HANDLERS = {"echo": lambda r: r, "slow": _slow, "boom": _boom, "refuse": _refuse}


def test_commands_round_trip(tmp_path):
    path = tmp_path / "oid.sock"
    with serving(path, HANDLERS), ControlClient(path, timeout=5) as client:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert client.call("echo", name="home") == {"cmd": "echo", "name": "home"}
        # several requests on one connection, sync and async handlers alike
        assert client.call("slow", name="x") == {"slept": True, "name": "x"}
        assert client.call("echo")["cmd"] == "echo"
    assert not path.exists()  # removed on close


def test_errors_are_answers_not_crashes(tmp_path):
    path = tmp_path / "oid.sock"
    with serving(path, HANDLERS) as server, ControlClient(path, timeout=5) as client:
        with pytest.raises(ControlError, match="no connection named 'nope'"):
            client.call("refuse", name="nope")
        with pytest.raises(ControlError, match="internal error in boom: RuntimeError: handler bug"):
            client.call("boom")
        with pytest.raises(ControlError, match="unknown command 'lst'; commands: boom, echo"):
            client.call("lst")
        # raw garbage on the wire, then a good request on the same connection
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(b"\xff\xfenot json\n[1, 2]\n{\"cmd\": \"echo\"}\n")
        data = b""
        while data.count(b"\n") < 3:
            data += s.recv(4096)
        s.close()
        lines = data.splitlines()
        assert b"not a JSON request" in lines[0]
        assert b'a request is a JSON object with a \\"cmd\\" string' in lines[1]
        assert b'"ok": true' in lines[2]
        assert server.bad_requests == 3  # lst, garbage, [1, 2]
        assert client.call("echo")["cmd"] == "echo"  # still serving


def test_oversized_request_is_refused(tmp_path):
    path = tmp_path / "oid.sock"
    with serving(path, HANDLERS):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(str(path))
        try:
            s.sendall(b"x" * (200 * 1024) + b"\n")
        except OSError:
            pass  # the server may close before we finish writing
        data = s.recv(4096)
        s.close()
        assert b"longer than" in data
        with ControlClient(path, timeout=5) as client:
            assert client.call("echo")["cmd"] == "echo"


def test_stale_socket_is_replaced_live_one_is_not(tmp_path):
    path = tmp_path / "oid.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # a socket file with nobody listening: a crashed daemon's
    stale.close()
    with serving(path, HANDLERS), ControlClient(path, timeout=5) as client:
        assert client.call("echo")["cmd"] == "echo"
        with pytest.raises(ControlError, match="another daemon is listening"):
            with serving(path, HANDLERS):
                pass
        assert client.call("echo")["cmd"] == "echo"  # the first one is untouched


def test_refuses_to_replace_a_regular_file(tmp_path):
    path = tmp_path / "oid.sock"
    path.write_text("precious")
    with pytest.raises(ControlError, match="not a socket"):
        with serving(path, HANDLERS):
            pass
    assert path.read_text() == "precious"


def test_creates_private_directory(tmp_path):
    path = tmp_path / "run" / "ocfpy" / "oid.sock"
    with serving(path, HANDLERS):
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_client_says_when_no_daemon(tmp_path):
    with pytest.raises(ControlError, match="no daemon control socket at .*is `ocfpy iked` running"):
        ControlClient(tmp_path / "missing.sock").call("list")


def test_umask_restored(tmp_path):
    before = os.umask(0o022)
    os.umask(before)
    with serving(tmp_path / "oid.sock", HANDLERS):
        pass
    after = os.umask(0o022)
    os.umask(after)
    assert after == before


# -- the daemon end to end on loopback (no root: ports above 1024, 127.0.0.1 <-> 127.0.0.2) ---
def _free_udp_port(host: str) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _loopback_config(me: int, ports: list[tuple[int, int]], control: Path, psk: str = "k1"):
    from ocfpy.iked.configfile import loads

    return loads(_config_text(me, ports, control, psk), f"loopback-{me}.toml")


def _config_text(me: int, ports: list[tuple[int, int]], control: Path, psk: str = "k1") -> str:
    addrs = ("127.0.0.1", "127.0.0.2")
    ids = ("a.oid.example", "b.oid.example")
    peer = 1 - me
    return f"""
[daemon]
crypto_backend = "openssl"
dataplane = "none"
listen = ["{addrs[me]}"]
port = {ports[me][0]}
port_nat_t = {ports[me][1]}
control_socket = "{control}"

[connections.t]
local_addrs = ["{addrs[me]}"]
remote_addrs = ["{addrs[peer]}"]
local_port = {ports[me][0]}
remote_port = {ports[peer][0]}
proposals = ["aes128gcm16-prfsha256-x25519"]
retransmit = {{ timeout = 0.5, tries = 2 }}
local = {{ id = "{ids[me]}" }}
remote = {{ id = "{ids[peer]}" }}

[connections.t.children.net]
local_ts = ["10.{me}.0.0/16"]
remote_ts = ["10.{peer}.0.0/16"]
esp_proposals = ["aes128gcm16"]

[connections.t.children.web]
local_ts = ["10.{me + 10}.0.0/16[tcp/443]"]
remote_ts = ["10.{peer + 10}.0.0/16[tcp]"]
esp_proposals = ["aes256gcm16"]

[secrets.ike]
secret = "{psk}"
"""


def _daemon_pair(tmp_path: Path, psk_b: str = "k1"):
    engine = pytest.importorskip("ocfpy.ike.engine",
                                 reason="the IKE engine (branch ike-core) is not merged")
    from ocfpy.crypto.dispatcher import Dispatcher
    from ocfpy.esp.dataplane.null import NullDataplane
    from ocfpy.iked.daemon import IkeDaemon

    ports = [(_free_udp_port("127.0.0.1"), _free_udp_port("127.0.0.1")),
             (_free_udp_port("127.0.0.2"), _free_udp_port("127.0.0.2"))]
    dispatcher = Dispatcher(backend="openssl")
    daemons = []
    for me in (0, 1):
        conf = _loopback_config(me, ports, tmp_path / f"{me}.sock", "k1" if me == 0 else psk_b)
        daemons.append(IkeDaemon(conf, engine.IkeEngine(conf, dispatcher), NullDataplane(),
                                 dispatcher=dispatcher))
    return daemons


async def _call(daemon, line: dict) -> dict:
    import json

    return await daemon.control.handle_line(json.dumps(line).encode())


def test_two_daemons_on_loopback(tmp_path):
    a, b = _daemon_pair(tmp_path)

    async def scenario():
        await a.start()
        await b.start()
        try:
            answer = await _call(b, {"cmd": "initiate", "name": "t", "wait": 5})
            assert answer["ok"], answer
            assert answer["result"]["state"] == "established"
            await asyncio.sleep(0.05)
            for d in (a, b):
                listing = await _call(d, {"cmd": "list"})
                assert listing["ok"] and len(listing["result"]) == 1, listing
                sa = listing["result"][0]
                assert len(sa["children"]) == 1
                assert sa["children"][0]["dataplane"]["name"] == "none"
                assert len(d.dataplane.installed) == 1  # the event reached the dataplane
            drivers = await _call(a, {"cmd": "drivers"})
            assert any(r["name"] == "openssl" and r["sessions"] > 0 for r in drivers["result"])
            stats = (await _call(a, {"cmd": "stats"}))["result"]
            assert stats["daemon"]["datagrams_in"] >= 2 and stats["daemon"]["datagrams_out"] >= 2
            bad = await _call(a, {"cmd": "initiate", "name": "nope"})
            assert not bad["ok"] and "no connection named 'nope'" in bad["error"]
            bad = await _call(a, {"cmd": "initiate", "name": "t", "child": "nope", "wait": 1})
            assert not bad["ok"] and "has no child 'nope'" in bad["error"], bad
            assert not a._waiters  # a refused initiate leaves no waiter behind
            bad = await _call(a, {"cmd": "terminate", "name": "other"})
            assert not bad["ok"] and "no IKE SA matches 'other'" in bad["error"], bad
            # delete from a: b hears it, both dataplanes lose the child
            assert (await _call(a, {"cmd": "terminate", "name": "t"}))["ok"]
            for _ in range(100):
                if not a.engine.sa_list() and not b.engine.sa_list():
                    break
                await asyncio.sleep(0.02)
            assert not a.engine.sa_list() and not b.engine.sa_list()
            assert not a.dataplane.installed and not b.dataplane.installed
        finally:
            await a.shutdown()
            await b.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_wrong_psk_on_loopback(tmp_path):
    a, b = _daemon_pair(tmp_path, psk_b="not-k1")

    async def scenario():
        await a.start()
        await b.start()
        try:
            answer = await _call(b, {"cmd": "initiate", "name": "t", "wait": 5})
            assert not answer["ok"] and "AUTHENTICATION_FAILED" in answer["error"], answer
            await asyncio.sleep(0.1)
            assert not a.engine.sa_list() and not b.engine.sa_list()
            why = (await _call(a, {"cmd": "why", "name": "t"}))["result"]
            assert why and "pre-shared key" in why  # the responder says what differs
        finally:
            await a.shutdown()
            await b.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_shutdown_deletes_and_closes(tmp_path):
    a, b = _daemon_pair(tmp_path)

    async def scenario():
        await a.start()
        await b.start()
        try:
            assert (await _call(a, {"cmd": "initiate", "name": "t", "wait": 5}))["ok"]
            await a.shutdown()  # what SIGTERM does
            for _ in range(100):
                if not b.engine.sa_list():
                    break
                await asyncio.sleep(0.02)
            assert not b.engine.sa_list(), "b never heard a's Delete"
            assert not (tmp_path / "0.sock").exists()
            assert not a.endpoints
        finally:
            await b.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_iked_detaches_once_listening_and_stops_on_sigterm(tmp_path):
    """The real command, in the background as an operator starts it; `ocfpy sa` reaches it."""
    import signal
    import subprocess
    import sys
    import time

    pytest.importorskip("ocfpy.ike.engine", reason="the IKE engine (branch ike-core) is not merged")
    ports = [(_free_udp_port("127.0.0.1"), _free_udp_port("127.0.0.1")), (1, 2)]
    sock = tmp_path / "bg.sock"
    conf = tmp_path / "oid-bg.toml"
    text = _config_text(0, ports, sock)
    conf.write_text(text)
    ocfpy = str(Path(sys.executable).with_name("ocfpy"))
    log = tmp_path / "bg.log"
    out = subprocess.run([ocfpy, "iked", "--config", str(conf), "--log-file", str(log)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert sock.exists()  # listening before the parent returned
    pid = ControlClient(sock, timeout=5).call("stats")["pid"]
    try:
        listing = subprocess.run([ocfpy, "sa", "list", "--control", str(sock)],
                                 capture_output=True, text=True, timeout=30)
        assert listing.returncode == 0 and "no SAs" in listing.stdout, listing
        # a second daemon on the same socket and ports is refused, and says why
        again = subprocess.run([ocfpy, "iked", "--config", str(conf), "--log-file",
                                str(tmp_path / "again.log")], capture_output=True,
                               text=True, timeout=60)
        assert again.returncode == 1 and "in use" in again.stderr, again.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not sock.exists():
            break
        time.sleep(0.05)
    assert not sock.exists()
    assert "stopped" in log.read_text()


def test_dataplane_selection_is_explicit():
    from ocfpy.esp.dataplane.null import NullDataplane
    from ocfpy.iked.daemon import DaemonError, select_dataplane

    assert isinstance(select_dataplane("none"), NullDataplane)
    with pytest.raises(DaemonError, match="unknown dataplane 'kernel'"):
        select_dataplane("kernel")
    # xfrm: either this ocfpy lacks the module, or this kernel lacks ESP; the reason is given
    try:
        dp = select_dataplane("xfrm")
    except DaemonError as exc:
        assert str(exc).startswith("dataplane xfrm is not available: ") and len(str(exc)) > 40
    else:
        dp.close()


def test_initiate_reuses_the_ike_sa_and_adds_children(tmp_path):
    a, b = _daemon_pair(tmp_path)

    async def scenario():
        await a.start()
        await b.start()
        try:
            first = await _call(b, {"cmd": "initiate", "name": "t", "wait": 5})
            assert first["ok"] and first["result"]["state"] == "established", first
            again = await _call(b, {"cmd": "initiate", "name": "t", "wait": 5})
            assert again["ok"], again
            assert again["result"] == {"ike_id": first["result"]["ike_id"],
                                       "state": "established", "reused": True}
            web = await _call(b, {"cmd": "initiate", "name": "t", "child": "web", "wait": 5})
            assert web["ok"] and web["result"]["child"] == "t/web", web
            await asyncio.sleep(0.05)
            for d in (a, b):
                (sa,) = d.engine.sa_list()
                assert sorted(c["name"] for c in sa["children"]) == ["net", "web"]
                assert len(d.dataplane.installed) == 2
            assert not a._waiters and not b._waiters
        finally:
            await a.shutdown()
            await b.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), 30))


@pytest.mark.parametrize("mode,words", [(0o770, "writable by group"),
                                        (0o1777, "writable by group and others"),
                                        (0o702, "writable by others")])
def test_control_directory_writable_by_others_is_refused(tmp_path, mode, words):
    """Issue 13 finding 9: whoever can write the socket's directory can swap the socket."""
    d = tmp_path / "run"
    d.mkdir()
    os.chmod(d, mode)
    with pytest.raises(ControlError, match=words):
        with serving(d / "oid.sock", HANDLERS):
            pass
    assert not (d / "oid.sock").exists()


def test_control_directory_of_another_user_is_refused(tmp_path):

    if os.geteuid() != 0:
        pytest.skip("needs root to chown a directory to another user")
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    with pytest.raises(ControlError, match="owned by uid 65534"):
        with serving(d / "oid.sock", HANDLERS):
            pass
