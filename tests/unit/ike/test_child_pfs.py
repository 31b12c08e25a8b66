"""PFS in CREATE_CHILD_SA for children configured without a KE group (issue 15: libreswan's
default pfs=yes against charon's default ESP proposals, which name no group).

As initiator we offer the IKE SA's group and NONE (RFC 7296 3.3.2 / 3.3.3); as responder we
take a group the initiator insists on if we accept it for IKE. Messages run between two real
engines; where a peer of another make is played, its message is decrypted with the receiver's
IKE SA, edited, and sealed again with the sender's (as in test_ike_child_failures), so every
path runs through the real tasks. The keys are checked against RFC 7296 2.17 KEYMAT computed
from the nonces on the wire: with g^ir mixed in or not."""

from __future__ import annotations

import pytest

from ocfpy.crypto.catalogue import TransformType
from ocfpy.ike import codec
from ocfpy.ike.codec.message import Message, encode
from ocfpy.ike.codec.payloads import RawProposal, SaPayload
from ocfpy.ike.constants import NotifyType, PayloadType
from ocfpy.ike.events import ChildSaEstablished, NegotiationFailed
from ocfpy.ike.keys import child_keys

KE = int(TransformType.KE)
X25519, ECP256, MODP2048 = 31, 19, 14


def only_sa(engine):
    (sa,) = engine.sas
    return sa


def relay(pair, src, dst, edit=None) -> list:
    """Deliver src's one pending message to dst, its payloads passed through ``edit``; returns
    the payloads as delivered."""
    (data, local, remote), = src.datagrams_to_send(pair.now)
    msg = codec.decode(data)
    msg.decrypt(only_sa(dst).crypto)
    payloads = list(msg.payloads)
    if edit is not None:
        payloads = edit(payloads)
    forged = Message(msg.spi_i, msg.spi_r, msg.exchange, msg.message_id, msg.is_response,
                     msg.from_initiator, payloads)
    dst.receive_datagram(encode(forged, only_sa(src).crypto), remote, local, pair.now)
    return payloads


def get(payloads, ptype):
    return next((p for p in payloads if p.TYPE == ptype), None)


def ke_ids(sa_payload: SaPayload) -> list[list[int]]:
    return [[t.id for t in p.transforms if t.type == KE] for p in sa_payload.proposals]


def keep_ke(ids: set[int] | None, *, drop_ke_payload: bool = False):
    """An edit: in every proposal keep only the KE transforms in ``ids`` (None: drop the KE
    type altogether, as charon without PFS sends and answers); optionally drop the KE payload."""
    def edit(payloads):
        out = []
        for p in payloads:
            if p.TYPE == PayloadType.KE and drop_ke_payload:
                continue
            if p.TYPE == PayloadType.SA:
                p = SaPayload([RawProposal(r.number, r.protocol, r.spi, [
                    t for t in r.transforms if t.type != KE or (ids is not None and t.id in ids)])
                    for r in p.proposals])
            out.append(p)
        return out
    return edit


def rekey(pair, edit_request=None, edit_answer=None):
    """The initiator rekeys its CHILD_SA; returns (request payloads, answer payloads)."""
    old = only_sa(pair.i).children[0]
    pair.i.rekey_child(old.unique_id, pair.now)
    request = relay(pair, pair.i, pair.r, edit_request)
    answer = relay(pair, pair.r, pair.i, edit_answer)
    pair.run()
    return request, answer


def expected_keys(pair, request, answer, shared: bytes = b""):
    """RFC 7296 2.17: KEYMAT = prf+(SK_d, [g^ir (new)] | Ni | Nr) for the new CHILD_SA."""
    sa = only_sa(pair.i)
    spec = pair.of_type("i", ChildSaEstablished)[-1].spec
    chosen = get(answer, PayloadType.SA).proposals[0]
    from ocfpy.ike.proposals import from_raw

    prop = from_raw(chosen)
    km = child_keys(pair.i.dispatcher, sa.prf, sa.keys.sk_d, get(request, PayloadType.NONCE).data,
                    get(answer, PayloadType.NONCE).data, prop.first(TransformType.ENCR),
                    prop.first(TransformType.INTEG), shared)
    return spec, km


def assert_rekeyed(pair):
    """One new CHILD_SA on each side, the same keys crossed (both sides derived alike)."""
    new_i = pair.of_type("i", ChildSaEstablished)[-1].spec
    new_r = pair.of_type("r", ChildSaEstablished)[-1].spec
    assert len(pair.of_type("i", ChildSaEstablished)) == 2, pair.of_type("i", NegotiationFailed)
    assert new_i.outbound == new_r.inbound and new_i.inbound == new_r.outbound
    return new_i


# -- initiator: what we offer ------------------------------------------------------------------
@pytest.mark.parametrize("ike,group", [("aes128gcm16-prfsha256-x25519", X25519),
                                       ("aes128gcm16-prfsha256-ecp256", ECP256),
                                       ("aes256-sha256-modp2048", MODP2048)])
