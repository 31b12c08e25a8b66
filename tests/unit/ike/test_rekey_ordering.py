"""The order of dataplane steps at a rekey (issue 18, make-before-break; docs/ike.md
*Rekeying*), in the sans-I/O engine: two engines back to back, each with a model of a
dataplane that applies the engine's events the way the daemon does, events before the
datagrams of the same call (ocfpy/iked/pump.py; test_iked_bridge.py runs the daemon's own
parts the same way).

Each model records its calls (install inbound, install outbound, switch, remove) and the
invariant is checked after every step of every exchange: whatever SPI a side sends on, the
other side accepts at that moment. A packet sent at any point of a rekey therefore finds an
SA, whichever side starts it, and when both start at once (RFC 7296 2.8.1)."""

from __future__ import annotations

import pytest

from ocfpy.ike.engine import IkeEngine
from ocfpy.ike.events import (
    ChildSaClosed,
    ChildSaEstablished,
    ChildSaOutbound,
    IkeSaClosed,
    IkeSaEstablished,
)

GRACE = 2.0  # DaemonOptions.rekey_grace's default


class DataplaneModel:
    """What a dataplane holds, per CHILD_SA: an inbound SA that accepts from install until
    its removal (after the grace when the event asks for one), and an outbound SA that is
    sent on from activation (newest activation wins, as the SPD and the kernel pick)."""

    def __init__(self, name: str):
        self.name = name
        self.calls: list[tuple] = []
        self.inbound: dict[int, int] = {}  # unique id -> SPI accepted
        self.outbound: dict[int, int] = {}  # unique id -> SPI, installed
        self.active: list[int] = []  # unique ids sent on, oldest first
        self.retiring: dict[int, float] = {}  # unique id -> when its inbound SA goes
        self.sent = 0  # datagrams this side has put on the wire

    def apply(self, event, now: float) -> None:
        match event:
            case ChildSaEstablished(spec=spec, outbound=outbound):
                uid = spec.unique_id
                self.inbound[uid] = spec.inbound.spi
                self.outbound[uid] = spec.outbound.spi
                self.calls.append(("install_in", uid, self.sent))
                self.calls.append(("install_out", uid, self.sent))
                if outbound:
                    self._switch(uid)
            case ChildSaOutbound(unique_id=uid):
                assert uid in self.outbound, f"{self.name}: switch to #{uid}, not installed"
                self._switch(uid)
            case ChildSaClosed(unique_id=uid, grace=grace):
                self.calls.append(("remove", uid, grace))
                self.outbound.pop(uid, None)
                if uid in self.active:
                    self.active.remove(uid)
                if grace > 0:
                    self.retiring[uid] = now + grace
                else:
                    self.inbound.pop(uid, None)

    def _switch(self, uid: int) -> None:
        self.calls.append(("switch", uid, self.sent))
        if uid in self.active:
            self.active.remove(uid)
        self.active.append(uid)

    def expire(self, now: float) -> None:
        for uid, when in list(self.retiring.items()):
            if when <= now:
                del self.retiring[uid]
                self.inbound.pop(uid, None)

    @property
    def sending_on(self) -> int | None:
        """The SPI the next packet goes out with (None: it would be dropped)."""
        return self.outbound[self.active[-1]] if self.active else None


