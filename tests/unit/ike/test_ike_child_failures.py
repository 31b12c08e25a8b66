"""Every way a CHILD_SA (or IKE SA) rekey or creation can fail gives back what it held: the
inbound SPI we put in our SA payload is free again, and the PFS key exchange session is closed.
Answers are tampered with the real peer's keys (decrypt with the receiver's SA, edit, seal with
the sender's SA), so each failure path runs through the real engines."""

from __future__ import annotations

import pytest

from ocfpy.ike import codec, selectors
from ocfpy.ike.codec.message import Message, encode
from ocfpy.ike.codec.payloads import KePayload, NotifyPayload, SaPayload, TsPayload
from ocfpy.ike.constants import NotifyType, PayloadType
from ocfpy.ike.events import ChildSaEstablished, NegotiationFailed
from ocfpy.ike.tasks.child_create import ChildCreate
from ocfpy.ike.tasks.child_rekey import ChildRekey
from ocfpy.ike.tasks.ike_rekey import IkeRekey

PFS = ["aes128gcm16-ecp256"]  # CREATE_CHILD_SA with a KE payload; ECP so a bad point is refused


def open_sessions(dispatcher) -> set:
    return {s for r in dispatcher.registry.records() for s in r.sessions}


def only_sa(engine):
    (sa,) = engine.sas
    return sa


def tamper(pair, src, dst, edit) -> None:
    """Deliver src's one pending message to dst with its payloads passed through ``edit``."""
    (data, local, remote), = src.datagrams_to_send(pair.now)
    msg = codec.decode(data)
    msg.decrypt(only_sa(dst).crypto)
    forged = Message(msg.spi_i, msg.spi_r, msg.exchange, msg.message_id, msg.is_response,
                     msg.from_initiator, edit(list(msg.payloads)))
    dst.receive_datagram(encode(forged, only_sa(src).crypto), remote, local, pair.now)
    pair.run()


def without(ptype):
    return lambda ps: [p for p in ps if p.TYPE != ptype]


def replace(ptype, make):
    return lambda ps: [make(p) if p.TYPE == ptype else p for p in ps]


def _wider_tsi(p: TsPayload) -> TsPayload:
    return TsPayload([selectors.to_raw(t) for t in selectors.parse(["0.0.0.0/0"], "10.0.0.1")],
                     True)


def _bad_point(p: KePayload) -> KePayload:
    return KePayload(p.group, bytes(len(p.data)))


def _two_proposals(p: SaPayload) -> SaPayload:
    return SaPayload(p.proposals * 2)


ANSWERS = {
    "error-notify": lambda ps: [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)],
    "no-sa": without(PayloadType.SA),
    "no-nonce": without(PayloadType.NONCE),
    "proposal-not-ours": replace(PayloadType.SA, _two_proposals),
    "ts-not-within": replace(PayloadType.TSi, _wider_tsi),
    "no-ke": without(PayloadType.KE),
    "invalid-ke-value": replace(PayloadType.KE, _bad_point),
}


def _start(pair, how: str):
    """Start a CHILD_SA exchange on the established pair; returns (the ChildCreate, its SPI,
    its KE session, the CHILD_SA it would replace or None)."""
    sa = only_sa(pair.i)
    old = sa.children[0]
    if how == "rekey":
        pair.i.rekey_child(old.unique_id, pair.now)
        task = sa.tasks.active[0]
        assert isinstance(task, ChildRekey)
        create = task.create
    else:
        pair.i.initiate_child(sa.id, "net", pair.now)
        create = sa.tasks.active[0]
        assert isinstance(create, ChildCreate)
        old = None
    assert create.spi_in and pair.i.ctx.spis.child_in_use(create.spi_in)
    assert create.ke is not None and create.ke in open_sessions(pair.i.dispatcher)
    return create, create.spi_in, create.ke, old


def _assert_released(pair, create, spi, ke) -> None:
    assert not pair.i.ctx.spis.child_in_use(spi)
    assert create.ke is None and ke not in open_sessions(pair.i.dispatcher)


