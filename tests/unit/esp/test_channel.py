"""The worker <-> daemon channel of the userspace dataplane (issue 13 finding 3): raw IKE
records up to 65,535 bytes, truncation detected, and a reader that survives any record."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import socket
import threading
import time

import pytest

from ocfpy.esp.dataplane.userspace import UserspaceDataplane
from ocfpy.esp.worker import MAX_MESSAGE, ChannelError, recv_msg, send_ike, send_msg


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    yield a, b
    a.close()
    b.close()


def test_ike_records_up_to_65535_bytes_travel_raw(pair):
    a, b = pair
    for size in (0, 1, 1500, 65535):
        data = os.urandom(size)
        send_ike(a, data, ("2001:db8::1", 4500), 7)
        msg, fds = recv_msg(b)
        assert msg == ("ike", data, ("2001:db8::1", 4500), 7) and fds == []
    send_ike(a, b"x", ("192.0.2.1", 1), None)
    assert recv_msg(b)[0][3] is None


def test_truncated_and_unknown_records_raise_channel_error(pair):
    a, b = pair
    a.send(b"P" + b"\x00" * (MAX_MESSAGE + 100))
    with pytest.raises(ChannelError, match="truncated"):
        recv_msg(b)
    a.send(b"Zgarbage")
    with pytest.raises(ChannelError, match="unknown tag"):
        recv_msg(b)
    a.send(b"I\x00")
    with pytest.raises(ChannelError, match="shorter"):
        recv_msg(b)
    send_msg(a, ("ack", 1, True, None))  # and the channel goes on
    assert recv_msg(b)[0] == ("ack", 1, True, None)


def _sleeper():
    time.sleep(60)


@pytest.fixture
def reading(pair, dispatcher_for_channel):
    """A dataplane whose reader thread serves one real control socket (no TUN needed: the
    reader only reads records), with a live process standing in the worker's place."""
    ours, worker_end = pair
    dp = UserspaceDataplane(dispatcher_for_channel, max_sas=4)
    proc = multiprocessing.get_context("fork").Process(target=_sleeper, daemon=True)
    proc.start()
    dp._workers = {"in": (proc, ours)}
    got: list = []
    dp._ike_handlers[1] = lambda data, addr: got.append((data, addr))
    dp._start_reader()
    yield dp, worker_end, got
    dp._closed = True
    os.write(dp._wake_w, b"x")
    dp._reader.join(5)
    proc.kill()
    proc.join(5)


@pytest.fixture
def dispatcher_for_channel():
    from ocfpy.crypto.dispatcher import Dispatcher

    return Dispatcher()


def _wait(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_reader_survives_any_record(reading):
    dp, w, got = reading
    w.send(b"P" + b"\x00" * (MAX_MESSAGE + 10))  # truncated
    w.send(b"P" + b"not a pickle")  # unreadable
    w.send(b"Q")  # unknown framing
    w.send(b"P" + pickle.dumps(("event",)))  # well framed, wrong shape: _dispatch fails
    w.send(b"P" + pickle.dumps(("nonsense", 1)))  # an unknown kind is ignored
    big = os.urandom(65535)
    send_ike(w, big, ("198.51.100.9", 4500), 1)
    assert _wait(lambda: got), dp.channel
    assert got == [(big, ("198.51.100.9", 4500))]
    assert dp._reader.is_alive()
    assert dp.channel["channel_truncated"] == 1 and dp.channel["channel_errors"] == 2
    assert dp.channel["reader_errors"] == 1
    stats = dp.stats()
    assert stats["channel_truncated"] == 1 and "malformed" in stats


def test_watchdog_restarts_a_dead_reader(reading):
    dp, w, got = reading
    dead = threading.Thread(target=lambda: None)
    dead.start()
    dead.join()
    old, dp._reader = dp._reader, dead
    dp.check_workers()
    assert dp.channel["reader_restarts"] == 1 and dp._reader.is_alive()
    send_ike(w, b"after", ("192.0.2.1", 500), 1)
    assert _wait(lambda: got)  # one of the two readers took it; the new one is serving
    dp._closed = True
    os.write(dp._wake_w, b"x")
    old.join(5)
    os.write(dp._wake_w, b"x")
