"""strongSwan proposal syntax, SA payload conversion, selection and mismatch explanations."""

from __future__ import annotations

import logging

import pytest

from ocfpy.crypto import catalogue
from ocfpy.crypto.catalogue import TransformType as T
from ocfpy.ike import proposals as P


def kw(prop, tt):
    return [t.keyword for t in prop.of(tt)]


def test_parse_ike_aead():
    p = P.parse_ike("aes128gcm16-prfsha256-x25519")
    assert kw(p, T.ENCR) == ["aes128gcm16"] and kw(p, T.PRF) == ["prfsha256"]
    assert kw(p, T.KE) == ["x25519"] and not p.of(T.INTEG)


def test_parse_ike_integ_doubles_as_prf_like_strongswan():
    p = P.parse_ike("aes128-aes256-sha256-sha384-modp2048")
    assert kw(p, T.INTEG) == ["sha256", "sha384"]
    assert kw(p, T.PRF) == ["prfsha256", "prfsha384"]
    assert str(p) == "aes128-aes256-sha256-sha384-prfsha256-prfsha384-modp2048"


def test_parse_esp_defaults_to_noesn():
    assert kw(P.parse_esp("aes128gcm16"), T.ESN) == ["noesn"]
    assert kw(P.parse_esp("aes128gcm16-esn"), T.ESN) == ["esn"]
    assert kw(P.parse_esp("aes256-sha256"), T.INTEG) == ["sha256"]


@pytest.mark.parametrize("text,esp,match", [
    ("aes129-sha256-x25519", False, "unknown algorithm 'aes129'"),
    ("aes128-x25519", False, "needs an integrity algorithm"),
    ("aes128gcm16-aes128-sha256-prfsha256-x25519", False, "mixes AEAD"),
    ("aes128gcm16-prfsha256", False, "no key exchange"),
    ("aes128gcm16-aes128-prfsha256-x25519", False, "mixes AEAD"),
    ("aes128gcm16-prfsha256-x25519-esn", False, "esn/noesn belongs in ESP"),
    ("aes128gcm16-prfsha256", True, "PRF belongs in IKE"),
    ("", True, "empty"),
])
def test_parse_errors_say_what_is_wrong(text, esp, match):
    with pytest.raises(P.ProposalSyntaxError, match=match):
        (P.parse_esp if esp else P.parse_ike)(text)


@pytest.mark.parametrize("text,esp,expected,dropped", [
    # strongSwan drops the integrity algorithm of an AEAD proposal (proposal.c check_proposal);
    # in IKE it still names the PRF when no prf keyword does.
    ("aes128gcm16-sha256", True, "aes128gcm16-noesn", "sha256"),
    ("chacha20poly1305-sha256-esn", True, "chacha20poly1305-esn", "sha256"),
    ("aes256gcm16-sha384-ecp384", False, "aes256gcm16-prfsha384-ecp384", "sha384"),
    ("aes128gcm16-sha256-prfsha512-x25519", False, "aes128gcm16-prfsha512-x25519", "sha256"),
])
def test_aead_with_integrity_is_accepted_with_a_warning(text, esp, expected, dropped, caplog):
    P._WARNED.clear()
    with caplog.at_level(logging.WARNING, logger="ocfpy.ike.proposals"):
        prop = (P.parse_esp if esp else P.parse_ike)(text)
        (P.parse_esp if esp else P.parse_ike)(text)  # parsed again: not warned again
    assert str(prop) == expected and not prop.of(T.INTEG)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert f"integrity algorithm {dropped} was dropped" in warnings[0]
    assert repr(text) in warnings[0] and expected in warnings[0]


def test_a_weak_choice_is_negotiated_but_named_in_a_warning(caplog):
    ours = [P.parse_esp("aes256gcm16"), P.parse_esp("aes128-sha1")]
    with caplog.at_level(logging.WARNING, logger="ocfpy.ike.proposals"):
        chosen = P.select([P.parse_esp("aes128-sha1")], ours)
        assert P.accepts(chosen, ours)
        strong = P.select([P.parse_esp("aes256gcm16")], ours)
    assert str(chosen) == "aes128-sha1-noesn" and P.weak_transforms(chosen) == ["sha1"]
    assert P.weak_transforms(strong) == []
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and all("weak transform sha1" in m and "RFC 8221" in m
                                      for m in messages), messages