@pytest.mark.parametrize("how", ["rekey", "new"])
@pytest.mark.parametrize("answer", list(ANSWERS))
def test_a_bad_answer_releases_the_spi_and_the_ke(initiator_and_responder, answer, how):
    pair = initiator_and_responder(esp=PFS)
    pair.establish()
    before = len(pair.of_type("i", ChildSaEstablished))
    create, spi, ke, old = _start(pair, how)
    pair.deliver(pair.i, pair.r)  # the genuine request; its answer is what gets tampered
    tamper(pair, pair.r, pair.i, ANSWERS[answer])
    _assert_released(pair, create, spi, ke)
    (fail,) = [e for e in pair.of_type("i", NegotiationFailed) if "CHILD_SA net" in e.explanation]
    assert len(pair.of_type("i", ChildSaEstablished)) == before  # no CHILD_SA was made
    sa = only_sa(pair.i)
    assert sa.is_established  # a CHILD_SA failure leaves the IKE SA (RFC 7296 2.21.3)
    if old is not None:
        assert sa.children == [old] and not old.rekeyed  # the old CHILD_SA carries on


@pytest.mark.parametrize("how", ["rekey", "new"])
def test_no_answer_releases_the_spi_and_the_ke(initiator_and_responder, how):
    pair = initiator_and_responder(esp=PFS)
    pair.establish()
    create, spi, ke, _ = _start(pair, how)
    pair.advance(600.0, drop=lambda d: True)  # every retransmit lost: the IKE SA dies
    assert pair.i.sa_list() == []
    _assert_released(pair, create, spi, ke)


def test_closing_the_ike_sa_mid_exchange_releases_the_spi_and_the_ke(initiator_and_responder):
    pair = initiator_and_responder(esp=PFS)
    pair.establish()
    create, spi, ke, _ = _start(pair, "rekey")
    pair.i.shutdown(pair.now)
    _assert_released(pair, create, spi, ke)


def test_failed_authentication_releases_the_first_childs_spi(initiator_and_responder):
    pair = initiator_and_responder(r_psk=b"not the same key")
    pair.i.initiate("home", pair.now)
    pair.deliver(pair.i, pair.r)
    pair.deliver(pair.r, pair.i)  # IKE_SA_INIT done; the IKE_AUTH request carries the child
    create = next(t for t in only_sa(pair.i).tasks.active if isinstance(t, ChildCreate))
    spi = create.spi_in
    assert pair.i.ctx.spis.child_in_use(spi)
    pair.run()
    assert pair.i.sa_list() == []
    assert not pair.i.ctx.spis.child_in_use(spi)


def test_responder_refusing_a_bad_ke_value_closes_its_ke(initiator_and_responder):
    """The responder opens its PFS session, then finds the initiator's point invalid: it
    answers INVALID_SYNTAX for the CHILD_SA, holding neither a session nor an SPI."""
    pair = initiator_and_responder(esp=PFS)
    pair.establish()
    sessions = open_sessions(pair.i.dispatcher)
    r_spis = pair.r.ctx.spis.children_held
    create, spi, ke, _ = _start(pair, "rekey")
    tamper(pair, pair.i, pair.r, replace(PayloadType.KE, _bad_point))
    (fail,) = pair.of_type("r", NegotiationFailed)
    assert fail.notify == NotifyType.INVALID_SYNTAX
    _assert_released(pair, create, spi, ke)
    assert pair.r.ctx.spis.children_held == r_spis
    assert open_sessions(pair.i.dispatcher) == sessions  # both engines share the dispatcher


def test_ike_rekey_refused_for_a_bad_ke_value_closes_both_kes(initiator_and_responder):
    pair = initiator_and_responder()
    pair.establish()
    sessions = open_sessions(pair.i.dispatcher)
    sa = only_sa(pair.i)
    pair.i.rekey_ike(sa.id, pair.now)
    (task,) = sa.tasks.active
    assert isinstance(task, IkeRekey) and task.ke in open_sessions(pair.i.dispatcher)
    tamper(pair, pair.i, pair.r, replace(PayloadType.KE, _bad_point))
    assert task.ke is None
    assert open_sessions(pair.i.dispatcher) == sessions
    assert [s.id for s in pair.i.sas] == [sa.id]  # the old IKE SA stays (RFC 7296 2.21)
