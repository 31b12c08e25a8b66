"""UDP segmentation offload and GRO on real sockets (loopback, the host kernel): what the
receiver gets is exactly the datagrams that were handed to the sender, in order."""

from __future__ import annotations

import os
import select
import socket

import pytest

from ocfpy.esp import udpgso


def test_runs_group_equal_sizes_and_end_on_a_shorter_one():
    wires = [b"a" * 100] * 3 + [b"b" * 60] + [b"c" * 100] * 2 + [b"d" * 200] + [b"e" * 10]
    assert udpgso.runs(wires) == [(0, 4, 100), (4, 6, 100), (6, 8, 200)]
    assert udpgso.runs([]) == []
    many = [b"x" * 100] * 150
    assert [end - start for start, end, _ in udpgso.runs(many)] == [64, 64, 22]
    big = [b"y" * 1500] * 64
    assert all((end - start) * 1500 <= udpgso.MAX_RUN_BYTES for start, end, _ in udpgso.runs(big))


def _pair(gro: bool):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    if gro and not udpgso.enable_gro(rx):
        pytest.skip("this kernel has no UDP_GRO")
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return tx, rx


def _drain(rx: socket.socket, gro: bool, want: int) -> list[bytes]:
    got: list[bytes] = []
    rx.setblocking(False)
    while len(got) < want and select.select([rx], [], [], 2.0)[0]:
        if gro:
            datagrams, truncated = udpgso.receive(rx, 64, lambda exc: pytest.fail(str(exc)))
            assert truncated == 0
            got += [d for d, _ in datagrams]
        else:
            got.append(rx.recv(65535))
    return got


def _wires() -> list[bytes]:
    # ESP-like traffic: runs of full-sized packets, a short one, a different size, singles
    return ([os.urandom(1438) for _ in range(40)] + [os.urandom(90)]
            + [os.urandom(1438) for _ in range(70)] + [os.urandom(574) for _ in range(5)]
            + [os.urandom(1600), os.urandom(33)])


@pytest.mark.parametrize("gro", [False, True], ids=["plain-receiver", "gro-receiver"])
def test_segmented_sends_arrive_as_the_original_datagrams(gro):
    tx, rx = _pair(gro)
    with tx, rx:
        wires = _wires()
        sender = udpgso.SegmentingSender()
        errors: list[OSError] = []
        dropped = sender.send(tx, wires, rx.getsockname(), errors.append)
        assert (dropped, errors) == (0, [])
        assert sender.enabled, "the kernel refused UDP_SEGMENT"
        assert _drain(rx, gro, len(wires)) == wires


def test_a_run_the_kernel_refuses_goes_datagram_by_datagram():
    """With SO_NO_CHECK the kernel refuses segmentation offload (EINVAL): the sender falls
    back to one datagram per call for that run, and nothing is lost."""
    tx, rx = _pair(gro=False)
    with tx, rx:
        tx.setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK: no UDP checksum, no GSO
        try:
            tx.sendmsg([b"x" * 200], [(udpgso.SOL_UDP, udpgso.UDP_SEGMENT,
                                       (100).to_bytes(2, "little"))], 0, rx.getsockname())
        except OSError:
            pass
        else:
            pytest.skip("this kernel segments even without UDP checksums")
        _drain(rx, False, 0)
        wires = [os.urandom(500) for _ in range(10)]
        errors: list[OSError] = []
        assert udpgso.SegmentingSender().send(tx, wires, rx.getsockname(), errors.append) == 0
        assert errors == []
        assert _drain(rx, False, len(wires)) == wires
