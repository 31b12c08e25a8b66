"""sd_notify against a datagram socket the test owns, standing in for systemd's."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

from ocfpy.iked.systemd import Notifier, NotifyError, status_line, watchdog_interval


@pytest.fixture
def notify_socket(tmp_path):
    """A bound AF_UNIX datagram socket; yields (NOTIFY_SOCKET value, receive())."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)

    def receive() -> dict[str, str]:
        data = sock.recv(4096).decode()
        assert data.endswith("\n")
        return dict(line.split("=", 1) for line in data.splitlines())

    yield path, receive
    sock.close()


def test_ready_status_reloading_stopping_reach_the_socket(notify_socket):
    path, receive = notify_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready(status_line(2, 3, 4))
    assert receive() == {"READY": "1", "STATUS": "2 IKE_SA(s), 3 CHILD_SA(s) up; 4 connection(s) loaded"}
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading("reloading /etc/ocfpy/iked.toml")
    got = receive()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert got["RELOADING"] == "1" and got["STATUS"] == "reloading /etc/ocfpy/iked.toml"
    assert before <= int(got["MONOTONIC_USEC"]) <= after
    assert n.stopping()
    assert receive() == {"STOPPING": "1"}
    assert n.status("1 IKE_SA(s)")
    assert receive() == {"STATUS": "1 IKE_SA(s)"}


def test_a_newline_in_a_value_cannot_forge_another_assignment(notify_socket):
    path, receive = notify_socket
    Notifier.from_env({"NOTIFY_SOCKET": path}).status("up\nREADY=1")
    assert receive() == {"STATUS": "up READY=1"}


def test_abstract_socket():
    name = f"ocfpy-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.address == b"\0" + name.encode()
        assert n.ready()
        assert sock.recv(100) == b"READY=1\n"
    finally:
        sock.close()


def test_without_notify_socket_everything_is_a_no_op():
    n = Notifier.from_env({})
    assert not n.enabled
    assert not n.ready() and not n.status("x") and not n.stopping() and not n.watchdog_ping()


def test_a_vanished_socket_is_not_fatal(tmp_path):
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert n.ready() is False


def test_a_relative_notify_socket_is_refused():
    with pytest.raises(NotifyError, match="not an absolute path"):
        Notifier.from_env({"NOTIFY_SOCKET": "run/notify"})


def test_from_env_unsets_the_variables_for_children(monkeypatch, tmp_path):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "n"))
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier.from_env()
    assert n.address == str(tmp_path / "n") and n.watchdog == 4.0
    assert "NOTIFY_SOCKET" not in os.environ and "WATCHDOG_USEC" not in os.environ


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "junk"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1234"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4321"}, None),  # not for us
])
def test_watchdog_interval(env, expected):
    assert watchdog_interval(env, pid=1234) == expected


def test_watchdog_pings_at_half_the_interval(notify_socket):
    path, receive = notify_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    assert n.watchdog_period == 0.1

    async def run() -> None:
        task = asyncio.create_task(n.run_watchdog())
        await asyncio.sleep(0.35)
        task.cancel()

    asyncio.run(run())
    pings = 0
    while True:
        try:
            assert receive() == {"WATCHDOG": "1"}
            pings += 1
        except TimeoutError:
            break
        if pings >= 3:
            break
    assert pings >= 3  # at 0, 0.1, 0.2 (0.3) s


def test_no_watchdog_no_ping(notify_socket):
    path, _ = notify_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.watchdog_period is None and n.watchdog_ping() is False
    asyncio.run(n.run_watchdog())  # returns at once
