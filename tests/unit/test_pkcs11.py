"""The pkcs11 driver against a real SoftHSM2 token (its own token directory per test through
SOFTHSM2_CONF): signatures made in the token and verified with cryptography, the key never
leaving it, RFC 7512 URIs, PINs from configuration only, probe reasons, and the dispatcher's
key-reach rule (token keys on pkcs11, files and verification on OpenSSL)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.errors import DriverUnavailable, InvalidKey
from ocfpy.crypto.registry import DriverStatus, Registry
from ocfpy.crypto.signatures import KeyFile, Pkcs11Key, PublicKey
from plugins.openssl import OpenSSLDriver
from plugins.pkcs11 import MODULE_CANDIDATES, Pkcs11Driver
from plugins.pkcs11.uri import parse

pkcs11 = pytest.importorskip("pkcs11", reason="python-pkcs11 not installed: pip install -e '.[test]'")
MODULE = next((p for p in MODULE_CANDIDATES[:3] if os.path.exists(p)), None)
needs_softhsm = pytest.mark.skipif(
    MODULE is None or shutil.which("softhsm2-util") is None,
    reason="softhsm2 is not installed (Debian: apt install softhsm2; scripts/setup.sh does)")

PIN, SO_PIN, LABEL = "1234", "5678", "ocfpy-test"
# Whether this SoftHSM2 build has CKM_EDDSA (Debian 12's 2.6.1 does; older builds do not).
EDDSA = MODULE is not None and any(
    getattr(m, "name", "") == "EDDSA" for slot in pkcs11.lib(MODULE).get_slots()
    for m in slot.get_mechanisms())
MESSAGE = b"IKE signed octets"


@pytest.fixture(scope="module")
def token(tmp_path_factory):
    """A SoftHSM2 token store of this module's own (SOFTHSM2_CONF), with RSA-2048, EC P-256
    (and Ed25519) key pairs made in the token with CKA_SENSITIVE=true, CKA_EXTRACTABLE=false.
    One per module, not per test: making an RSA key in SoftHSM2 takes ~1 s here, and no test
    changes the token (the drivers' sessions are closed after each)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield from _token(tmp_path_factory.mktemp("softhsm"), monkeypatch)


def _token(tmp_path, monkeypatch):
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    monkeypatch.setenv("OCFPY_PKCS11_MODULE", MODULE)  # type: ignore[arg-type]
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", LABEL, "--pin", PIN,
                    "--so-pin", SO_PIN], check=True, capture_output=True)
    lib = pkcs11.lib(MODULE)
    lib.reinitialize()  # SoftHSM2 reads SOFTHSM2_CONF at C_Initialize: this test's tokens
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_named_curve_parameters

    private = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False}
    with lib.get_token(token_label=LABEL).open(user_pin=PIN, rw=True) as s:
        s.generate_keypair(KeyType.RSA, 2048, store=True, label="gw-rsa", id=b"\x01",
                           private_template=private)
        params = s.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True)
        params.generate_keypair(store=True, label="gw-ec", id=b"\x02", private_template=private)
        if EDDSA:
            params = s.create_domain_parameters(
                KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: bytes.fromhex("06032b6570")},
                local=True)
            params.generate_keypair(store=True, label="gw-ed", id=b"\x03",
                                    private_template=private)
    yield lib
    lib.reinitialize()  # drop this token store before the directory goes


@pytest.fixture
def dispatcher(token, monkeypatch):
    monkeypatch.setenv("OCFPY_PKCS11_MODULE", MODULE)  # type: ignore[arg-type]
    d = Dispatcher(Registry.from_drivers([OpenSSLDriver(), Pkcs11Driver()]))
    yield d
    d.registry.get("pkcs11").driver.close()


def _public(spki: bytes):
    return serialization.load_der_public_key(spki)


# -- URIs (no token needed) ----------------------------------------------------------------------
def test_uri_parsing():
    u = parse("pkcs11:token=My%20VPN;object=gw-key;id=%01%ff;type=private"
              "?module-path=/usr/lib/softhsm/libsofthsm2.so")
    assert (u.token, u.object, u.id, u.module_path) == ("My VPN", "gw-key", b"\x01\xff",
                                                        "/usr/lib/softhsm/libsofthsm2.so")
    assert parse("pkcs11:id=%02").object is None
    for bad, why in (("pkcs11:object=k?pin-value=1234", r"\[secrets.token-NAME\]"),
                     ("pkcs11:object=k;pin-source=file:/p", "not accepted"),
                     ("pkcs11:token=t", "object= .* or id="),
                     ("pkcs11:object=k;type=public", "type=private"),
                     ("pkcs11:object=k;colour=red", "'colour' is not known"),
                     ("file:/etc/key.pem", "not a PKCS#11 URI"),
                     ("pkcs11:object=a;object=b", "given twice")):
        with pytest.raises(InvalidKey, match=why):
            parse(bad)


