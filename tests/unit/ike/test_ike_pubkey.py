"""IKE_AUTH with certificates between two engines in memory (issue 14): each AUTH method and
scheme, mixed PSK/pubkey, and the failures with the reason `sa why` shows."""

from __future__ import annotations

import datetime as dt

import pytest

from ocfpy.ike.certs import ca_key_hash
from ocfpy.ike.codec.message import decode
from ocfpy.ike.config import DaemonOptions
from ocfpy.ike.constants import AuthMethod, NotifyType, PayloadType
from ocfpy.ike.events import ChildSaEstablished, IkeSaEstablished, NegotiationFailed

from .conftest import Pki

# (key kind, RFC 7427 on, the AUTH method both sides use, the scheme shown)
METHODS = [
    ("rsa-2048", False, AuthMethod.RSA_SIG, "rsa-sig"),
    ("ecdsa-p256", False, AuthMethod.ECDSA_256, "ecdsa-256"),
    ("ecdsa-p384", False, AuthMethod.ECDSA_384, "ecdsa-384"),
    ("rsa-3072", True, AuthMethod.DIGITAL_SIGNATURE, "digital-signature (rsa/pss-sha256)"),
    ("ecdsa-p256", True, AuthMethod.DIGITAL_SIGNATURE, "digital-signature (ecdsa-sha256)"),
    ("ed25519", True, AuthMethod.DIGITAL_SIGNATURE, "digital-signature (ed25519)"),
]


def _established(pair) -> None:
    for side in "ir":
        assert not pair.of_type(side, NegotiationFailed), pair.events[side]
        assert len(pair.of_type(side, IkeSaEstablished)) == 1
        assert len(pair.of_type(side, ChildSaEstablished)) == 1


def _failed(pair, text: str) -> tuple[str, str]:
    """Both sides failed with AUTHENTICATION_FAILED, no SA left; the responder's why holds
    ``text``. Returns both whys."""
    for side in "ir":
        assert not pair.of_type(side, IkeSaEstablished)
        (fail,) = pair.of_type(side, NegotiationFailed)
        assert fail.notify == NotifyType.AUTHENTICATION_FAILED, fail
    assert pair.i.sa_list() == [] and pair.r.sa_list() == []
    assert pair.r.sas.sizes()["spi"] == 0 and pair.i.sas.sizes()["spi"] == 0
    why_r, why_i = pair.r.why("home"), pair.i.why("home")
    assert text in why_r, why_r
    return why_i, why_r


def _ike_auth_payloads(pair, side: str) -> list:
    """The decrypted payloads of ``side``'s IKE_AUTH message, opened by the receiver's SA
    (reassembled first when it went as RFC 7383 fragments)."""
    from ocfpy.ike import fragments
    from ocfpy.ike.codec.buffer import Buffer
    from ocfpy.ike.codec.header import pull_header
    from ocfpy.ike.codec.payloads import pull_payloads

    raws = [w[1] for w in pair.wire if w[0] == side and w[1][18] == 35]
    (sa,) = (pair.r if side == "i" else pair.i).sas
    if raws[0][16] == 53:
        skfs = [fragments.parse_fragment_message(r, pull_header(r)) for r in raws]
        inner = b"".join(fragments.open_with(sa.crypto)(r, f) for r, f in zip(raws, skfs,
                                                                              strict=True))
        return pull_payloads(Buffer(inner), skfs[0].first_inner)
    (raw,) = raws
    msg = decode(raw)
    msg.decrypt(sa.crypto)
    return msg.payloads


@pytest.mark.parametrize("kind,rfc7427,method,shown", METHODS,
                         ids=[f"{m[0]}-{'7427' if m[1] else 'classic'}" for m in METHODS])
