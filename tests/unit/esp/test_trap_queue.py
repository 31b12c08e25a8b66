"""Trap policies in the userspace dataplane's outbound loop (issue 16), without root: the
rig of test_loops.py (AF_UNIX datagram pairs for the TUN, ESP-in-UDP over loopback). A packet
for a trapped selector with no CHILD_SA is held (bounded) and one acquire goes to the daemon;
the daemon's release, once every worker has the CHILD_SA, sends what it covers, in order; the
rest is dropped and counted (queue full, held too long, trap removed)."""

from __future__ import annotations

import time

import pytest
from test_loops import _drain, _pkt, _wire

from ocfpy.esp.dataplane.base import TrapSpec
from ocfpy.esp.spec import TrafficSelector
from ocfpy.esp.worker import recv_msg


def _trap(queue: int = 2, timeout: float = 5.0, interval: float = 1.0) -> TrapSpec:
    return TrapSpec("c/net", (TrafficSelector.from_network("10.1.0.0/16"),),
                    (TrafficSelector.from_network("10.2.0.0/16"),), queue=queue,
                    queue_timeout=timeout, acquire_interval=interval)


@pytest.fixture
def rig(dispatcher):
    rig = _wire(dispatcher)
    yield rig
    for s in rig["sockets"]:
        s.close()


def _messages(sock) -> list[tuple]:
    sock.setblocking(False)
    out = []
    while True:
        try:
            msg, _ = recv_msg(sock)
        except BlockingIOError:
            return out
        out.append(msg)


def test_held_until_the_child_sa_is_installed_then_released_in_order(rig):
    out, inb = rig["out"], rig["in"]
    out.trap(_trap(queue=2))
    packets = [_pkt("10.1.0.1", "10.2.0.7", i) for i in range(3)]
    for p in packets:
        rig["tun_a"].send(p)
    rig["tun_a"].send(_pkt("10.9.0.1", "10.2.0.7"))  # neither an SA nor a trap covers it
    out.on_readable(None)
    # one acquire, with the packet's flow (for the daemon's log and narrowing)
    assert _messages(rig["daemon_a"]) == [("acquire", "c/net", "10.1.0.1", "10.2.0.7", 1, 0, 0)]
    assert rig["counters"].global_counters()["no_policy"] == 1
    assert out.trap_stats() == {"c/net": {"queued": 2, "dropped_full": 1, "acquires": 1,
                                          "holding": 2}}
    rig["tun_a"].send(_pkt("10.1.0.1", "10.2.0.7", 9))  # within the interval: no new acquire
    out.on_readable(None)
    assert _messages(rig["daemon_a"]) == []
    assert out.trap_stats()["c/net"]["dropped_full"] == 2
    with pytest.raises(BlockingIOError):  # nothing went out yet
        rig["udp_b"].recv(65535)

    counters = rig["counters"]
    slot_a, slot_b = counters.allocate(), counters.allocate()
    out.install(rig["spec_a"], slot_a)
    # installed, but nothing leaves before the daemon's release: it comes once every worker
    # has the SA, so the answer to a held packet never finds an inbound worker without it
    with pytest.raises(BlockingIOError):
        rig["udp_b"].recv(65535)
    assert out.trap_stats()["c/net"]["holding"] == 2
    inb.install(rig["spec_b"], slot_b)
    out.release()  # the CHILD_SA is up: the held packets leave through it
    inb.on_readable(rig["udp_b"])
    assert _drain(rig["tun_b"]) == packets[:2]  # the first two, in the order they came
    assert out.trap_stats()["c/net"] == {"queued": 2, "dropped_full": 2, "acquires": 1,
                                         "released": 2, "holding": 0}
    assert counters.sa_counters(slot_a).packets_out == 2
    # with the SA up the trap sees nothing: packets go straight through, no acquire
    rig["tun_a"].send(packets[2])
    out.on_readable(None)
    inb.on_readable(rig["udp_b"])
    assert _drain(rig["tun_b"]) == [packets[2]]
    assert _messages(rig["daemon_a"]) == []
    assert out.trap_stats()["c/net"]["acquires"] == 1


def test_held_packets_expire_and_a_removed_trap_drops_what_it_held(rig):
    out = rig["out"]
    out.trap(_trap(queue=4, timeout=0.05, interval=0.0))
    rig["tun_a"].send(_pkt("10.1.0.1", "10.2.0.7", 1))
    out.on_readable(None)
    wake = out.next_wakeup()
    assert wake is not None and 0 < wake <= 0.1
    time.sleep(0.1)
    out.expire()
    assert out.trap_stats()["c/net"] == {"queued": 1, "dropped_timeout": 1, "acquires": 1,
                                         "holding": 0}
    assert out.next_wakeup() is None  # nothing held: the loop sleeps on its sockets only
    for i in range(2):  # interval 0: each burst may acquire again
        rig["tun_a"].send(_pkt("10.1.0.1", "10.2.0.7", i))
        out.on_readable(None)
    assert [m[0] for m in _messages(rig["daemon_a"])] == ["acquire"] * 3
    out.untrap("c/net")
    assert out.trap_stats() == {}
    assert out.holding == 0
    rig["tun_a"].send(_pkt("10.1.0.1", "10.2.0.7", 5))  # no trap now: no policy
    out.on_readable(None)
    assert rig["counters"].global_counters()["no_policy"] == 1


def test_a_replaced_trap_keeps_its_held_packets_within_the_new_bound(rig):
    out = rig["out"]
    out.trap(_trap(queue=3))
    for i in range(3):
        rig["tun_a"].send(_pkt("10.1.0.1", "10.2.0.7", i))
    out.on_readable(None)
    out.trap(_trap(queue=1))  # a reload with a smaller queue
    assert out.trap_stats()["c/net"] == {"queued": 3, "dropped_full": 2, "acquires": 1,
                                         "holding": 1}
