"""The swanctl-style credentials folders (ocfpy.iked.credentials): what loads, and each problem
as one "<file>: <reason>" line."""

from __future__ import annotations

import pytest

from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.registry import Registry
from ocfpy.crypto.signatures import KeyFile, PublicKey
from ocfpy.ike.certs import validate_chain
from ocfpy.iked.credentials import (
    CredentialError,
    PrivateSecret,
    load_credentials,
)
from plugins.openssl import OpenSSLDriver
from tests.pki import DAY, NOW, crl, dns, issue, name, three_level, write

PASS = b"swordfish"


@pytest.fixture(scope="module")
def pki():
    return three_level()


@pytest.fixture
def layout(tmp_path, pki):
    root, inter, ee = pki
    write(tmp_path / "x509" / "gw.pem", ee.pem())
    write(tmp_path / "x509ca" / "root.pem", root.pem())
    write(tmp_path / "x509ca" / "inter.pem", inter.pem())
    write(tmp_path / "private" / "gw.key.pem", ee.key_pem(PASS))
    from cryptography.hazmat.primitives import serialization

    write(tmp_path / "x509crl" / "inter.crl",
          crl(inter, []).public_bytes(serialization.Encoding.PEM))
    return tmp_path


SECRETS = {"gw": PrivateSecret("gw.key.pem", PASS)}


def test_a_complete_layout_loads(layout, pki):
    root, inter, ee = pki
    creds = load_credentials(str(layout), now=NOW, private_secrets=SECRETS)
    assert creds.warnings == []
    (mine,) = creds.local
    assert mine.path == "x509/gw.pem" and mine.key_where == "private/gw.key.pem"
    assert mine.certificate == ee.cert
    assert mine.chain.cas == (inter.cert, root.cert)
    assert mine.chain.cert_payloads() == [ee.der, inter.der]
    assert creds.anchors == [root.cert] and creds.intermediates == [inter.cert]
    assert len(creds.certreq()) == 20 and len(creds.crls) == 1
    rows = {r["file"]: r for r in creds.rows()}
    assert rows["x509/gw.pem"]["private_key"] == "private/gw.key.pem"
    assert rows["x509/gw.pem"]["sans"] == ["gw.example.org"]
    assert rows["x509/gw.pem"]["key"] == "ECDSA secp256r1"
    assert rows["x509ca/root.pem"]["ca"] is True
    # the key reference signs through the dispatcher, and our own chain validates
    d = Dispatcher(Registry.from_drivers([OpenSSLDriver()]))
    assert isinstance(mine.key, KeyFile)
    with d.open_signer("ecdsa-sha256", mine.key) as signer:
        signature = signer.sign(b"octets")
    with d.open_verifier("ecdsa-sha256", PublicKey(mine.spki)) as verifier:
        verifier.verify(b"octets", signature)
    v = validate_chain(ee.cert, [inter.cert], creds.anchors, now=NOW,
                       crls=[c for _p, c in creds.crls])
    assert v.ok


def test_key_problems_are_one_line_each(layout, pki):
    root, inter, ee = pki
    with pytest.raises(CredentialError) as e:  # no passphrase configured
        load_credentials(str(layout), now=NOW)
    assert e.value.problems == [
        "private/gw.key.pem: the key is encrypted and no [secrets.private-NAME] gives its "
        "passphrase",
        "x509/gw.pem: no private key for the certificate 'CN=gw.example.org,O=ocfpy test': no "
        "file in private/ holds its key"]
    with pytest.raises(CredentialError, match="private/gw.key.pem: wrong passphrase"):
        load_credentials(str(layout), now=NOW,
                         private_secrets={"gw": PrivateSecret("gw.key.pem", b"nope")})
    write(layout / "private" / "junk.pem", b"-----BEGIN PRIVATE KEY-----\nxx\n")
    with pytest.raises(CredentialError, match=r"private/junk.pem: not a private key"):
        load_credentials(str(layout), now=NOW, private_secrets=SECRETS)
    (layout / "private" / "junk.pem").unlink()
    with pytest.raises(CredentialError,
                       match=r"private/other.pem: no such key file \(named by "
                             r"\[secrets.private-x\]\)"):
        load_credentials(str(layout), now=NOW,
                         private_secrets={**SECRETS, "x": PrivateSecret("other.pem", b"p")})


def test_a_certificate_without_its_key(layout, pki):
    root, inter, _ = pki
    stray = issue(name("stray.example.org"), inter, sans=dns("stray.example.org"))
    write(layout / "x509" / "stray.pem", stray.pem())
    with pytest.raises(CredentialError) as e:
        load_credentials(str(layout), now=NOW, private_secrets=SECRETS)
    assert e.value.problems == [
        "x509/stray.pem: no private key for the certificate 'CN=stray.example.org,O=ocfpy "
        "test': no file in private/ holds its key"]
    # naming only the certificate we have the key for loads
    creds = load_credentials(str(layout), now=NOW, certs=["gw.pem"], private_secrets=SECRETS)
    assert [c.path for c in creds.local] == ["x509/gw.pem"]


def test_expired_and_future_local_certificates(layout, pki):
    root, inter, ee = pki
    old = issue(name("gw.example.org"), inter, not_before=NOW - 90 * DAY,
                not_after=NOW - DAY, key=ee.key)
    write(layout / "x509" / "gw.pem", old.pem())
    with pytest.raises(CredentialError) as e:
        load_credentials(str(layout), now=NOW, private_secrets=SECRETS)
    assert e.value.problems == [
        "x509/gw.pem: the certificate 'CN=gw.example.org,O=ocfpy test' expired on "
        f"{NOW - DAY:%Y-%m-%d %H:%M:%S} UTC"]
    future = issue(name("gw.example.org"), inter, not_before=NOW + DAY, key=ee.key)
    write(layout / "x509" / "gw.pem", future.pem())
    with pytest.raises(CredentialError, match="is not valid before"):
        load_credentials(str(layout), now=NOW, private_secrets=SECRETS)


def test_folders_hold_what_they_say(layout, pki):
    _, _, ee = pki
    write(layout / "x509ca" / "ee.pem", ee.pem())
    write(layout / "x509crl" / "bad.crl", b"not a crl")
    write(layout / "x509" / "broken.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n")
    with pytest.raises(CredentialError) as e:
        load_credentials(str(layout), now=NOW, private_secrets=SECRETS)
    text = "\n".join(e.value.problems)
    assert "x509ca/ee.pem: 'CN=gw.example.org,O=ocfpy test' is not a CA certificate" in text
    assert "x509crl/bad.crl: not a CRL" in text
    assert "x509/broken.pem: not an X.509 certificate" in text


def test_warnings_do_not_stop_loading(tmp_path, pki):
    root, inter, ee = pki
    write(tmp_path / "x509" / "gw.pem", ee.pem())
    write(tmp_path / "private" / "gw.pem", ee.key_pem())
    creds = load_credentials(str(tmp_path), now=NOW)  # no CA certificates at all
    assert creds.local[0].chain.cas == ()
    assert creds.warnings and "no chain to a CA in x509ca/" in creds.warnings[0]