class Wire:
    """Both engines, their dataplane models, and a clock. Each round takes what both
    sides have to send, then delivers it, so two requests sent together cross."""

    def __init__(self, pair):
        self.pair = pair
        self.models = {"i": DataplaneModel("i"), "r": DataplaneModel("r")}
        self.engines = {"i": pair.i, "r": pair.r}
        self.checks = 0
        self.armed = False  # checked from the first CHILD_SA on (set by the fixture)

    def _service(self, side: str) -> list:
        """The daemon's order: events first, then the datagrams."""
        engine: IkeEngine = self.engines[side]
        model = self.models[side]
        while (ev := engine.next_event()) is not None:
            model.apply(ev, self.pair.now)
            self.pair.events[side].append(ev)
        out = engine.datagrams_to_send(self.pair.now)
        model.sent += len(out)
        # what the sender accepted when these left: the peer may act on them at once
        accepted = frozenset(model.inbound.values())
        return [(d, accepted) for d in out]

    def check(self) -> None:
        """Each side sends on an SPI the other side accepts."""
        if not self.armed:
            return
        self.checks += 1
        for me, peer in (("i", "r"), ("r", "i")):
            spi = self.models[me].sending_on
            accepted = set(self.models[peer].inbound.values())
            assert spi is not None and spi in accepted, (
                f"{me} sends on {spi!r}, {peer} accepts {sorted(accepted)}; calls: "
                f"i {self.models['i'].calls}, r {self.models['r'].calls}")

    def run(self, rounds: int = 30) -> None:
        for _ in range(rounds):
            if not self._step_all():
                return

    def _step_all(self) -> int:
        """Deliver until quiet: every datagram is delivered one at a time, in the order
        sent, both directions interleaved per round."""
        moved = 0
        queues = {side: self._service(side) for side in ("i", "r")}
        self.check()
        while queues["i"] or queues["r"]:
            for src, dst in (("i", "r"), ("r", "i")):
                batch, queues[src] = queues[src], []
                for (data, local, remote), accepted in batch:
                    self.engines[dst].receive_datagram(data, remote, local, self.pair.now)
                    moved += 1
                    queues[dst] += self._service(dst)
                    self.check()
                    # the receiver may switch on this message: the sender must have
                    # accepted the new SPI already when the message left, not just now
                    if self.armed:
                        spi = self.models[dst].sending_on
                        assert spi in accepted, (
                            f"{dst} switched to {spi:#x} on a message {src} sent while it "
                            f"accepted only {sorted(accepted)}")
        return moved

    def advance(self, seconds: float) -> None:
        end = self.pair.now + seconds
        while True:
            due = [t for t in (self.pair.i.get_timer(), self.pair.r.get_timer())
                   if t is not None and t <= end]
            if not due:
                break
            self.pair.now = max(self.pair.now, min(due))
            for e in (self.pair.i, self.pair.r):
                t = e.get_timer()
                if t is not None and t <= self.pair.now:
                    e.handle_timer(self.pair.now)
            self._expire()
            self.run()
        self.pair.now = end
        self._expire()
        self.run()

    def _expire(self) -> None:
        for m in self.models.values():
            m.expire(self.pair.now)
        self.check()


@pytest.fixture
def wire(initiator_and_responder):
    pair = initiator_and_responder(esp=["aes128gcm16-x25519"])  # PFS, as the soak runs
    w = Wire(pair)
    pair.i.initiate("home", pair.now)
    w.run()
    assert [c[0] for c in w.models["i"].calls] == ["install_in", "install_out", "switch"]
    for m in w.models.values():
        m.calls.clear()
    w.armed = True
    w.check()
    return w


def _uids(w: Wire, side: str) -> list[int]:
    return [e.spec.unique_id for e in w.pair.events[side] if isinstance(e, ChildSaEstablished)]


def _steps(model: DataplaneModel) -> list[str]:
    return [c[0] for c in model.calls]


@pytest.mark.parametrize("starter", ["i", "r"])
def test_child_rekey_installs_then_switches_then_removes(wire, starter):
    w = wire
    other = "r" if starter == "i" else "i"
    old = {s: _uids(w, s)[0] for s in "ir"}
    w.engines[starter].rekey_child(old[starter], w.pair.now)
    w.run()
    new = {s: _uids(w, s)[1] for s in "ir"}
    for side in "ir":
        assert w.models[side].calls[:3] == [
            ("install_in", new[side], w.models[side].calls[0][2]),
            ("install_out", new[side], w.models[side].calls[1][2]),
            ("switch", new[side], w.models[side].calls[2][2])]
        assert w.models[side].calls[3] == ("remove", old[side], GRACE)
        assert len(w.models[side].calls) == 4
    s_calls, o_calls = w.models[starter].calls, w.models[other].calls
    # the responder installed before its CREATE_CHILD_SA answer left (it had sent nothing
    # of this exchange yet), and switched only after the Delete of the old SA arrived:
    # by then it had sent its answer (1 datagram more)
    assert o_calls[0][2] == o_calls[1][2]
    assert o_calls[2][2] == o_calls[0][2] + 1
    # the initiator switched as soon as the answer was in, before it sent the Delete
    assert s_calls[2][2] == s_calls[0][2]
    # the old inbound SAs still accept, for the grace period; then they go
    for side in "ir":
        assert old[side] in w.models[side].inbound
    w.advance(GRACE + 0.1)
    for side in "ir":
        assert old[side] not in w.models[side].inbound
        assert w.models[side].sending_on == w.models[side].outbound[new[side]]