def test_pubkey_both_ways(pubkey_pair, kind, rfc7427, method, shown):
    pki = Pki()
    moon, sun = pki.gateway("moon.example.org", kind), pki.gateway("sun.example.org", kind)
    opts = DaemonOptions(signature_authentication=rfc7427)
    pair = pubkey_pair(pki, i_store=pki.store(moon), r_store=pki.store(sun), i_daemon=opts,
                       r_daemon=DaemonOptions(signature_authentication=rfc7427))
    pair.establish()
    _established(pair)
    (si,), (sr,) = pair.i.sa_list(), pair.r.sa_list()
    assert si["auth"]["local"] == si["auth"]["remote"] == shown
    assert sr["auth"]["local"] == sr["auth"]["remote"] == shown
    assert si["auth"]["peer_cert"] == "CN=sun.example.org,O=ocfpy lab,C=CH"
    assert sr["auth"]["peer_cert"] == "CN=moon.example.org,O=ocfpy lab,C=CH"
    assert "not checked" in si["auth"]["revocation"]
    assert si["auth"]["signed_by"] == sr["auth"]["signed_by"] == "openssl"
    # the initiator sent its certificate, asked for the responder's (CERTREQ: our root's key
    # hash, RFC 7296 3.7) and signed with the method shown
    for side, own in (("i", moon), ("r", sun)):
        payloads = _ike_auth_payloads(pair, side)
        certs = [p for p in payloads if p.TYPE == PayloadType.CERT]
        assert [c.data for c in certs] == [own.der]  # the root is not sent (RFC 4945 3.2.2)
        (auth,) = [p for p in payloads if p.TYPE == PayloadType.AUTH]
        assert auth.method == method
    req = [p for p in _ike_auth_payloads(pair, "i") if p.TYPE == PayloadType.CERTREQ]
    assert [r.data for r in req] == [ca_key_hash(pki.root.cert)]
    # the responder's CERTREQ rode in IKE_SA_INIT, in the clear
    init_r = decode(next(w[1] for w in pair.wire if w[0] == "r"))
    assert [p.data for p in init_r.payloads if p.TYPE == PayloadType.CERTREQ] \
        == [ca_key_hash(pki.root.cert)]
    # RFC 7427 4: SIGNATURE_HASH_ALGORITHMS in IKE_SA_INIT exactly when it is enabled
    init_i = decode(pair.wire[0][1])
    has = init_i.notify(NotifyType.SIGNATURE_HASH_ALGORITHMS) is not None
    assert has is rfc7427 and (init_r.notify(NotifyType.SIGNATURE_HASH_ALGORITHMS)
                               is not None) is rfc7427


def test_signers_are_opened_once(pubkey_pair, dispatcher):
    pki = Pki()
    moon, sun = pki.gateway("moon.example.org"), pki.gateway("sun.example.org")
    store = pki.store(moon)
    for _ in range(3):
        pair = pubkey_pair(pki, i_store=store, r_store=pki.store(sun))
        pair.establish()
        _established(pair)
    assert list(store._signers) == [("x509/gw.pem", "ecdsa-sha256")]


def test_three_level_chain_sends_the_intermediate(pubkey_pair):
    pki = Pki("rsa-3072")
    inter = pki.pki.issue("ocfpy intermediate", pki.root, kind="ecdsa-p384", ca=True,
                          path_length=0, now=pki.now)
    moon = pki.gateway("moon.example.org", issuer=inter)
    sun = pki.gateway("sun.example.org")
    pair = pubkey_pair(pki, i_store=pki.store(moon, cas=[pki.root, inter]),
                       r_store=pki.store(sun))  # the responder knows only the root
    pair.establish()
    _established(pair)
    certs = [p.data for p in _ike_auth_payloads(pair, "i") if p.TYPE == PayloadType.CERT]
    assert certs == [moon.der, inter.der]


@pytest.mark.parametrize("initiator_psk", [True, False], ids=["psk-then-pubkey",
                                                              "pubkey-then-psk"])
def test_mixed_psk_one_way_pubkey_the_other(pubkey_pair, initiator_psk):
    pki = Pki()
    moon, sun = pki.gateway("moon.example.org"), pki.gateway("sun.example.org")
    if initiator_psk:  # moon proves itself with the PSK, sun with its certificate
        i_auth, r_auth = ("psk", "pubkey"), ("pubkey", "psk")
        i_store, r_store = pki.store(None), pki.store(sun)
    else:
        i_auth, r_auth = ("pubkey", "psk"), ("psk", "pubkey")
        i_store, r_store = pki.store(moon), pki.store(None)
    pair = pubkey_pair(pki, i_store=i_store, r_store=r_store, i_auth=i_auth, r_auth=r_auth)
    pair.establish()
    _established(pair)
    (si,), (sr,) = pair.i.sa_list(), pair.r.sa_list()
    sig = "digital-signature (ecdsa-sha256)"
    if initiator_psk:
        assert (si["auth"]["local"], si["auth"]["remote"]) == ("psk", sig)
        assert (sr["auth"]["local"], sr["auth"]["remote"]) == (sig, "psk")
        assert sr["auth"]["peer_cert"] is None and si["auth"]["peer_cert"].startswith("CN=sun")
    else:
        assert (si["auth"]["local"], si["auth"]["remote"]) == (sig, "psk")
        assert sr["auth"]["peer_cert"].startswith("CN=moon")


