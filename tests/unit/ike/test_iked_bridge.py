"""The daemon's dataplane bridge, driven by the daemon's own engine pump (iked/pump.py,
iked/reactions.py, iked/bridge.py): two real engines, each with the real parts of an iked
wired as IkeDaemon wires them, and a NullDataplane that writes every call into a journal the
wire writes into too. So each rekey path's dataplane steps are checked against the datagrams
as the daemon really orders them (make-before-break, docs/ike.md *Rekeying*): the inbound SA
is installed before the message that lets the peer use it leaves, sending switches only once
the peer can decrypt, and the old SA goes after the grace period.

test_rekey_ordering.py checks the same invariant on a model of a dataplane, in the engine
alone; this file checks that the daemon's parts keep it."""

from __future__ import annotations

import asyncio

import pytest

from ocfpy.esp.dataplane.null import NullDataplane
from ocfpy.ike.constants import ExchangeType
from ocfpy.iked.bridge import DataplaneBridge
from ocfpy.iked.context import DaemonContext
from ocfpy.iked.pump import EnginePump
from ocfpy.iked.reactions import Reactions
from ocfpy.iked.restarts import Restarts
from ocfpy.iked.traps import Traps
from ocfpy.iked.waiters import Waiters

GRACE = 2.0  # DaemonOptions.rekey_grace's default
RESPONSE = 0x20  # IKE header flag R (RFC 7296 3.1)


class ClockLoop(asyncio.SelectorEventLoop):
    """A real event loop whose clock the test moves (the engines run on the test's time)."""

    def __init__(self, start: float):
        super().__init__()
        self.now = start

    def time(self) -> float:
        return self.now

    def run_due(self) -> None:
        """Run what is due now (timers the clock has passed), a few rounds for follow-ups."""
        for _ in range(3):
            self.call_soon(self.stop)
            self.run_forever()


class JournalDataplane(NullDataplane):
    """The null dataplane, writing each call into the side's journal."""

    def __init__(self, journal: list):
        super().__init__()
        self.journal = journal

    def install(self, spec, *, outbound=True, replaces=None) -> None:
        super().install(spec, outbound=outbound, replaces=replaces)
        self.journal.append(("install", spec.unique_id, outbound, replaces))

    def activate(self, unique_id: int) -> None:
        assert unique_id in self.installed, f"switch to #{unique_id}, which is not installed"
        self.journal.append(("activate", unique_id))

    def remove(self, unique_id: int) -> None:
        super().remove(unique_id)
        self.journal.append(("remove", unique_id))


class Side:
    """One daemon's parts around an engine, wired as IkeDaemon.__init__ wires them."""

    def __init__(self, engine, loop: ClockLoop):
        self.engine = engine
        self.journal: list[tuple] = []
        self.outbox: list[tuple] = []
        self.dataplane = JournalDataplane(self.journal)
        self.ctx = ctx = DaemonContext(engine.config, engine, self.dataplane)
        ctx.loop = loop
        ctx.stopped = asyncio.Event()
        self.bridge = DataplaneBridge(ctx)
        traps = Traps(ctx, self.bridge.is_up)
        restarts = Restarts(ctx, traps, self.bridge.is_up)
        self.reactions = Reactions(ctx, self.bridge, restarts, Waiters(), self.send,
                                   lambda: None)
        self.pump = EnginePump(ctx, self.reactions, self.send)
        ctx.service = self.pump.service

    def send(self, data: bytes, local, remote) -> None:
        kind = ExchangeType(data[18]).name
        self.journal.append(("send", kind, "response" if data[19] & RESPONSE else "request"))
        self.outbox.append((data, local, remote))


class Daemons:
    def __init__(self, pair):
        self.loop = ClockLoop(pair.now)
        self.i = Side(pair.i, self.loop)
        self.r = Side(pair.r, self.loop)

    def settle(self) -> None:
        """Deliver every datagram, one at a time, in the order sent, until both are quiet;
        each delivery is followed by the daemon's flush (UdpSockets.on_readable's)."""
        self.i.pump.service()
        self.r.pump.service()
        for _ in range(50):
            moved = False
            for src, dst in ((self.i, self.r), (self.r, self.i)):
                batch, src.outbox = src.outbox, []
                for data, local, remote in batch:
                    dst.engine.receive_datagram(data, remote, local, self.loop.now)
                    dst.pump.service()
                    moved = True
            if not moved:
                return
        raise AssertionError("the daemons never went quiet")

    def advance(self, seconds: float) -> None:
        self.loop.now += seconds
        self.loop.run_due()
        self.settle()

    def close(self) -> None:
        for side in (self.i, self.r):
            side.pump.cancel_timer()
            side.bridge.cancel_retiring()
        self.loop.close()