def test_probe_names_the_module_it_tried(monkeypatch):
    monkeypatch.setenv("OCFPY_PKCS11_MODULE", "/nonexistent/libp11.so")
    with pytest.raises(DriverUnavailable, match="/nonexistent/libp11.so does not exist"):
        Pkcs11Driver().probe()
    record = Registry.from_drivers([Pkcs11Driver()]).get("pkcs11")
    assert record.status is DriverStatus.UNAVAILABLE and "/nonexistent/libp11.so" in record.reason


@needs_softhsm
def test_probe_says_when_no_token_is_initialised(tmp_path, monkeypatch):
    (tmp_path / "tokens").mkdir()
    (tmp_path / "c.conf").write_text(f"directories.tokendir = {tmp_path / 'tokens'}\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(tmp_path / "c.conf"))
    monkeypatch.setenv("OCFPY_PKCS11_MODULE", MODULE)  # type: ignore[arg-type]
    lib = pkcs11.lib(MODULE)
    lib.reinitialize()
    try:
        with pytest.raises(DriverUnavailable, match=f"{MODULE} has no initialised token"):
            Pkcs11Driver().probe()
    finally:
        lib.reinitialize()


# -- against SoftHSM2 ------------------------------------------------------------------------------
@needs_softhsm
def test_offers_come_from_the_tokens_mechanisms(dispatcher):
    record = dispatcher.registry.get("pkcs11")
    assert record.status is DriverStatus.ACTIVE, record.reason
    offered = set(record.admitted)
    assert {"rsa-sha256", "rsa-sha512", "rsa/pss-sha256", "rsa/pss-sha384", "ecdsa-256",
            "ecdsa-384", "ecdsa-sha256"} <= offered
    assert ("ed25519" in offered) is EDDSA  # from CKM_EDDSA, where the build has it
    assert "CKM_SHA256_RSA_PKCS_PSS on token(s) 'ocfpy-test'" in record.admitted[
        "rsa/pss-sha256"].implementation
    assert "ocfpy-test" in record.driver.description


@needs_softhsm
@pytest.mark.parametrize("scheme", ["rsa-sha256", "rsa/pss-sha256", "rsa/pss-sha512",
                                    "rsa-sha1"])
def test_rsa_signatures_made_in_the_token(dispatcher, scheme):
    key = Pkcs11Key(f"pkcs11:token={LABEL};object=gw-rsa", pin=PIN)
    with dispatcher.open_signer(scheme, key) as signer:
        assert signer.driver == "pkcs11"
        signature = signer.sign(MESSAGE)
        public = _public(signer.public_key())
    digest = {"rsa-sha256": hashes.SHA256(), "rsa/pss-sha256": hashes.SHA256(),
              "rsa/pss-sha512": hashes.SHA512(), "rsa-sha1": hashes.SHA1()}[scheme]
    pad = (padding.PSS(padding.MGF1(digest), digest.digest_size) if "pss" in scheme
           else padding.PKCS1v15())
    public.verify(signature, MESSAGE, pad, digest)  # cryptography, independently


@needs_softhsm
def test_ecdsa_signatures_made_in_the_token(dispatcher):
    key = Pkcs11Key(f"pkcs11:token={LABEL};id=%02", pin=PIN)
    with dispatcher.open_signer("ecdsa-256", key) as signer:  # RFC 4754 r || s
        raw = signer.sign(MESSAGE)
        public = _public(signer.public_key())
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, MESSAGE, ec.ECDSA(hashes.SHA256()))
    with dispatcher.open_signer("ecdsa-sha256", key) as signer:  # RFC 7427: DER
        der = signer.sign(MESSAGE)
        spki = signer.public_key()
    public.verify(der, MESSAGE, ec.ECDSA(hashes.SHA256()))
    with dispatcher.open_verifier("ecdsa-sha256", PublicKey(spki)) as verifier:
        assert verifier.driver == "openssl"  # the token does not verify
        verifier.verify(MESSAGE, der)


@needs_softhsm
@pytest.mark.skipif(not EDDSA, reason="this SoftHSM2 build has no CKM_EDDSA")
def test_ed25519_signatures_made_in_the_token(dispatcher):
    key = Pkcs11Key(f"pkcs11:token={LABEL};object=gw-ed", pin=PIN)
    with dispatcher.open_signer("ed25519", key) as signer:
        assert signer.driver == "pkcs11"
        signature = signer.sign(MESSAGE)
        _public(signer.public_key()).verify(signature, MESSAGE)
    with pytest.raises(InvalidKey, match="is an ed25519 key"):
        dispatcher.open_signer("ed448", key)