def test_the_defaults_hold_nothing_weak():
    from ocfpy.ike.config import DEFAULT_ESP_PROPOSALS, DEFAULT_IKE_PROPOSALS

    ike = [P.parse_ike(t) for t in DEFAULT_IKE_PROPOSALS]
    esp = [P.parse_esp(t) for t in DEFAULT_ESP_PROPOSALS]
    assert all(P.weak_transforms(p) == [] for p in ike + esp)
    # and nothing RFC 8247 / RFC 8221 forbid: 3DES, MD5, DES, MODP < 2048
    words = {w for p in ike + esp for w in p.keywords()}
    assert not words & {"3des", "md5", "des", "modp768", "modp1024", "modp1536", "aesxcbc"}
    # strongest/fastest first: an AEAD proposal leads, AES-256-GCM and X25519 first in it
    assert ike[0].is_aead and esp[0].is_aead
    assert str(ike[0]).startswith("aes256gcm16-") and ike[0].first(T.KE).keyword == "x25519"


def test_raw_round_trip_keeps_key_lengths():
    p = P.parse_ike("aes128-aes256-sha256-modp2048")
    raw = P.to_raw(p, 1)
    assert [(t.type, t.id, t.key_bits) for t in raw.transforms][:2] == [(1, 12, 128), (1, 12, 256)]
    back = P.from_raw(raw)
    assert back.transforms == p.transforms and not back.unknown


def test_unknown_transforms_are_kept_for_explanations():
    from ocfpy.ike.codec.payloads import RawProposal, RawTransform

    raw = RawProposal(1, 1, b"", [RawTransform(1, 20, 128), RawTransform(2, 5),
                                  RawTransform(4, 99), RawTransform(1, 20, 128, (17,))])
    p = P.from_raw(raw)
    assert kw(p, T.ENCR) == ["aes128gcm16"] and p.of(T.KE) == []
    assert (4, 99, None) in p.unknown and len(p.unknown) == 2


def test_select_takes_the_peers_first_matching_proposal_and_transform():
    offered = [P.parse_ike("aes256gcm16-prfsha384-ecp384"),
               P.parse_ike("aes128gcm16-aes256gcm16-prfsha256-x25519-ecp256")]
    for i, o in enumerate(offered):
        o.number = i + 1
    ours = [P.parse_ike("aes256gcm16-aes128gcm16-prfsha256-ecp256-x25519")]
    chosen = P.select(offered, ours)
    assert chosen.number == 2
    assert str(chosen) == "aes128gcm16-prfsha256-x25519"  # the peer's preference wins
    assert P.accepts(chosen, ours) and not P.accepts(chosen, [P.parse_ike("aes256gcm16-prfsha256-x25519")])


def test_explanation_names_the_type_and_the_nearest_match():
    offered = [P.parse_ike("aes128-sha1-modp1024"), P.parse_ike("aes128gcm16-prfsha256-modp2048")]
    offered[1].number = 2
    ours = [P.parse_ike("aes128gcm16-prfsha256-x25519")]
    text = P.explain_mismatch(offered, ours)
    assert "No overlap in the key exchange method (DH group): peer offers modp2048, " \
           "we accept x25519." in text
    assert "Nearest match: peer proposal #2" in text
    assert "aes128-sha1-prfsha1-modp1024" in text  # everything the peer offered is listed


def test_explanation_mentions_a_forced_backend():
    text = P.explain_mismatch([P.parse_ike("aes128gcm16-prfsha256-x25519")],
                              [P.parse_ike("aes256-sha256-modp2048")],
                              backend="af_alg", dropped=["x25519"])
    assert "forced crypto backend 'af_alg'" in text and "x25519" in text


def test_servable_filters_by_dispatcher_capability():
    props = [P.parse_ike("aes128gcm16-prfsha256-x25519-ecp256"), P.parse_ike("aes256-sha256-x448")]
    kept, dropped = P.servable(props, lambda t: t.keyword not in ("x25519", "x448"))
    assert [str(p) for p in kept] == ["aes128gcm16-prfsha256-ecp256"]
    assert dropped == ["x25519", "x448"]


def test_forced_backend_limits_what_the_engine_offers(dispatcher, initiator_and_responder):
    """Only what dispatcher.can_serve() allows is offered; here a driver that lacks x25519."""
    from ocfpy.crypto.dispatcher import Dispatcher
    from ocfpy.ike.engine import IkeEngine

    from .conftest import I_ADDR, R_ADDR, make_config

    d = Dispatcher(dispatcher.registry)
    original = d.can_serve
    d.can_serve = lambda t, backend=None: catalogue.get(t).keyword != "x25519" and original(t)
    cfg = make_config(I_ADDR, R_ADDR, "a", "b", ike=["aes128gcm16-prfsha256-x25519-ecp256"])
    engine = IkeEngine(cfg, d)
    props, dropped = engine.connections.ike_proposals(cfg.connections["home"])
    assert [str(p) for p in props] == ["aes128gcm16-prfsha256-ecp256"] and dropped == ["x25519"]


