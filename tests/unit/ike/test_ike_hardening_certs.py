"""What an outsider can make the certificate path do before the peer's AUTH is verified
(issue 13 follow-up on the certificate / RFC 7427 / RFC 7383 work): anyone can complete
IKE_SA_INIT, so the IDs, CERT, CERTREQ and SIGNATURE_HASH_ALGORITHMS payloads are attacker
input. Each test bounds one cost the attacker drives (CPU, memory kept per SA), or checks that
input a peer may legitimately send is not lost."""

from __future__ import annotations

import datetime as dt
import struct
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ocfpy.ike import auth_sig, certs
from ocfpy.ike.constants import IdType
from tests.pki import NOW, crl, dns, issue, name, three_level


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 128:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _dn_with_oid(arc_bytes: int) -> bytes:
    """A DN whose one attribute type is an OID with an arc of ``arc_bytes`` base-128 digits."""
    oid = _der(6, b"\x81" * arc_bytes + b"\x01")
    return _der(0x30, _der(0x31, _der(0x30, oid + _der(12, b"x"))))


# -- IDs that do not parse: ID_DER_ASN1_DN ---------------------------------------------------
def test_a_dn_with_a_huge_oid_costs_little():
    """Decoding an OID arc was quadratic in its length: a 60 KB IDi (one fragmented IKE_AUTH)
    cost 0.6 s per comparison with a configured DN and as much again per log line. An OID
    that long is not a name (X.690 8.19; real ones have a few short arcs): refused."""
    dn = _dn_with_oid(60000)
    t = time.perf_counter()
    assert certs.dn_key(dn) is None and not certs.same_dn(dn, dn + b"\x00")
    text = certs.dn_text(dn)
    spent = time.perf_counter() - t
    assert spent < 0.05, f"{spent:.3f} s for a 60 KB DN"
    assert len(text) < 200, f"{len(text)} characters of message for one DN"


def test_ordinary_dns_still_compare_and_print():
    a = x509.Name.from_rfc4514_string("CN=gw.example.org,O=ocfpy").public_bytes()
    b = x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "ocfpy",
                                      x509.name._ASN1Type.PrintableString),
                   x509.NameAttribute(x509.NameOID.COMMON_NAME, "GW.example.org")]).public_bytes()
    assert a != b and certs.same_dn(a, b)
    assert certs.dn_text(a) == "CN=gw.example.org, O=ocfpy"


# -- SIGNATURE_HASH_ALGORITHMS (RFC 7427 4) ---------------------------------------------------
def test_hash_algorithms_keep_only_what_can_be_used():
    """A 10 KB IKE_SA_INIT with 4,990 hash IDs was kept whole per half-open SA (a tuple of
    4,990 ints, about 180 KB: 18 times the datagram, times half_open_limit). Only the IDs we
    know can ever be chosen (choose_scheme ignores the others): those are kept, once each,
    and a few unknown ones for the messages."""
    sha256, sha384 = auth_sig.HASH_IDS["sha256"], auth_sig.HASH_IDS["sha384"]
    ids = list(range(1000, 5990)) + [sha384, sha256, sha384]
    got = auth_sig.decode_hash_algorithms(struct.pack(f"!{len(ids)}H", *ids))
    n = auth_sig.MAX_UNKNOWN_HASHES
    assert got == (*range(1000, 1000 + n), sha384, sha256)


# -- CERTREQ (RFC 7296 3.7) ----------------------------------------------------------------------
def test_certreq_keeps_only_the_hashes_of_our_cas():
    """CERTREQ hashes were kept per SA as sent: 500 per 10 KB datagram, 3,276 in a fragmented
    IKE_AUTH. Only the hashes of CAs of our own chains can change which chain we send."""
    root, inter, ee = three_level()
    ours = {certs.ca_key_hash(inter.cert), certs.ca_key_hash(root.cert)}
    data = bytes(20) * 3000 + certs.ca_key_hash(inter.cert) * 2 + b"\x01" * 20
    got = certs.requested_cas([data], ours)
    assert got == [certs.ca_key_hash(inter.cert)]
    chains = [certs.LocalChain(ee.cert, (inter.cert, root.cert))]
    assert certs.choose_chain(chains, got) is chains[0]


