"""Issue 13: nothing unauthenticated changes an IKE SA (RFC 7296 2.21.2, 2.23, 3.14).

Every forgery here is built as an off-path attacker would: it knows the two SPIs (they are in
every IKE packet) and nothing else, and sends from an address of its choosing. After each, the
SA must look exactly as before: message IDs, cached answer, liveness clock, addresses, state,
nonces and KE; no datagram leaves; the drop is counted by reason."""

from __future__ import annotations

import pytest

from ocfpy.ike.codec import Writer, decode
from ocfpy.ike.codec.header import Header, push_header
from ocfpy.ike.codec.payloads import NotifyPayload, push_payloads
from ocfpy.ike.constants import ExchangeType, HeaderFlag, NotifyType, PayloadType
from ocfpy.ike.events import IkeSaEstablished
from ocfpy.ike.state import IkeState

ATTACKER = ("192.0.2.66", 4500)
X = ExchangeType


def forge(spi_i: bytes, spi_r: bytes, exchange: int, mid: int, *, initiator_flag: bool,
          response: bool = False, variant: str = "no_sk", block: int = 16,
          icv: int = 16) -> bytes:
    """An unauthenticated message with real SPIs. ``variant`` says how it fails before (or
    at) the integrity check."""
    w = Writer()
    notify = [NotifyPayload(NotifyType.INVALID_SYNTAX if response else 16390, b"")]
    if variant == "no_sk":
        first = push_payloads(w, notify)
        body = w.getvalue()
    else:
        if variant == "short_sk":
            sk_body = b"\x00" * 4
        elif variant == "partial_block":  # IV, 17 bytes of "ciphertext", ICV
            sk_body = b"\x11" * block + b"\x22" * (block + 1) + b"\x33" * icv
        else:  # "bad_icv": a well-formed SK payload whose ICV cannot verify
            sk_body = b"\x44" * (block + 2 * block + icv)
        sk = bytes((PayloadType.NOTIFY, 0)) + (4 + len(sk_body)).to_bytes(2, "big") + sk_body
        if variant == "plain_before_sk":
            first = push_payloads(w, notify, last_next=PayloadType.SK)
            body = w.getvalue() + sk
        else:
            first = PayloadType.SK
            body = sk
    flags = (HeaderFlag.INITIATOR if initiator_flag else 0) | \
        (HeaderFlag.RESPONSE if response else 0)
    h = Header(spi_i, spi_r, first, 0x20, exchange, int(flags), mid, 28 + len(body))
    return push_header(h) + body


def snapshot(sa) -> tuple:
    t = sa.tasks
    return (t.my_mid, t.peer_mid, t.last_resp, t.last_req_hash, t.out and t.out.mid,
            sa.last_in, sa.local, sa.remote, sa.state, sa.ni, sa.nr, sa.ke, sa.spi_i, sa.spi_r,
            sa.crypto, [c.unique_id for c in sa.children], sa.is_closed)


VARIANTS = ["no_sk", "plain_before_sk", "short_sk", "bad_icv"]
EXCHANGES = [X.IKE_AUTH, X.CREATE_CHILD_SA, X.INFORMATIONAL]


def _attack(pair, engine, sa, exchanges, variants, mids, **kw) -> int:
    n = 0
    for x in exchanges:
        for variant in variants:
            for mid in mids:
                for iflag in (True, False):
                    for response in (False, True):
                        raw = forge(sa.spi_i, sa.spi_r, x, mid, initiator_flag=iflag,
                                    response=response, variant=variant, **kw)
                        engine.receive_datagram(raw, sa.local, ATTACKER, pair.now + 5)
                        n += 1
    return n


@pytest.mark.parametrize("side", ["i", "r"])
def test_forgeries_change_nothing_on_an_established_sa(initiator_and_responder, side):
    """Finding 1: every message type, both I-flag values, requests and responses, message IDs
    swept around the current ones: no reply, no change, counted."""
    pair = initiator_and_responder(i_kw={"dpd_delay": 30.0}, r_kw={"dpd_delay": 30.0})
    pair.establish()
    engine = getattr(pair, side)
    (sa,) = engine.sas
    before, received = snapshot(sa), engine.stats["received"]
    n = _attack(pair, engine, sa, EXCHANGES, VARIANTS, range(0, 6))
    assert engine.datagrams_to_send(pair.now) == []
    assert snapshot(sa) == before
    st = engine.stats
    # responses that match no outstanding request are dropped before decryption; every
    # request that got as far as decryption is dropped as unauthenticated
    assert st["dropped_unauthenticated"] > 0
    assert st["dropped_unauth_no_sk"] > 0 and st["dropped_unauth_plain_before_sk"] > 0
    assert st["dropped_unauth_short_sk"] > 0 and st["dropped_integrity"] > 0
    assert st["internal_errors"] == 0 and st["dropped_malformed"] == 0
    assert st["received"] - received == n
    # and the SA still works: DPD goes to the genuine peer and is answered
    pair.advance(40)
    assert engine.stats["internal_errors"] == 0
    assert [w[3] for w in pair.wire if w[0] == side][-1] == sa.remote != ATTACKER
    assert not sa.is_closed and sa.tasks.out is None
    assert sa.last_in > before[5]  # the genuine DPD answer refreshed it