def test_psk_peer_refused_where_a_certificate_is_expected(pubkey_pair):
    pki = Pki()
    sun = pki.gateway("sun.example.org")
    pair = pubkey_pair(pki, i_store=pki.store(None), r_store=pki.store(sun),
                       i_auth=("psk", "pubkey"), r_auth=("pubkey", "pubkey"))
    pair.establish()
    _failed(pair, "authenticates with a pre-shared key; we expect a signature")


def test_wrong_ca(pubkey_pair):
    pki, other = Pki(), Pki()
    moon = other.gateway("moon.example.org")  # issued by a CA the responder does not trust
    sun = pki.gateway("sun.example.org")
    pair = pubkey_pair(pki, i_store=other.store(moon), r_store=pki.store(sun))
    pair.establish()
    why_i, why_r = _failed(pair, "CN=ocfpy test root")
    assert "trust" in why_r
    assert "AUTHENTICATION_FAILED" in why_i and "CA" in why_i


def test_expired_certificate(pubkey_pair):
    pki = Pki()
    moon = pki.gateway("moon.example.org", not_before=pki.now - dt.timedelta(days=60),
                       not_after=pki.now - dt.timedelta(days=2))
    sun = pki.gateway("sun.example.org")
    pair = pubkey_pair(pki, i_store=pki.store(moon), r_store=pki.store(sun))
    pair.establish()
    _failed(pair, "expired on")


def test_revoked_certificate(pubkey_pair):
    pki = Pki()
    moon, sun = pki.gateway("moon.example.org"), pki.gateway("sun.example.org")
    revoked = pki.pki.crl(pki.root, [moon], now=pki.now)
    pair = pubkey_pair(pki, i_store=pki.store(moon), r_store=pki.store(sun, crls=[revoked]))
    pair.establish()
    _failed(pair, "revoked")


def test_revocation_checked_is_reported(pubkey_pair):
    pki = Pki()
    moon, sun = pki.gateway("moon.example.org"), pki.gateway("sun.example.org")
    crl = pki.pki.crl(pki.root, [], now=pki.now)
    pair = pubkey_pair(pki, i_store=pki.store(moon), r_store=pki.store(sun, crls=[crl]))
    pair.establish()
    _established(pair)
    (sr,) = pair.r.sa_list()
    assert "not checked" not in sr["auth"]["revocation"]


def test_identity_not_in_certificate(pubkey_pair, monkeypatch):
    """A peer that claims an identity its certificate does not hold (ours refuses to send
    one: see the next test, so the initiator's own check is bypassed here)."""
    from ocfpy.ike.pubkey import CertStore

    pki = Pki()
    moon = pki.gateway("moon.example.org", ids=["venus.example.org"])
    sun = pki.gateway("sun.example.org")
    # the sender's own check (ike_auth asks its store); the receiver's is certs.validate_chain
    monkeypatch.setattr(CertStore, "holds_identity", lambda *a, **k: True)
    pair = pubkey_pair(pki, i_store=pki.store(moon), r_store=pki.store(sun))
    pair.establish()
    _failed(pair, "IDi 'moon.example.org' is not in the certificate")
    assert "venus.example.org" in pair.r.why("home")


def test_our_identity_must_be_in_our_certificate(pubkey_pair):
    pki = Pki()
    moon = pki.gateway("moon.example.org", ids=["venus.example.org"])
    pair = pubkey_pair(pki, i_store=pki.store(moon), r_store=pki.store(None))
    pair.establish()
    assert len(pair.wire) == 2  # IKE_SA_INIT only: nothing useless is sent
    (fail,) = pair.of_type("i", NegotiationFailed)
    assert fail.notify == NotifyType.AUTHENTICATION_FAILED
    assert "our identity moon.example.org is in none of our certificates" in fail.explanation