def test_initiator_offers_the_ike_groups_and_none(initiator_and_responder, ike, group):
    pair = initiator_and_responder([ike], esp=["aes128gcm16", "aes256-sha256"])
    pair.establish()
    request, answer = rekey(pair)
    # every proposal: the IKE SA's group first, then NONE (RFC 7296 3.3.3), KEi for that group
    assert ke_ids(get(request, PayloadType.SA)) == [[group, 0], [group, 0]]
    assert get(request, PayloadType.KE).group == group
    # ocfpy as responder takes the initiator's first choice: PFS with that group
    assert ke_ids(get(answer, PayloadType.SA)) == [[group]]
    assert get(answer, PayloadType.KE).group == group
    new = assert_rekeyed(pair)
    spec, no_pfs = expected_keys(pair, request, answer)
    assert new.outbound.encryption_key != no_pfs.encr_i2r  # g^ir went into KEYMAT


def test_initiator_leaves_a_configured_group_alone(initiator_and_responder):
    """esp with a group is PFS required with exactly that group: no NONE, no IKE group."""
    pair = initiator_and_responder(["aes128gcm16-prfsha256-x25519"], esp=["aes128gcm16-ecp256"])
    pair.establish()
    request, answer = rekey(pair)
    assert ke_ids(get(request, PayloadType.SA)) == [[ECP256]]
    assert get(answer, PayloadType.KE).group == ECP256
    assert_rekeyed(pair)


def test_initiator_accepts_none_answered_as_no_ke_type(initiator_and_responder):
    """charon without a group answers our [group, NONE] with no KE transform at all and no
    KEr (its proposal.c); our KEi goes unused and KEYMAT is made without g^ir."""
    pair = initiator_and_responder(esp=["aes128gcm16"])
    pair.establish()
    # the responder sees NONE only (so it derives no g^ir either), then its answer loses the
    # explicit NONE the way charon would write it
    request, answer = rekey(pair, keep_ke({0}, drop_ke_payload=True), keep_ke(None))
    assert ke_ids(get(answer, PayloadType.SA)) == [[]] and get(answer, PayloadType.KE) is None
    new = assert_rekeyed(pair)
    _, km = expected_keys(pair, request, answer)
    assert (new.outbound.encryption_key, new.inbound.encryption_key) == \
        (km.encr_i2r, km.encr_r2i)
    assert not pair.of_type("i", NegotiationFailed)


def test_initiator_accepts_an_explicit_none(initiator_and_responder):
    """A responder that answers with the NONE transform (one of each type offered, RFC 7296
    2.7), here ocfpy offered NONE only: no KEr, keys without g^ir."""
    pair = initiator_and_responder(esp=["aes128gcm16"])
    pair.establish()
    request, answer = rekey(pair, keep_ke({0}, drop_ke_payload=True))
    assert ke_ids(get(answer, PayloadType.SA)) == [[0]] and get(answer, PayloadType.KE) is None
    new = assert_rekeyed(pair)
    _, km = expected_keys(pair, request, answer)
    assert new.inbound.encryption_key == km.encr_r2i


def test_initiator_refuses_no_pfs_when_pfs_is_configured(initiator_and_responder):
    """A configured group means PFS required: an answer without a KE transform is not one of
    our proposals, so no downgrade to no PFS."""
    pair = initiator_and_responder(esp=["aes128gcm16-ecp256"])
    pair.establish()
    old = only_sa(pair.i).children[0]
    rekey(pair, edit_answer=keep_ke(None, drop_ke_payload=True))
    (fail,) = [e for e in pair.of_type("i", NegotiationFailed) if "CHILD_SA net" in e.explanation]
    assert fail.notify == NotifyType.NO_PROPOSAL_CHOSEN
    assert only_sa(pair.i).children == [old] and not old.rekeyed


def test_initiator_refuses_a_ker_with_none(initiator_and_responder):
    """NONE chosen but a KEr sent: the answer contradicts itself, refused."""
    pair = initiator_and_responder(esp=["aes128gcm16"])
    pair.establish()
    rekey(pair, edit_answer=keep_ke({0}))  # the responder took x25519; claim NONE, keep KEr
    (fail,) = [e for e in pair.of_type("i", NegotiationFailed) if "CHILD_SA net" in e.explanation]
    assert fail.notify == NotifyType.INVALID_KE_PAYLOAD


# -- responder: what we accept -----------------------------------------------------------------
def test_responder_takes_a_group_it_accepts_for_ike(initiator_and_responder):
    """libreswan's pfs=yes: [group] only, no NONE. We are configured without PFS for the child
    and accept the group, since we accept it for the IKE SA; KEYMAT includes g^ir."""
    pair = initiator_and_responder(esp=["aes128gcm16"])
    pair.establish()
    request, answer = rekey(pair, keep_ke({X25519}))
    assert ke_ids(get(request, PayloadType.SA)) == [[X25519]]
    assert ke_ids(get(answer, PayloadType.SA)) == [[X25519]]
    assert get(answer, PayloadType.KE).group == X25519
    new = assert_rekeyed(pair)
    _, no_pfs = expected_keys(pair, request, answer)
    assert new.outbound.encryption_key != no_pfs.encr_i2r


