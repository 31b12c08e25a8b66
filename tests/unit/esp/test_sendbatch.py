"""The batched send (ocfpy/esp/sendbatch.py): sendmmsg through the compiled helper and the
sendto loop deliver the same datagrams in the same order and report the same refusals."""

from __future__ import annotations

import errno
import os
import socket

import pytest

from ocfpy.esp import sendbatch


@pytest.fixture(params=["compiled", "python"])
def send(request):
    if request.param == "python":
        return sendbatch.send_each
    if not sendbatch.COMPILED:
        pytest.skip("the compiled helper ocfpy.esp._mmsg is not loaded")
    return sendbatch.send_batched


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"),
                                         (socket.AF_INET6, "::1")], ids=["v4", "v6"])
def test_every_datagram_arrives_whole_and_in_order(send, family, host):
    rx = socket.socket(family, socket.SOCK_DGRAM)
    tx = socket.socket(family, socket.SOCK_DGRAM)
    try:
        rx.bind((host, 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        rx.settimeout(2)
        tx.setblocking(False)
        # 150 datagrams: more than two of the helper's 64-datagram sendmmsg calls
        datagrams = [os.urandom(n) for n in [0, 1, 64, 1400, 9000] * 30]
        errors = []
        assert send(tx, datagrams, rx.getsockname()[:2], errors.append) == 0 and not errors
        got = [rx.recv(65535) for _ in datagrams]
        assert got == datagrams
    finally:
        rx.close()
        tx.close()


def test_refusals_are_counted_one_by_one(send):
    """Broadcast without SO_BROADCAST: the kernel refuses each datagram (EACCES); all are
    counted and reported as the OSError sendto raises."""
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        tx.setblocking(False)
        errors = []
        assert send(tx, [b"x"] * 70, ("255.255.255.255", 4500), errors.append) == 70
        assert len(errors) == 70
        assert all(isinstance(e, OSError) and e.errno == errno.EACCES for e in errors)
    finally:
        tx.close()


def test_a_name_not_an_address_goes_through_sendto(send):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(2)
        assert send(tx, [b"a", b"b"], ("localhost", rx.getsockname()[1]), print) == 0
        assert [rx.recv(10), rx.recv(10)] == [b"a", b"b"]
    finally:
        rx.close()
        tx.close()