# -- CERT: chain building ------------------------------------------------------------------------
def _same_name_decoys(n: int, subject: x509.Name) -> list[x509.Certificate]:
    """``n`` CA certificates all named ``subject``, none of which issued anything."""
    out = []
    for _ in range(n):
        key = ec.generate_private_key(ec.SECP256R1())
        out.append(x509.CertificateBuilder().subject_name(subject).issuer_name(name("elsewhere"))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(NOW - dt.timedelta(days=1))
                   .not_valid_after(NOW + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    return out


def test_chain_building_verifies_a_bounded_number_of_signatures(monkeypatch):
    """Every CERT payload named like the issuer it looks for cost a signature verification,
    at every level: 60 decoys were 60 verifications (with 16,384-bit RSA keys and a 64-bit
    exponent, 17 ms each on the lab machine). The peer's certificates are capped
    (MAX_PEER_CERTS), and so are the verifications one chain may cost (MAX_VERIFICATIONS)."""
    root, inter, ee = three_level()
    calls = []
    real = certs._issued_by
    monkeypatch.setattr(certs, "_issued_by", lambda c, i: calls.append(1) or real(c, i))
    decoys = _same_name_decoys(60, inter.cert.subject)
    v = certs.validate_chain(ee.cert, [*decoys, inter.cert], [root.cert], now=NOW)
    assert len(calls) <= certs.MAX_VERIFICATIONS, len(calls)
    assert not v.ok and "signature verifications" in v.reason
    calls.clear()  # the genuine chain, decoys or not, within the bound
    v = certs.validate_chain(ee.cert, [inter.cert, *decoys[:3]], [root.cert], now=NOW)
    assert v.ok and len(calls) <= certs.MAX_VERIFICATIONS


def test_too_many_cert_payloads_are_refused_before_parsing():
    from ocfpy.ike import pubkey
    from ocfpy.ike.errors import IkeProtocolError

    root, inter, ee = three_level()
    store = pubkey.CertStore([], [("x509ca/root.pem", root.cert)], [])
    payloads = [ee.der, inter.der] + [b"\x30\x00"] * (certs.MAX_PEER_CERTS - 1)
    with pytest.raises(IkeProtocolError, match="certificates"):
        pubkey.verify_peer(store, payloads, 14, b"", b"", cacerts=[], signatures=None,
                           peer_id=(IdType.FQDN, b"gw.example.org"), id_label="IDi", now=NOW,
                           dispatcher=None)


# -- CRL files -----------------------------------------------------------------------------------
def test_a_pem_file_with_several_crls_loads_them_all(tmp_path):
    """A PEM bundle of CRLs (one per CA, as `cat` makes them) loaded only the first: the
    revocations in the others were silently not checked."""
    root, inter, ee = three_level()
    when = NOW - dt.timedelta(hours=1)
    bundle = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (
        crl(root, []), crl(inter, [(ee.cert.serial_number, when)])))
    path = tmp_path / "crls.pem"
    path.write_bytes(bundle)
    loaded = certs.load_crls(str(path))
    assert len(loaded) == 2
    v = certs.validate_chain(ee.cert, [inter.cert], [root.cert], now=NOW, crls=loaded)
    assert v.check is certs.Check.REVOKED


def test_ordinary_sans_identity_still_matches():
    root = issue(name("Root CA"), ca=True)
    ee = issue(name("gw"), root, sans=dns("gw.example.org"))
    assert certs.identity_mismatch(ee.cert, IdType.FQDN, b"gw.example.org") is None


# -- the engine applies the daemon's limits -----------------------------------------------------
@pytest.mark.parametrize("limit, text", [({"max_peer_certs": 1}, "max_peer_certs"),
                                         ({"max_chain_verifications": 1},
                                          "max_chain_verifications")])
def test_the_responder_applies_the_certificate_limits(pubkey_pair, limit, text):
    """Through IKE_AUTH: the initiator sends its certificate and an intermediate (2 CERTs,
    2 verifications to the root); the responder's limits refuse it, by name."""
    from ocfpy.ike.config import DaemonOptions
    from ocfpy.ike.constants import NotifyType
    from ocfpy.ike.events import IkeSaEstablished, NegotiationFailed

    from .conftest import Pki

    pki = Pki()
    inter = pki.pki.issue("ocfpy intermediate", pki.root, kind="ecdsa-p256", ca=True,
                          path_length=0, now=pki.now)
    moon = pki.gateway("moon.example.org", issuer=inter)
    sun = pki.gateway("sun.example.org")
    pair = pubkey_pair(pki, i_store=pki.store(moon, cas=[pki.root, inter]),
                       r_store=pki.store(sun), r_daemon=DaemonOptions(**limit))
    pair.establish()
    assert not pair.of_type("r", IkeSaEstablished)
    (fail,) = pair.of_type("r", NegotiationFailed)
    assert fail.notify == NotifyType.AUTHENTICATION_FAILED and text in pair.r.why("home")
    # and with the defaults the same chain is fine
    pair = pubkey_pair(pki, i_store=pki.store(moon, cas=[pki.root, inter]),
                       r_store=pki.store(sun))
    pair.establish()
    assert len(pair.of_type("r", IkeSaEstablished)) == 1