@needs_softhsm
def test_the_private_key_never_leaves_the_token(dispatcher, token):
    from pkcs11 import Attribute, ObjectClass
    from pkcs11.exceptions import AttributeSensitive

    key = Pkcs11Key(f"pkcs11:token={LABEL};object=gw-rsa", pin=PIN)
    with dispatcher.open_signer("rsa/pss-sha256", key) as signer:
        signer.sign(MESSAGE)
        # what the driver holds: a handle, and the public key
        ctx = signer._ctx
        handle = ctx._key
        assert handle[Attribute.EXTRACTABLE] is False
        assert handle[Attribute.SENSITIVE] is True
        assert handle[Attribute.NEVER_EXTRACTABLE] is True
        assert handle[Attribute.ALWAYS_SENSITIVE] is True
        for secret in (Attribute.PRIVATE_EXPONENT, Attribute.PRIME_1, Attribute.PRIME_2):
            with pytest.raises(AttributeSensitive):
                handle[secret]
        held = [v for v in vars_of(ctx) if isinstance(v, (bytes, bytearray, int))]
        assert all(not isinstance(v, int) or v.bit_length() < 64 for v in held)
    # and the EC key likewise, looked up independently of the driver (the application is
    # logged in already through the driver's session: PKCS#11 logs in per application)
    with token.get_token(token_label=LABEL).open() as s:
        ec_key = s.get_key(object_class=ObjectClass.PRIVATE_KEY, label="gw-ec")
        assert ec_key[Attribute.EXTRACTABLE] is False
        with pytest.raises(AttributeSensitive):
            ec_key[Attribute.VALUE]


def vars_of(obj) -> list:
    return [getattr(obj, name) for name in dir(obj)
            if not name.startswith("__") and not callable(getattr(obj, name))]


@needs_softhsm
def test_pins_and_wrong_keys(dispatcher):
    with pytest.raises(InvalidKey, match="needs a PIN"):
        dispatcher.open_signer("rsa-sha256", Pkcs11Key(f"pkcs11:token={LABEL};object=gw-rsa"))
    with pytest.raises(InvalidKey, match="wrong PIN"):
        dispatcher.open_signer("rsa-sha256",
                               Pkcs11Key(f"pkcs11:token={LABEL};object=gw-rsa", pin="0000"))
    with pytest.raises(InvalidKey, match="no private key"):
        dispatcher.open_signer("rsa-sha256",
                               Pkcs11Key(f"pkcs11:token={LABEL};object=nope", pin=PIN))
    with pytest.raises(InvalidKey, match="no initialised token"):
        dispatcher.open_signer("rsa-sha256", Pkcs11Key("pkcs11:token=other;object=k", pin=PIN))
    with pytest.raises(InvalidKey, match="is an EC key"):
        dispatcher.open_signer("rsa-sha256",
                               Pkcs11Key(f"pkcs11:token={LABEL};object=gw-ec", pin=PIN))
    with pytest.raises(InvalidKey, match="needs a key on secp384r1"):
        dispatcher.open_signer("ecdsa-384",
                               Pkcs11Key(f"pkcs11:token={LABEL};object=gw-ec", pin=PIN))


@needs_softhsm
def test_file_keys_stay_on_openssl(dispatcher, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "k.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    with dispatcher.open_signer("ecdsa-256", KeyFile(str(path))) as signer:
        assert signer.driver == "openssl"  # pkcs11 ranks higher (hardware) but cannot reach it
    digest = hashlib.sha256(MESSAGE).digest()
    assert len(digest) == 32


@needs_softhsm
def test_credentials_find_the_token_key_of_a_certificate(dispatcher, tmp_path):
    """x509/gw.pem holds a certificate for the token's RSA key: the credentials loader pairs
    them through [secrets.token-NAME] (by a signature made in the token), no key file."""
    import datetime as dt

    from cryptography import x509

    from ocfpy.iked.credentials import CredentialError, TokenSecret, load_credentials
    from tests.pki import NOW, issue, name, write

    uri = f"pkcs11:token={LABEL};object=gw-rsa"
    with dispatcher.open_signer("rsa-sha256", Pkcs11Key(uri, PIN)) as signer:
        public = _public(signer.public_key())
    ca = issue(name("Token CA"), ca=True)
    cert = (x509.CertificateBuilder().subject_name(name("gw.example.org"))
            .issuer_name(ca.cert.subject).public_key(public).serial_number(7)
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=30))
            .sign(ca.key, hashes.SHA256()))
    write(tmp_path / "x509" / "gw.pem", cert.public_bytes(serialization.Encoding.PEM))
    write(tmp_path / "x509ca" / "ca.pem", ca.pem())
    tokens = {"vpn": TokenSecret(uri, PIN), "ec": TokenSecret(
        f"pkcs11:token={LABEL};object=gw-ec", PIN)}  # the EC key is asked too, and is no match
    creds = load_credentials(str(tmp_path), now=NOW, token_secrets=tokens,
                             dispatcher=dispatcher)
    (mine,) = creds.local
    assert mine.key == Pkcs11Key(uri, PIN) and mine.key_where == uri
    assert creds.rows()[0]["private_key"] == uri
    with pytest.raises(CredentialError) as e:
        load_credentials(str(tmp_path), now=NOW, token_secrets={"vpn": TokenSecret(uri, "0000")},
                         dispatcher=dispatcher)
    assert any("[secrets.token-vpn]" in p and "wrong PIN" in p for p in e.value.problems)
    assert "no private key for the certificate" in e.value.problems[0]