def test_responder_takes_another_ike_group_the_initiator_prefers(initiator_and_responder):
    """Any group of our IKE proposals, not only the one this IKE SA uses: here the IKE SA
    runs x25519, the initiator's child requires ecp256, which our IKE proposal also lists."""
    ike = ["aes128gcm16-prfsha256-x25519-ecp256"]
    pair = initiator_and_responder(ike, esp=["aes128gcm16-ecp256"], r_esp=["aes128gcm16"])
    pair.establish()
    request, answer = rekey(pair)
    assert ke_ids(get(answer, PayloadType.SA)) == [[ECP256]]
    assert get(answer, PayloadType.KE).group == ECP256
    assert_rekeyed(pair)


def test_responder_refuses_a_group_it_does_not_accept_for_ike(initiator_and_responder):
    pair = initiator_and_responder(["aes128gcm16-prfsha256-x25519"], esp=["aes128gcm16-modp2048"],
                                   r_esp=["aes128gcm16"])
    pair.establish()
    old = only_sa(pair.i).children[0]
    rekey(pair)
    (fail,) = [e for e in pair.of_type("r", NegotiationFailed) if "net" in e.explanation]
    assert fail.notify == NotifyType.NO_PROPOSAL_CHOSEN
    assert "modp2048" in fail.explanation
    (fail_i,) = [e for e in pair.of_type("i", NegotiationFailed) if "net" in e.explanation]
    assert fail_i.notify == NotifyType.NO_PROPOSAL_CHOSEN
    assert only_sa(pair.i).children == [old] and not old.rekeyed


def test_responder_without_ke_offered_answers_without_ke(initiator_and_responder):
    """charon's default rekey request: no KE transform, no KEi. Answered the same way (no KE
    transform, no KEr), KEYMAT from the nonces alone."""
    pair = initiator_and_responder(esp=["aes128gcm16"])
    pair.establish()
    request, answer = rekey(pair, keep_ke(None, drop_ke_payload=True))
    assert ke_ids(get(answer, PayloadType.SA)) == [[]] and get(answer, PayloadType.KE) is None
    new = assert_rekeyed(pair)
    _, km = expected_keys(pair, request, answer)
    assert new.outbound.encryption_key == km.encr_i2r


def test_responder_ignores_kei_when_it_picks_none(initiator_and_responder):
    """[NONE, group] in that order: the initiator prefers no PFS, we take NONE and ignore its
    KEi (RFC 7296 1.3: INVALID_KE_PAYLOAD only for a group other than NONE)."""
    def none_first(payloads):
        out = []
        for p in payloads:
            if p.TYPE == PayloadType.SA:
                p = SaPayload([RawProposal(r.number, r.protocol, r.spi,
                                           sorted(r.transforms, key=lambda t: (t.type != KE, t.id)))
                               for r in p.proposals])
            out.append(p)
        return out

    pair = initiator_and_responder(esp=["aes128gcm16"])
    pair.establish()
    request, answer = rekey(pair, none_first)
    assert ke_ids(get(request, PayloadType.SA)) == [[0, X25519]]
    assert get(request, PayloadType.KE) is not None
    assert ke_ids(get(answer, PayloadType.SA)) == [[0]] and get(answer, PayloadType.KE) is None
    new = assert_rekeyed(pair)
    _, km = expected_keys(pair, request, answer)
    assert new.outbound.encryption_key == km.encr_i2r


def test_responder_requiring_pfs_refuses_none(initiator_and_responder):
    """A responder configured with a group (PFS required) does not take NONE."""
    pair = initiator_and_responder(esp=["aes128gcm16"], r_esp=["aes128gcm16-x25519"])
    pair.establish()
    rekey(pair, keep_ke({0}, drop_ke_payload=True))
    (fail,) = [e for e in pair.of_type("r", NegotiationFailed) if "net" in e.explanation]
    assert fail.notify == NotifyType.NO_PROPOSAL_CHOSEN


def test_responder_requiring_pfs_takes_the_group_from_our_optional_offer(initiator_and_responder):
    """ocfpy without PFS against a peer that requires it with the IKE SA's group (libreswan
    pfs=yes as responder): the peer picks the group out of [group, NONE]."""
    pair = initiator_and_responder(esp=["aes128gcm16"], r_esp=["aes128gcm16-x25519"])
    pair.establish()
    request, answer = rekey(pair)
    assert ke_ids(get(answer, PayloadType.SA)) == [[X25519]]
    assert_rekeyed(pair)


def test_a_new_child_in_create_child_sa_offers_optional_pfs_too(initiator_and_responder):
    pair = initiator_and_responder(esp=["aes128gcm16"])
    pair.establish()
    pair.i.initiate_child(only_sa(pair.i).id, "net", pair.now)
    request = relay(pair, pair.i, pair.r)
    pair.run()
    assert ke_ids(get(request, PayloadType.SA)) == [[X25519, 0]]
    assert len(pair.of_type("i", ChildSaEstablished)) == 2