def test_accepted_signatures_restrict_the_peer(pubkey_pair):
    pki = Pki()
    moon, sun = pki.gateway("moon.example.org"), pki.gateway("sun.example.org")
    pair = pubkey_pair(pki, i_store=pki.store(moon), r_store=pki.store(sun),
                       r_remote_kw={"signatures": ["rsa/pss-sha256"]})
    pair.establish()
    _failed(pair, "the peer signed with ")
    assert "we only accept" in pair.r.why("home")


def test_no_wall_clock_is_an_error_not_a_guess(pubkey_pair):
    pki = Pki()
    moon, sun = pki.gateway("moon.example.org"), pki.gateway("sun.example.org")
    pair = pubkey_pair(pki, i_store=pki.store(moon), r_store=pki.store(sun))
    pair.r.ctx.credentials.wall_clock = None
    pair.establish()
    _failed(pair, "no wall clock")


# -- IKE fragmentation (RFC 7383) -----------------------------------------------------------------
def _fragments(pair, side: str) -> list[bytes]:
    return [w[1] for w in pair.wire if w[0] == side and w[1][16] == 53]  # SKF first payload


def _big_chain_pair(pubkey_pair, **kw):
    """A 3-level chain under a 4096-bit RSA root: IKE_AUTH exceeds 1280 bytes."""
    pki = Pki("rsa-4096")
    inter = pki.pki.issue("ocfpy intermediate", pki.root, kind="rsa-3072", ca=True,
                          path_length=0, now=pki.now)
    moon = pki.gateway("moon.example.org", "rsa-3072", issuer=inter)
    sun = pki.gateway("sun.example.org", "rsa-3072", issuer=inter)
    return pubkey_pair(pki, i_store=pki.store(moon, cas=[pki.root, inter]),
                       r_store=pki.store(sun, cas=[pki.root, inter]), **kw)


def test_large_ike_auth_is_fragmented(pubkey_pair):
    pair = _big_chain_pair(pubkey_pair)
    pair.establish()
    _established(pair)
    init_i, init_r = decode(pair.wire[0][1]), decode(pair.wire[1][1])
    for m in (init_i, init_r):  # RFC 7383 2.3: announced by both
        assert m.notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
    for side in "ir":
        frags = _fragments(pair, side)
        assert len(frags) >= 3, [len(w[1]) for w in pair.wire]
        # every datagram within 1280 bytes of IPv4 path (IKE over IPv4: 20 + 8 headers)
        assert all(len(f) + 28 <= 1280 for f in frags)
        assert not [w for w in pair.wire if w[0] == side and len(w[1]) + 28 > 1280]
    assert pair.i.stats["fragmented_messages"] == pair.r.stats["fragmented_messages"] == 1
    assert pair.r.stats["fragments_completed"] == pair.i.stats["fragments_completed"] == 1


def test_fragmentation_no_sends_whole_messages(pubkey_pair):
    pair = _big_chain_pair(pubkey_pair)
    pair.i.config.connections["home"].fragmentation = "no"
    pair.establish()
    _established(pair)
    assert not _fragments(pair, "i") and not _fragments(pair, "r")
    assert decode(pair.wire[0][1]).notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is None
    assert decode(pair.wire[1][1]).notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is None


def test_lost_fragment_retransmits_all_of_them(pubkey_pair):
    pair = _big_chain_pair(pubkey_pair)
    lost = []

    def drop_second_fragment_once(data: bytes) -> bool:
        if data[16] == 53 and int.from_bytes(data[32:34], "big") == 2 and not lost:
            lost.append(data)
            return True
        return False

    pair.i.initiate("home", pair.now)
    pair.run(drop=drop_second_fragment_once)
    assert lost and not pair.of_type("r", IkeSaEstablished)
    pair.advance(10)
    _established(pair)
    assert pair.i.stats["retransmits"] == 1
    # the retransmission is the same fragments, byte for byte (RFC 7383 2.6.1)
    sent = _fragments(pair, "i")
    n = len(sent) // 2
    assert sent[:n] == sent[n:] and lost[0] in sent