@pytest.fixture
def daemons(initiator_and_responder):
    pair = initiator_and_responder(esp=["aes128gcm16-x25519"])  # PFS, as the soak runs
    d = Daemons(pair)
    pair.i.initiate("home", d.loop.now)
    d.settle()
    yield d
    d.close()


def _installed(side: Side) -> list[int]:
    return [e[1] for e in side.journal if e[0] == "install"]


def _mark(side: Side) -> int:
    """Forget the journal so far (the next test step starts clean)."""
    side.journal.clear()
    return 0


def test_a_new_child_is_installed_before_the_answer_that_announces_it(daemons):
    i, r = daemons.i, daemons.r
    (uid_r,) = _installed(r)
    # the responder: both directions at once (outbound=True), then its IKE_AUTH answer
    auth = r.journal.index(("send", "IKE_AUTH", "response"))
    assert r.journal[auth - 1] == ("install", uid_r, True, None)
    # the initiator installs once the answer is in: after its request left
    (uid_i,) = _installed(i)
    assert i.journal.index(("send", "IKE_AUTH", "request")) < \
        i.journal.index(("install", uid_i, True, None))
    assert not any(e[0] in ("activate", "remove") for e in i.journal + r.journal)
    assert i.ctx.stats["children_installed"] == r.ctx.stats["children_installed"] == 1


@pytest.mark.parametrize("starter", ["i", "r"])
def test_child_rekey_installs_inbound_switches_then_retires_the_old(daemons, starter):
    d = daemons
    s, o = (d.i, d.r) if starter == "i" else (d.r, d.i)
    old = {side: _installed(side)[0] for side in (s, o)}
    for side in (s, o):
        _mark(side)
    s.engine.rekey_child(old[s], d.loop.now)
    s.pump.service()
    d.settle()
    new = {side: _installed(side)[0] for side in (s, o)}
    ccs = "CREATE_CHILD_SA"
    # the one who answers: the new inbound SA accepts before its answer leaves, its
    # outbound waits for the starter's Delete of the old SA (RFC 7296 2.8)
    answer = o.journal.index(("send", ccs, "response"))
    assert o.journal.index(("install", new[o], False, old[o])) < answer
    assert o.journal.index(("activate", new[o])) > answer
    # the starter: install and switch as soon as the answer is in, then the Delete leaves
    request = s.journal.index(("send", ccs, "request"))
    inst = s.journal.index(("install", new[s], False, old[s]))
    act = s.journal.index(("activate", new[s]))
    delete = s.journal.index(("send", "INFORMATIONAL", "request"))
    assert request < inst < act < delete
    # the old SAs are not removed yet: their inbound side takes what is in flight
    for side in (s, o):
        assert ("remove", old[side]) not in side.journal
        assert old[side] in side.dataplane.installed and old[side] in side.bridge.retiring
    d.advance(GRACE + 0.1)
    for side in (s, o):
        assert side.journal[-1] == ("remove", old[side]), side.journal
        assert set(side.dataplane.installed) == {new[side]}
        assert not side.bridge.retiring
        assert side.reactions.rekeys["child"] == 1
        assert side.ctx.stats["children_switched"] == 1


@pytest.mark.parametrize("starter", ["i", "r"])
def test_ike_rekey_makes_no_dataplane_call(daemons, starter):
    d = daemons
    s = d.i if starter == "i" else d.r
    for side in (d.i, d.r):
        _mark(side)
    ike_id = s.engine.sa_list()[0]["id"]
    s.engine.rekey_ike(ike_id, d.loop.now)
    s.pump.service()
    d.settle()
    d.advance(GRACE + 0.1)
    for side in (d.i, d.r):
        assert [e for e in side.journal if e[0] != "send"] == []  # the CHILD_SA stays
        assert side.reactions.rekeys["ike"] == 1


def test_a_deleted_child_goes_at_once(daemons):
    d = daemons
    (uid_i,) = _installed(d.i)
    (uid_r,) = _installed(d.r)
    assert d.r.bridge.is_up("home/net") and d.r.bridge.installed_as("home/net") == uid_r
    _mark(d.i)
    _mark(d.r)
    d.i.engine.terminate(f"child:{uid_i}", d.loop.now)
    d.i.pump.service()
    d.settle()
    assert ("remove", uid_i) in d.i.journal and ("remove", uid_r) in d.r.journal
    assert not d.i.bridge.retiring and not d.r.bridge.retiring
    assert d.i.dataplane.installed == d.r.dataplane.installed == {}
    assert not d.r.bridge.is_up("home/net") and d.r.bridge.installed_as("home/net") is None