@pytest.mark.parametrize("starter", ["i", "r"])
def test_ike_rekey_touches_no_dataplane_state(wire, starter):
    w = wire
    spis = {s: (w.models[s].sending_on, dict(w.models[s].inbound)) for s in "ir"}
    ike_id = w.engines[starter].sa_list()[0]["id"]
    w.engines[starter].rekey_ike(ike_id, w.pair.now)
    w.run()
    for side in "ir":
        assert w.models[side].calls == []  # the CHILD_SAs keep their SPIs and counters
        assert (w.models[side].sending_on, w.models[side].inbound) == spis[side]
        assert [type(e) for e in w.pair.events[side][-2:]] == [IkeSaEstablished, IkeSaClosed]


def test_simultaneous_child_rekeys_keep_one_and_lose_nothing(wire):
    w = wire
    old = {s: _uids(w, s)[0] for s in "ir"}
    for side in "ir":  # both requests are on the wire before either arrives
        w.engines[side].rekey_child(old[side], w.pair.now)
    w.run()
    stats = {s: w.engines[s].stats for s in "ir"}
    assert stats["i"]["rekey_collisions_won"] + stats["r"]["rekey_collisions_won"] == 1
    assert stats["i"]["rekey_collisions_lost"] + stats["r"]["rekey_collisions_lost"] == 1
    w.advance(GRACE + 0.1)
    # one CHILD_SA left on each side, the same pair of SPIs, and it is the one sent on
    (ci,), (cr,) = (w.engines[s].sa_list()[0]["children"] for s in "ir")
    assert (ci["spi_in"], ci["spi_out"]) == (cr["spi_out"], cr["spi_in"])
    for side, c in (("i", ci), ("r", cr)):
        m = w.models[side]
        assert m.active == [c["unique_id"]]
        assert set(m.inbound) == {c["unique_id"]}
        # the loser's redundant SA was never sent on
        switched = [call[1] for call in m.calls if call[0] == "switch"]
        assert switched == [c["unique_id"]]


def test_child_rekey_then_ike_rekey_hands_the_delete_to_the_new_ike_sa(wire):
    """A Delete of a rekeyed CHILD_SA queued behind an IKE rekey moves to the new IKE SA
    (rekey.adopt): it is what lets the responder switch and the old inbound SA go."""
    w = wire
    old = {s: _uids(w, s)[0] for s in "ir"}
    ike_id = w.pair.i.sa_list()[0]["id"]
    w.pair.i.rekey_child(old["i"], w.pair.now)  # in flight
    w.pair.i.rekey_ike(ike_id, w.pair.now)  # queued: runs before the Delete is queued
    w.run()
    w.advance(1.0)  # the new IKE SA starts the moved Delete from its timer
    w.advance(GRACE + 0.1)
    for side in "ir":
        (sa,) = w.engines[side].sa_list()
        assert sa["id"] != ike_id or side == "r"
        assert len(sa["children"]) == 1  # the old CHILD_SA is deleted on both sides
        assert [c[0] for c in w.models[side].calls] == \
            ["install_in", "install_out", "switch", "remove"]


# -- re-establishment of a connection a reload changed (make-before-break) ---------------------
def _changed(engine: IkeEngine):
    """``engine``'s config with connection "home" changed (a reload: the SAs under the old
    one are re-established at their next rekey)."""
    import dataclasses

    cfg = engine.config
    home = dataclasses.replace(cfg.connections["home"], dpd_delay=123.0)
    return dataclasses.replace(cfg, connections={**cfg.connections, "home": home})


