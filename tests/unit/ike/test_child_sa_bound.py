"""An authenticated peer filling the responder's CHILD_SA table (docs/security.md, finding R1).

Every CHILD_SA takes a counter slot of the userspace dataplane (1,024 for all peers, then
installs fail: other peers' rekeys die) or XFRM states and crypto sessions. Before the fix, a
peer could make as many as it liked: new CHILD_SAs in CREATE_CHILD_SA, or rekeys it never
follows with the Delete of the old SA (RFC 7296 2.8 leaves the Delete to the rekey's
initiator). The peer is played here by forging its CREATE_CHILD_SA requests with its own SK
keys (what the peer has), with message IDs in order, as test_child_pfs does."""

from __future__ import annotations

from ocfpy.ike import codec
from ocfpy.ike.codec.message import Message, encode
from ocfpy.ike.codec.payloads import NoncePayload, NotifyPayload, RawProposal, SaPayload
from ocfpy.ike.config import DaemonOptions
from ocfpy.ike.constants import NotifyType, PayloadType


def only_sa(engine):
    (sa,) = engine.sas
    return sa


def _template(pair):
    """The initiator's own CREATE_CHILD_SA (a rekey of its CHILD_SA), decrypted; not sent."""
    old = only_sa(pair.i).children[0]
    pair.i.rekey_child(old.unique_id, pair.now)
    (data, local, remote), = pair.i.datagrams_to_send(pair.now)
    msg = codec.decode(data)
    msg.decrypt(only_sa(pair.r).crypto)
    return msg, local, remote


def _forge(pair, tmpl, local, remote, mid: int, spi: bytes, rekey_spi: bytes | None):
    """One CREATE_CHILD_SA from the peer: a new CHILD_SA (no REKEY_SA) or a rekey of the one
    we send on with ``rekey_spi``; the answer's notifies (type numbers)."""
    payloads = []
    for p in tmpl.payloads:
        if p.TYPE == PayloadType.NOTIFY and p.notify_type == NotifyType.REKEY_SA:
            if rekey_spi is None:
                continue
            p = NotifyPayload(NotifyType.REKEY_SA, b"", 3, rekey_spi)
        elif p.TYPE == PayloadType.SA:
            p = SaPayload([RawProposal(r.number, r.protocol, spi, r.transforms)
                           for r in p.proposals])
        elif p.TYPE == PayloadType.NONCE:
            p = NoncePayload(mid.to_bytes(4, "big") * 8)
        payloads.append(p)
    if rekey_spi is not None and not any(p.TYPE == PayloadType.NOTIFY for p in payloads):
        payloads.insert(0, NotifyPayload(NotifyType.REKEY_SA, b"", 3, rekey_spi))
    forged = Message(tmpl.spi_i, tmpl.spi_r, tmpl.exchange, mid, False, True, payloads)
    pair.r.receive_datagram(encode(forged, only_sa(pair.i).crypto), remote, local, pair.now)
    (answer, _, _), = pair.r.datagrams_to_send(pair.now)
    msg = codec.decode(answer)
    msg.decrypt(only_sa(pair.i).crypto)
    return [p.notify_type for p in msg.payloads if p.TYPE == PayloadType.NOTIFY]


def _pair(initiator_and_responder, limit: int | None):
    kw = {} if limit is None else {"daemon": DaemonOptions(max_child_sas=limit)}
    pair = initiator_and_responder(esp=["aes128gcm16"], r_kw=kw)
    pair.establish()
    return pair


def test_new_child_sas_from_one_peer_are_bounded(initiator_and_responder):
    pair = _pair(initiator_and_responder, 4)
    tmpl, local, remote = _template(pair)
    answers = [_forge(pair, tmpl, local, remote, tmpl.message_id + k,
                      (0xC0000000 + k).to_bytes(4, "big"), None) for k in range(10)]
    children = only_sa(pair.r).children
    assert len(children) == 4  # the first CHILD_SA (IKE_AUTH) and 3 more
    # RFC 7296 3.10.1: NO_ADDITIONAL_SAS, "unwilling to accept any more Child SAs"
    assert all(NotifyType.NO_ADDITIONAL_SAS not in a for a in answers[:3])
    assert all(NotifyType.NO_ADDITIONAL_SAS in a for a in answers[3:])
    assert only_sa(pair.r).is_established  # refused, not torn down
    assert pair.r.stats["child_sas_refused_limit"] == 7


def test_rekeys_never_followed_by_a_delete_are_bounded(initiator_and_responder):
    """The peer rekeys the newest CHILD_SA again and again and never deletes the old ones:
    each rekey is allowed (the live count stays one), the ones waiting for their Delete are
    bounded too (as many again as the limit)."""
    pair = _pair(initiator_and_responder, 4)
    tmpl, local, remote = _template(pair)
    current = only_sa(pair.r).children[0].spi_out
    refused = 0
    for k in range(20):
        spi = (0xD0000000 + k).to_bytes(4, "big")
        answer = _forge(pair, tmpl, local, remote, tmpl.message_id + k, spi, current)
        if NotifyType.NO_ADDITIONAL_SAS in answer:
            refused += 1
        else:
            current = spi
    assert len(only_sa(pair.r).children) == 8
    assert refused == 13
    assert only_sa(pair.r).is_established


def test_the_default_bound_leaves_room_for_ordinary_use(initiator_and_responder):
    pair = _pair(initiator_and_responder, None)
    assert DaemonOptions().max_child_sas == 32
    tmpl, local, remote = _template(pair)
    answers = [_forge(pair, tmpl, local, remote, tmpl.message_id + k,
                      (0xE0000000 + k).to_bytes(4, "big"), None) for k in range(40)]
    assert len(only_sa(pair.r).children) == 32
    assert sum(NotifyType.NO_ADDITIONAL_SAS in a for a in answers) == 9


def test_the_bound_is_a_checked_daemon_key():
    import pytest

    from ocfpy.iked.configfile import ConfigError, loads

    assert loads("[daemon]\nmax_child_sas = 5\n").daemon.max_child_sas == 5
    for bad in ("max_child_sas = 0", 'max_child_sas = "many"'):
        with pytest.raises(ConfigError, match="max_child_sas"):
            loads(f"[daemon]\n{bad}\n")