def test_cbc_partial_block_is_unauthenticated(initiator_and_responder):
    pair = initiator_and_responder(["aes256-sha256-modp2048"], ["aes256-sha256"])
    pair.establish()
    (sa,) = pair.r.sas
    before = snapshot(sa)
    _attack(pair, pair.r, sa, [X.INFORMATIONAL], ["partial_block"], [sa.tasks.peer_mid])
    assert pair.r.datagrams_to_send(pair.now) == [] and snapshot(sa) == before
    assert pair.r.stats["dropped_unauth_partial_block"] > 0


def test_forgeries_during_ike_auth_do_not_close_the_sa(initiator_and_responder):
    """Finding 1, the IKE_AUTH case: the responder holds keys, the initiator waits for the AUTH
    answer. Forged IKE_AUTH messages (no SK, short SK, bad ICV) leave both as they were, and
    the genuine exchange then completes."""
    pair = initiator_and_responder()
    pair.i.initiate("home", pair.now)
    pair.deliver(pair.i, pair.r)
    pair.deliver(pair.r, pair.i)  # the initiator has sent IKE_AUTH; it is still on its way
    held = pair.i.datagrams_to_send(pair.now)
    (sa_i,), (sa_r,) = pair.i.sas, pair.r.sas
    before_i, before_r = snapshot(sa_i), snapshot(sa_r)
    _attack(pair, pair.r, sa_r, EXCHANGES, VARIANTS, range(0, 3))
    _attack(pair, pair.i, sa_i, EXCHANGES, VARIANTS, range(0, 3))
    assert pair.r.datagrams_to_send(pair.now) == [] == pair.i.datagrams_to_send(pair.now)
    assert snapshot(sa_r) == before_r and snapshot(sa_i) == before_i
    for raw, local, remote in held:
        pair.r.receive_datagram(raw, remote, local, pair.now)
    pair.run()
    assert len(pair.of_type("i", IkeSaEstablished)) == 1 == len(pair.of_type("r", IkeSaEstablished))


@pytest.mark.parametrize("side", ["i", "r"])
def test_init_requests_with_an_sas_spis_are_dropped(initiator_and_responder, side):
    """Finding 2: IKE_SA_INIT requests carrying an established SA's SPIs, any message ID,
    either I flag: no message ID consumed, nothing answered."""
    pair = initiator_and_responder()
    pair.establish()
    engine = getattr(pair, side)
    (sa,) = engine.sas
    before = snapshot(sa)
    for mid in range(0, 5):
        for iflag in (True, False):
            for spi_r in (sa.spi_r, bytes(8)):
                raw = forge(sa.spi_i, spi_r, X.IKE_SA_INIT, mid, initiator_flag=iflag)
                engine.receive_datagram(raw, sa.local, ATTACKER, pair.now)
    out = engine.datagrams_to_send(pair.now)
    # the only request that reaches anything is SPIr = 0, mid 0, I set: that is the shape of
    # a new SA's request (and this one, lacking SA/KE/Nonce, is malformed and unanswered)
    assert out == [] and snapshot(sa) == before
    assert engine.stats["dropped_init_on_sa"] >= 18 and engine.stats["internal_errors"] == 0
    assert len(engine.sa_list()) == 1


def test_init_request_cannot_touch_a_connecting_initiator(initiator_and_responder):
    """Finding 2 on the initiator: an IKE_SA_INIT request (I flag clear, so it finds the
    initiator's SA by SPIi) must not replace the initiator's nonce or KE state."""
    pair = initiator_and_responder()
    pair.i.initiate("home", pair.now)
    first = pair.i.datagrams_to_send(pair.now)
    (sa,) = pair.i.sas
    before = snapshot(sa)
    genuine = bytearray(first[0][0])
    genuine[19] = 0  # the initiator's own request turned round: I flag clear
    for mid in (0, 1):
        genuine[20:24] = mid.to_bytes(4, "big")
        pair.i.receive_datagram(bytes(genuine), sa.local, ATTACKER, pair.now)
    assert pair.i.datagrams_to_send(pair.now) == [] and snapshot(sa) == before
    # the genuine exchange then goes ahead
    for raw, local, remote in first:
        pair.r.receive_datagram(raw, remote, local, pair.now)
    pair.run()
    assert len(pair.of_type("i", IkeSaEstablished)) == 1