@pytest.mark.parametrize("text,protocol,words", [
    ("aes256gcm16-prfsha512-modp8192", P.PROTO_IKE, "ike=aes_gcm256-sha2_512;modp8192"),
    ("aes256-sha256-prfsha256-ecp256", P.PROTO_IKE, "ike=aes256-sha2_256;dh19"),
    ("chacha20poly1305-prfsha256-x25519", P.PROTO_IKE, "ike=chacha20_poly1305-sha2_256;dh31"),
    ("aes128ctr-sha512", P.PROTO_ESP, "esp=aes_ctr128-sha2_512"),
    ("aes256gcm16-aes128gcm16", P.PROTO_ESP, "esp=aes_gcm256+aes_gcm128"),
])
def test_libreswan_words(text, protocol, words):
    """`sa why` names a mismatch in libreswan's ipsec.conf words too (issue 15): the same
    suites as the VM lane's libreswan rows write them (tests/kernel/interop/table.py)."""
    assert P.libreswan_words(P._parse(text, protocol)) == words


def test_a_mismatch_is_explained_in_both_vocabularies():
    offered = [P._parse("aes256gcm16-prfsha512-modp8192", P.PROTO_IKE)]
    ours = [P._parse("aes256gcm16-prfsha512-ecp256", P.PROTO_IKE)]
    why = P.explain_mismatch(offered, ours)
    assert "The peer offered: aes256gcm16-prfsha512-modp8192 (in libreswan's words: " \
           "ike=aes_gcm256-sha2_512;modp8192)" in why
    assert "key exchange method" in why



def test_ke_none_in_esp_selection_and_acceptance():
    """RFC 7296 3.3.3: in ESP no KE transform means the same as NONE only; NONE next to a group
    makes PFS optional. A group the responder does not list is not matched by its NONE."""
    from ocfpy.ike.codec.payloads import RawProposal, RawTransform

    esp = P.parse_esp("aes128gcm16")
    optional = P.with_optional_pfs([esp], catalogue.get("x25519"))[0]
    assert [t.keyword for t in optional.of(T.KE)] == ["x25519", "none"]
    assert T.KE not in esp.transforms  # the cached proposal stays as configured
    # a responder without a group takes NONE out of [x25519, none] and echoes it
    chosen = P.select([optional], [esp])
    assert chosen is not None and chosen.of(T.KE) == [P.KE_NONE]
    assert P.pfs_group(chosen) is None
    # an answer without any KE transform (charon's) is NONE: accepted for [x25519, none] only
    assert P.accepts(P.select([esp], [esp]), [optional])
    assert not P.accepts(P.select([esp], [esp]), [P.parse_esp("aes128gcm16-x25519")])
    # a responder requiring a group takes it; one requiring another group refuses
    assert P.pfs_group(P.select([optional], [P.parse_esp("aes128gcm16-x25519")])).keyword == "x25519"
    assert P.select([optional], [P.parse_esp("aes128gcm16-ecp256")]) is None
    # NONE on the wire is transform ID 0 of type 4, and reads back as KE_NONE
    raw = P.to_raw(optional, 1, b"\x00" * 4)
    assert [(t.type, t.id) for t in raw.transforms if t.type == 4] == [(4, 31), (4, 0)]
    assert P.from_raw(raw).of(T.KE) == [catalogue.get("x25519"), P.KE_NONE]
    # a peer offering only a group we do not know is not offering NONE
    unknown = P.from_raw(RawProposal(1, 3, b"\x00" * 4, [RawTransform(1, 20, 128),
                                                         RawTransform(4, 1234),
                                                         RawTransform(5, 0)]))
    assert P.select([unknown], P.with_peer_pfs([esp], [catalogue.get("x25519")])) is None
    assert P.select([unknown], [esp]) is None


def test_responder_pfs_list_adds_the_ike_groups_to_children_without_one():
    esp, pfs = P.parse_esp("aes128gcm16"), P.parse_esp("aes256gcm16-ecp256")
    groups = [catalogue.get("x25519"), catalogue.get("modp2048")]
    out = P.with_peer_pfs([esp, pfs], groups)
    assert [t.keyword for t in out[0].of(T.KE)] == ["none", "x25519", "modp2048"]
    assert out[1].of(T.KE) == [catalogue.get("ecp256")]  # PFS required: unchanged
    # libreswan's rekey offer: [modp2048] only; the initiator's order decides
    offer = P.parse_esp("aes128gcm16-modp2048-x25519")
    assert P.pfs_group(P.select([offer], out)).keyword == "modp2048"
