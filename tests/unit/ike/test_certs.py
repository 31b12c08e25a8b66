"""X.509 chain validation for IKE (ocfpy.ike.certs): every failure a typed result with the
reason `sa why` shows; certificates made with `cryptography` here (tests/pki.py)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ocfpy.ike.certs import (
    Check,
    LocalChain,
    certreq_data,
    choose_chain,
    load_certificates,
    load_crls,
    parse_certreq,
    validate_chain,
)
from ocfpy.ike.constants import IdType
from tests.pki import DAY, NOW, ExtendedKeyUsageOID, crl, dns, ip, issue, name, three_level

FQDN = IdType.FQDN


@pytest.fixture(scope="module")
def pki():
    return three_level()


def test_a_valid_three_level_chain(pki):
    root, inter, ee = pki
    v = validate_chain(ee.cert, [inter.cert], [root.cert], now=NOW,
                       peer_id=(FQDN, b"gw.example.org"))
    assert v.ok and v.check is Check.OK and v.reason == ""
    assert v.chain == (ee.cert, inter.cert, root.cert)
    assert v.revocation == "revocation not checked: no CRLs configured"


def test_expired_and_not_yet_valid(pki):
    root, inter, _ = pki
    old = issue(name("old.example.org"), inter, not_before=NOW - 400 * DAY,
                not_after=NOW - 2 * DAY, sans=dns("old.example.org"))
    v = validate_chain(old.cert, [inter.cert], [root.cert], now=NOW)
    assert v.check is Check.EXPIRED and not v
    assert v.reason == ("the peer's certificate 'CN=old.example.org,O=ocfpy test' expired on "
                        f"{(NOW - 2 * DAY):%Y-%m-%d %H:%M:%S} UTC")
    new = issue(name("new.example.org"), inter, not_before=NOW + DAY)
    v = validate_chain(new.cert, [inter.cert], [root.cert], now=NOW)
    assert v.check is Check.NOT_YET_VALID and "is not valid before" in v.reason
    # an expired CA is named as such
    stale_ca = issue(name("Stale CA"), root, ca=True, not_after=NOW - DAY)
    leaf = issue(name("x"), stale_ca)
    v = validate_chain(leaf.cert, [stale_ca.cert], [root.cert], now=NOW)
    assert v.check is Check.EXPIRED and "the CA certificate 'CN=Stale CA" in v.reason


def test_wrong_ca(pki):
    root, inter, ee = pki
    other_root = issue(name("Other Root"), ca=True)
    v = validate_chain(ee.cert, [inter.cert], [other_root.cert], now=NOW)
    assert v.check is Check.UNTRUSTED
    assert v.reason.startswith("no trusted CA for issuer 'CN=Root CA,O=ocfpy test'")
    # a peer that sends its own (untrusted) root too
    o_root = issue(name("Their Root"), ca=True)
    o_inter = issue(name("Their Sub CA"), o_root, ca=True)
    o_ee = issue(name("gw.example.org"), o_inter, sans=dns("gw.example.org"))
    v = validate_chain(o_ee.cert, [o_inter.cert, o_root.cert], [root.cert], now=NOW)
    assert v.check is Check.UNTRUSTED and "ends at that self-signed CA" in v.reason
    assert v.chain == (o_ee.cert, o_inter.cert, o_root.cert)


def test_a_ca_with_our_anchors_name_but_another_key(pki):
    root, inter, ee = pki
    impostor = issue(name("Root CA"), ca=True)  # same DN, different key
    v = validate_chain(ee.cert, [inter.cert], [impostor.cert], now=NOW)
    assert v.check is Check.SIGNATURE and "same name" in v.reason


def test_missing_intermediate(pki):
    root, _, ee = pki
    v = validate_chain(ee.cert, [], [root.cert], now=NOW)
    assert v.check is Check.UNTRUSTED
    assert "no trusted CA for issuer 'CN=Intermediate CA,O=ocfpy test'" in v.reason
    assert "missing intermediate" in v.reason


def test_revoked_by_crl(pki):
    root, inter, ee = pki
    when = NOW - 3 * DAY
    v = validate_chain(ee.cert, [inter.cert], [root.cert], now=NOW,
                       crls=[crl(inter, [(ee.cert.serial_number, when)]), crl(root, [])])
    assert v.check is Check.REVOKED
    assert v.reason == ("the peer's certificate 'CN=gw.example.org,O=ocfpy test' was revoked by "
                        "the CRL of 'CN=Intermediate CA,O=ocfpy test' on "
                        f"{when:%Y-%m-%d %H:%M:%S} UTC")
    # revoked intermediate
    v = validate_chain(ee.cert, [inter.cert], [root.cert], now=NOW,
                       crls=[crl(root, [(inter.cert.serial_number, when)])])
    assert v.check is Check.REVOKED and "the CA certificate 'CN=Intermediate CA" in v.reason


def test_crl_results_are_reported(pki):
    root, inter, ee = pki
    v = validate_chain(ee.cert, [inter.cert], [root.cert], now=NOW, crls=[crl(inter, [])])
    assert v.ok
    assert "'CN=gw.example.org,O=ocfpy test' not revoked (CRL of 'CN=Intermediate CA" in v.revocation
    assert "'CN=Intermediate CA,O=ocfpy test' not checked: no CRL from 'CN=Root CA" in v.revocation
    # a CRL signed by someone else is not believed
    forged = crl(issue(name("Intermediate CA"), ca=True), [(ee.cert.serial_number, NOW)])
    v = validate_chain(ee.cert, [inter.cert], [root.cert], now=NOW, crls=[forged])
    assert v.ok and "no CRL from 'CN=Intermediate CA" in v.revocation
    v = validate_chain(ee.cert, [inter.cert], [root.cert], now=NOW,
                       crls=[crl(inter, [], next_update=NOW - DAY)])
    assert v.ok and "out of date since" in v.revocation


def test_path_length(pki):
    root = issue(name("Strict Root"), ca=True, path_length=0)
    inter = issue(name("Sub CA"), root, ca=True)
    ee = issue(name("gw"), inter)
    v = validate_chain(ee.cert, [inter.cert], [root.cert], now=NOW)
    assert v.check is Check.PATH_LENGTH
    assert v.reason == ("the CA 'CN=Strict Root,O=ocfpy test' allows 0 intermediate CA(s) below "
                        "it (pathLenConstraint), the chain has 1")


def test_an_intermediate_that_is_not_a_ca(pki):
    root, _, _ = pki
    not_ca = issue(name("Not a CA"), root, key_usage=None)
    ee = issue(name("gw"), not_ca)
    v = validate_chain(ee.cert, [not_ca.cert], [root.cert], now=NOW)
    assert v.check is Check.NOT_A_CA and "basicConstraints" in v.reason


def test_key_usage(pki):
    root, inter, _ = pki
    ee = issue(name("enc-only"), inter, key_usage="key_encipherment")
    v = validate_chain(ee.cert, [inter.cert], [root.cert], now=NOW)
    assert v.check is Check.KEY_USAGE and "without digitalSignature" in v.reason
    # no keyUsage at all is fine (RFC 4945 5.1.3.2: "where present")
    ee = issue(name("no-ku"), inter, key_usage=None)
    assert validate_chain(ee.cert, [inter.cert], [root.cert], now=NOW).ok


@pytest.mark.parametrize("ekus,ok", [
    (None, True),
    ([ExtendedKeyUsageOID.SERVER_AUTH], True),
    ([ExtendedKeyUsageOID.CLIENT_AUTH], True),
    ([x509.ObjectIdentifier("1.3.6.1.5.5.7.3.17")], True),  # id-kp-ipsecIKE
    ([ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE], True),
    ([ExtendedKeyUsageOID.CODE_SIGNING], False),
    ([ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.TIME_STAMPING], False),
])
def test_extended_key_usage_policy(pki, ekus, ok):
    root, inter, _ = pki
    ee = issue(name("eku"), inter, ekus=ekus)
    v = validate_chain(ee.cert, [inter.cert], [root.cert], now=NOW)
    assert v.ok is ok
    if not ok:
        assert v.check is Check.EXTENDED_KEY_USAGE and "IKE accepts" in v.reason


def test_name_constraints():
    root = issue(name("Constrained Root"), ca=True, name_constraints=x509.NameConstraints(
        permitted_subtrees=[x509.DNSName("example.org")], excluded_subtrees=None))
    good = issue(name("gw"), root, sans=dns("gw.example.org"))
    bad = issue(name("gw"), root, sans=dns("gw.example.com"))
    assert validate_chain(good.cert, [], [root.cert], now=NOW).ok
    v = validate_chain(bad.cert, [], [root.cert], now=NOW)
    assert v.check is Check.NAME_CONSTRAINTS and "name constraints" in v.reason


def test_identity_in_certificate(pki):
    root, inter, _ = pki
    ee = issue(name("gw.example.org"), inter,
               sans=[*dns("gw.example.org"), x509.RFC822Name("vpn@example.org"),
                     ip("192.0.2.1"), ip("2001:db8::1")])
    chain = ([inter.cert], [root.cert])

    def check(id_type, data):
        return validate_chain(ee.cert, *chain, now=NOW, peer_id=(id_type, data), id_label="IDr")

    assert check(FQDN, b"GW.example.org").ok  # DNS names are case-insensitive
    assert check(IdType.RFC822_ADDR, b"vpn@example.org").ok
    assert check(IdType.IPV4_ADDR, bytes([192, 0, 2, 1])).ok
    assert check(IdType.IPV6_ADDR, bytes.fromhex("20010db8" + "0" * 23 + "1")).ok
    assert check(IdType.DER_ASN1_DN, ee.cert.subject.public_bytes()).ok
    v = check(FQDN, b"vpn.example.org")
    assert v.check is Check.IDENTITY
    assert v.reason == ("IDr 'vpn.example.org' is not in the certificate (subject "
                        "'CN=gw.example.org,O=ocfpy test', SANs: gw.example.org, vpn@example.org, "
                        "192.0.2.1, 2001:db8::1)")
    v = check(IdType.DER_ASN1_DN, name("other").public_bytes())
    assert v.check is Check.IDENTITY and "IDr 'CN=other, O=ocfpy test'" in v.reason
    assert check(IdType.IPV4_ADDR, bytes([192, 0, 2, 2])).check is Check.IDENTITY
    # the CN is not an identity (no CN fallback, as strongSwan)
    cn_only = issue(name("cn.example.org"), inter)
    v = validate_chain(cn_only.cert, *chain, now=NOW, peer_id=(FQDN, b"cn.example.org"))
    assert v.check is Check.IDENTITY and "SANs: none" in v.reason
    assert check(IdType.KEY_ID, b"\x01").check is Check.IDENTITY


def test_certreq_hashes_and_chain_choice(pki):
    root, inter, ee = pki
    other_root = issue(name("Other Root"), ca=True)
    other_ee = issue(name("gw2"), other_root)
    spki = root.cert.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    data = certreq_data([root.cert, other_root.cert])
    assert data[:20] == hashlib.sha1(spki).digest() and len(data) == 40  # RFC 7296 3.7
    assert parse_certreq(data) == [data[:20], data[20:]]
    assert parse_certreq(data + b"\x01\x02") == [data[:20], data[20:]]
    mine = [LocalChain(other_ee.cert, (other_root.cert,)),
            LocalChain(ee.cert, (inter.cert, root.cert))]
    assert choose_chain(mine, parse_certreq(certreq_data([root.cert]))) is mine[1]
    assert choose_chain(mine, parse_certreq(certreq_data([other_root.cert]))) is mine[0]
    assert choose_chain(mine, []) is mine[0]
    assert choose_chain([], []) is None
    # CERT payloads: ours and the intermediate, not the self-signed root
    assert mine[1].cert_payloads() == [ee.der, inter.der]


def test_loaders(tmp_path, pki):
    root, inter, ee = pki
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ee.pem() + inter.pem())
    assert load_certificates(str(bundle)) == [ee.cert, inter.cert]
    der = tmp_path / "ee.der"
    der.write_bytes(ee.der)
    assert load_certificates(str(der)) == [ee.cert]
    crl_file = tmp_path / "ca.crl"
    crl_file.write_bytes(crl(inter, []).public_bytes(serialization.Encoding.PEM))
    assert len(load_crls(str(crl_file))) == 1
    from ocfpy.ike.certs import CertificateError

    with pytest.raises(CertificateError, match="cannot read"):
        load_certificates(str(tmp_path / "nope.pem"))
    (tmp_path / "junk.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nxx\n")
    with pytest.raises(CertificateError, match="junk.pem: not an X.509 certificate"):
        load_certificates(str(tmp_path / "junk.pem"))