def test_retransmitted_init_from_a_new_port_gets_the_same_answer(initiator_and_responder):
    """Finding 8: the IKE_SA_INIT request retransmitted from another source port (a NAT
    rebinding) is answered with the identical cached response; no second SA."""
    pair = initiator_and_responder()
    pair.i.initiate("home", pair.now)
    ((req, local, remote),) = pair.i.datagrams_to_send(pair.now)
    pair.r.receive_datagram(req, remote, local, pair.now)
    ((resp1, _, to1),) = pair.r.datagrams_to_send(pair.now)
    rebound = (local[0], 40123)
    pair.r.receive_datagram(req, remote, rebound, pair.now + 2)
    ((resp2, _, to2),) = pair.r.datagrams_to_send(pair.now)
    assert resp2 == resp1 and to1 == local and to2 == rebound
    assert len(list(pair.r.sas)) == 1 and pair.r.sas.half_open_count == 1
    assert pair.r.stats["retransmits_answered"] == 1
    # a different request with the same SPIi from the same address (a spoofer's) is not
    # answered and changes nothing
    (sa_r,) = pair.r.sas
    before = snapshot(sa_r)
    other = bytearray(req)
    other[-1] ^= 1
    pair.r.receive_datagram(bytes(other), remote, (local[0], 555), pair.now)
    assert pair.r.datagrams_to_send(pair.now) == [] and snapshot(sa_r) == before
    assert pair.r.stats["dropped_init_on_sa"] == 1
    # the initiator takes the answer and the SA comes up on the responder's single SA
    pair.i.receive_datagram(resp2, local, remote, pair.now)
    pair.run()
    assert len(pair.of_type("r", IkeSaEstablished)) == 1


def test_authenticated_address_change_still_followed(initiator_and_responder):
    """RFC 7296 2.23: the address moves only on an authenticated message, but it does move
    on one (the rule above must not freeze NAT mapping updates)."""
    pair = initiator_and_responder(i_kw={"dpd_delay": 30.0})
    pair.establish()
    (sa_r,) = pair.r.sas
    pair.advance(31, drop=lambda d: False)  # a DPD round trip as a baseline
    (sa_i,) = pair.i.sas
    sa_i.tasks.queue_task(__import__("ocfpy.ike.tasks.delete", fromlist=["Dpd"]).Dpd())
    sa_i.tasks.initiate(sa_i, pair.now)
    ((raw, local, remote),) = pair.i.datagrams_to_send(pair.now)
    moved = ("10.0.0.1", 33333)
    pair.r.receive_datagram(raw, remote, moved, pair.now)
    assert sa_r.remote == moved
    ((resp, _, to),) = pair.r.datagrams_to_send(pair.now)
    assert to == moved and decode(resp).is_response
    assert sa_r.state is IkeState.ESTABLISHED


# -- finding 4: unprotected IKE_SA_INIT errors (RFC 7296 2.21.1) ------------------------------
def forged_init_error(spi_i: bytes, notify: int, data: bytes = b"") -> bytes:
    from ocfpy.ike.codec.message import Message, encode

    return encode(Message(spi_i, bytes(8), X.IKE_SA_INIT, 0, True, False,
                          [NotifyPayload(notify, data)]))


def _first_request(pair):
    pair.i.initiate("home", pair.now)
    sent = pair.i.datagrams_to_send(pair.now)
    (sa,) = pair.i.sas
    return sent, sa


def _forge_to_initiator(pair, sa, raw):
    pair.i.receive_datagram(raw, sa.local, (sa.remote[0], sa.remote[1]), pair.now)


@pytest.mark.parametrize("notify", [NotifyType.NO_PROPOSAL_CHOSEN, NotifyType.INVALID_SYNTAX,
                                    NotifyType.AUTHENTICATION_FAILED])
