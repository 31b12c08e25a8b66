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

from ocfpy.ike.control import CommandError, ControlClient, ControlError, ControlServer


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