def test_reestablishment_keeps_the_responder_on_the_old_sa_until_the_delete(wire):
    """The failure of tests/net/test_iked_service_live.py's reload test: the responder of the
    new IKE SA sent on its new CHILD_SA before its IKE_AUTH answer left, so before the
    initiator could accept it. Now it keeps sending on the old one until the old IKE SA's
    Delete, and both old inbound SAs take packets for the grace period."""
    w = wire
    old = {s: _uids(w, s)[0] for s in "ir"}
    old_ike = w.pair.i.sa_list()[0]["id"]
    w.pair.i.reload(_changed(w.pair.i), w.pair.now)
    w.pair.i.rekey_ike(old_ike, w.pair.now)  # its rekey: a re-establishment
    w.run()  # w.check() after every message: each side sends on an SPI the other accepts
    assert w.pair.i.stats["reestablished_after_reload"] == 1
    new = {s: _uids(w, s)[1] for s in "ir"}
    i_calls, r_calls = w.models["i"].calls, w.models["r"].calls
    assert _steps(w.models["i"]) == ["install_in", "install_out", "switch", "remove"]
    assert _steps(w.models["r"]) == ["install_in", "install_out", "switch", "remove"]
    # the initiator sends on the new SA as soon as the IKE_AUTH answer is in (the responder
    # installed before answering), before it sends the Delete of the old IKE SA
    assert i_calls[2] == ("switch", new["i"], i_calls[0][2])
    # the responder switched after its IKE_AUTH answer left (one datagram more), when the
    # Delete of the old IKE SA arrived, and before the old SA went
    assert r_calls[2] == ("switch", new["r"], r_calls[0][2] + 1)
    for side in "ir":
        assert w.models[side].calls[3] == ("remove", old[side], GRACE)
        assert old[side] in w.models[side].inbound  # the grace period
        assert w.engines[side].stats["children_reestablished"] == 1
    w.advance(GRACE + 0.1)
    for side in "ir":
        assert old[side] not in w.models[side].inbound
        assert w.models[side].sending_on == w.models[side].outbound[new[side]]


def test_reestablishment_responder_switches_on_the_first_authenticated_packet(
        initiator_and_responder):
    """RFC 7296 2.8: a packet authenticated under the new inbound SA (the dataplane's
    "inbound" event) shows that the peer has the SA: the responder switches then, before the
    Delete of the old IKE SA; that Delete then only retires the old SA (with the grace)."""
    pair = initiator_and_responder(esp=["aes128gcm16-x25519"])
    pair.i.initiate("home", pair.now)
    pair.run()
    old_r = next(e.spec.unique_id for e in pair.events["r"] if isinstance(e, ChildSaEstablished))
    old_ike = pair.i.sa_list()[0]["id"]
    pair.i.reload(_changed(pair.i), pair.now)
    pair.i.rekey_ike(old_ike, pair.now)
    for src, dst in ((pair.i, pair.r), (pair.r, pair.i), (pair.i, pair.r)):  # INIT, AUTH
        assert pair.deliver(src, dst) == 1
    pair.collect()
    (est,) = [e for e in pair.events["r"] if isinstance(e, ChildSaEstablished)
              and e.spec.unique_id != old_r]
    assert (est.outbound, est.replaces) == (False, old_r)
    assert pair.deliver(pair.r, pair.i) == 1  # the IKE_AUTH answer; the Delete waits in i
    pair.events["r"].clear()
    pair.r.child_sa_inbound(old_r, pair.now)  # the old SA's traffic switches nothing
    pair.collect()
    assert pair.events["r"] == []
    pair.r.child_sa_inbound(est.spec.unique_id, pair.now)
    pair.collect()
    assert pair.events["r"] == [ChildSaOutbound(est.ike_id, est.spec.unique_id)]
    assert pair.r.stats["child_switches_on_inbound"] == 1
    pair.events["r"].clear()
    pair.run()  # the Delete of the old IKE SA
    closed = [e for e in pair.events["r"] if isinstance(e, ChildSaClosed)]
    assert [(e.unique_id, e.grace) for e in closed] == [(old_r, GRACE)]
    assert not any(isinstance(e, ChildSaOutbound) for e in pair.events["r"])