def test_forged_init_error_does_not_end_the_attempt(initiator_and_responder, notify):
    pair = initiator_and_responder()
    sent, sa = _first_request(pair)
    before = snapshot(sa)
    _forge_to_initiator(pair, sa, forged_init_error(sa.spi_i, notify))
    assert snapshot(sa) == before and pair.i.datagrams_to_send(pair.now) == []
    assert not pair.of_type("i", IkeSaEstablished) and not sa.is_closed
    assert "waiting for a valid IKE_SA_INIT response" in pair.i.why("home")
    assert notify.name in pair.i.why("home")
    # the genuine answer, arriving later (but within the retransmission timeout), wins
    for raw, local, remote in sent:
        pair.r.receive_datagram(raw, remote, local, pair.now + 1)
    pair.now += 1
    pair.run()
    assert len(pair.of_type("i", IkeSaEstablished)) == 1
    assert pair.i.stats["init_errors_noted"] == 1


def test_unanswered_init_error_stands_after_the_retransmission_timeout(initiator_and_responder):
    """No valid answer comes: the noted error is acted on at the retransmission timeout,
    with the notify the responder (or spoofer) sent, and ``sa why`` says so."""
    from ocfpy.ike.events import NegotiationFailed

    pair = initiator_and_responder()
    _, sa = _first_request(pair)
    _forge_to_initiator(pair, sa, forged_init_error(sa.spi_i, NotifyType.NO_PROPOSAL_CHOSEN))
    pair.advance(3.9, drop=lambda d: True)
    assert not pair.of_type("i", NegotiationFailed)
    pair.advance(0.2, drop=lambda d: True)
    (fail,) = pair.of_type("i", NegotiationFailed)
    assert fail.notify == NotifyType.NO_PROPOSAL_CHOSEN
    assert "no valid response followed" in pair.i.why("home")


def test_forged_invalid_ke_racing_the_genuine_answer(initiator_and_responder):
    """A forged INVALID_KE for another group we offered moves us to it (the genuine case must
    keep working); the genuine answer to our first request still completes, with the first
    request's KE and bytes, and the responder ignores our second request."""
    pair = initiator_and_responder(["aes128gcm16-prfsha256-x25519-ecp256"])
    sent, sa = _first_request(pair)
    _forge_to_initiator(pair, sa, forged_init_error(sa.spi_i, NotifyType.INVALID_KE_PAYLOAD,
                                                    (19).to_bytes(2, "big")))
    (second,) = pair.i.datagrams_to_send(pair.now)  # the retry with ecp256
    assert sa.ke_transform.keyword == "ecp256"
    for raw, local, remote in sent + [second]:
        pair.r.receive_datagram(raw, remote, local, pair.now)
    assert pair.r.stats["dropped_init_on_sa"] == 1  # the second request: not the first's copy
    pair.run()
    assert len(pair.of_type("i", IkeSaEstablished)) == 1 == len(pair.of_type("r", IkeSaEstablished))
    assert pair.i.sa_list()[0]["algorithms"]["ke"] == "x25519"


@pytest.mark.parametrize("group", [14, 31])  # modp2048: not offered; 31 (x25519): already sent
def test_invalid_ke_only_for_an_offered_group_once(initiator_and_responder, group):
    pair = initiator_and_responder(["aes128gcm16-prfsha256-x25519-ecp256"])
    sent, sa = _first_request(pair)
    before = snapshot(sa)
    _forge_to_initiator(pair, sa, forged_init_error(sa.spi_i, NotifyType.INVALID_KE_PAYLOAD,
                                                    group.to_bytes(2, "big")))
    assert pair.i.datagrams_to_send(pair.now) == [] and snapshot(sa) == before
    assert "INVALID_KE_PAYLOAD" in pair.i.why("home")
    for raw, local, remote in sent:
        pair.r.receive_datagram(raw, remote, local, pair.now)
    pair.run()
    assert len(pair.of_type("i", IkeSaEstablished)) == 1


def test_cookie_rounds_are_bounded_and_do_not_end_the_attempt(initiator_and_responder):
    """Finding 4: forged COOKIEs used to end the attempt after three. Now at most MAX_COOKIES
    are echoed, the rest are noted, and the attempt goes on to complete."""
    from ocfpy.ike.tasks.ike_init import MAX_COOKIES

    pair = initiator_and_responder()
    _, sa = _first_request(pair)
    last = None
    for k in range(MAX_COOKIES + 3):
        _forge_to_initiator(pair, sa, forged_init_error(sa.spi_i, NotifyType.COOKIE,
                                                        bytes([k + 1]) * 16))
        out = pair.i.datagrams_to_send(pair.now)
        assert len(out) == (1 if k < MAX_COOKIES else 0)
        last = out or last
    assert not sa.is_closed and pair.i.stats["init_errors_noted"] == 3
    for raw, local, remote in last:  # the responder sees our latest request only
        pair.r.receive_datagram(raw, remote, local, pair.now)
    pair.run()
    assert len(pair.of_type("i", IkeSaEstablished)) == 1