def test_forged_fragment_is_dropped_before_reassembly(pubkey_pair):
    pair = _big_chain_pair(pubkey_pair)
    pair.i.initiate("home", pair.now)
    pair.deliver(pair.i, pair.r)  # IKE_SA_INIT
    pair.deliver(pair.r, pair.i)
    frags = pair.i.datagrams_to_send(pair.now)
    assert len(frags) >= 3
    first, src, dst = frags[0]
    forged = bytearray(first)
    forged[-1] ^= 1  # the ICV no longer matches
    pair.r.receive_datagram(bytes(forged), dst, src, pair.now)
    assert pair.r.stats["fragments_forged"] == 1 and pair.r.stats["fragments_kept"] == 0
    for data, local, remote in frags:  # the genuine ones still complete the message
        pair.r.receive_datagram(data, remote, local, pair.now)
    pair.run()
    _established(pair)
    assert pair.r.stats["fragments_completed"] == 1


def test_codec_keeps_an_skf_payload_whole_and_alone(pubkey_pair):
    """RFC 7383 2.5: SKF ends the chain like SK (its Next Payload names the first inner
    payload, not a payload after it) and is the only payload of its message."""
    from ocfpy.ike.codec.buffer import Buffer
    from ocfpy.ike.codec.payloads import pull_payloads
    from ocfpy.ike.errors import DecodeError

    pair = _big_chain_pair(pubkey_pair)
    pair.establish()
    first = _fragments(pair, "i")[0]
    msg = decode(first)
    (skf,) = msg.payloads
    assert skf.TYPE == PayloadType.SKF and first[28] == PayloadType.IDi  # fragment 1's Next
    # a NOTIFY (protocol 0, no SPI, INITIAL_CONTACT) whose Next Payload is SKF
    notify = bytes((53, 0, 0, 8, 0, 0)) + (16384).to_bytes(2, "big")
    with pytest.raises(DecodeError, match="only payload"):
        pull_payloads(Buffer(notify + first[28:]), PayloadType.NOTIFY)


def test_dn_identities_as_strongswan_writes_them(pubkey_pair):
    """id = "C=CH, O=ocfpy lab, CN=moon.example.org" (strongSwan's order and spelling) is an
    ID_DER_ASN1_DN that matches the certificate's subject whatever string types encode it."""
    from cryptography import x509
    from cryptography.x509.name import _ASN1Type
    from cryptography.x509.oid import NameOID

    from ocfpy.ike.config import AuthConfig, ConfigValueError
    from ocfpy.ike.constants import IdType
    from ocfpy.ike.identity import Identity

    moon_dn = "C=CH, O=ocfpy lab, CN=moon.example.org"
    ident = Identity.parse(moon_dn)
    assert ident.id_type == IdType.DER_ASN1_DN
    printable = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ocfpy lab", _ASN1Type.PrintableString),
        x509.NameAttribute(NameOID.COMMON_NAME, "MOON.example.org",
                           _ASN1Type.PrintableString)]).public_bytes()
    assert printable != ident.data and ident.matches(Identity(IdType.DER_ASN1_DN, printable))
    assert not ident.matches(Identity.parse("C=CH, O=ocfpy lab, CN=sun.example.org"))
    assert not ident.matches(Identity.parse("CN=moon.example.org, O=ocfpy lab, C=CH"))  # order
    with pytest.raises(ConfigValueError, match="id"):
        AuthConfig(id="C=CH, =broken")

    pki = Pki()
    moon, sun = pki.gateway("moon.example.org"), pki.gateway("sun.example.org")
    pair = pubkey_pair(pki, i_store=pki.store(moon), r_store=pki.store(sun))
    for conn in (pair.i.config.connections["home"], pair.r.config.connections["home"]):
        me = conn.local.id.split(".")[0]
        conn.local.id = f"C=CH, O=ocfpy lab, CN={me}.example.org"
        peer = "sun" if me == "moon" else "moon"
        conn.remote.id = f"C=CH, O=ocfpy lab, CN={peer}.example.org"
    pair.establish()
    _established(pair)
    (si,) = pair.i.sa_list()
    assert si["local"]["id"] == "CN=moon.example.org, O=ocfpy lab, C=CH"
    assert si["remote"]["id"] == "CN=sun.example.org, O=ocfpy lab, C=CH"
