"""Signature schemes through the framework: the catalogue entries and their RFC 7427
AlgorithmIdentifiers, sessions opened by the dispatcher on the OpenSSL driver, key files
(encrypted or not), the key-reach rule, admission KATs and the pairwise consistency check."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import NameOID

from ocfpy.crypto import catalogue, selftest
from ocfpy.crypto.catalogue import Primitive
from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.errors import (
    BackendUnavailable,
    InvalidKey,
    InvalidSignature,
    OcfError,
    UnknownAlgorithm,
)
from ocfpy.crypto.registry import DriverStatus, Registry
from ocfpy.crypto.signatures import (
    KeyBytes,
    KeyFile,
    Pkcs11Key,
    PublicKey,
    all_schemes,
    by_algorithm_identifier,
    by_ike_method,
)
from ocfpy.crypto.signatures import get as get_scheme
from plugins.openssl import OpenSSLDriver
from plugins.openssl.signature import OpenSSLSigner

# RFC 7427 Appendix A (A.1 PKCS#1 v1.5, A.3 ECDSA, A.4.3 RSASSA-PSS with SHA-256: 67 bytes)
# and RFC 8420 section 2 (Ed25519, Ed448). Written down from the RFCs' hex dumps; the test
# below also checks each against the DER OpenSSL puts in a certificate, independently.
RFC_ALGORITHM_IDENTIFIERS = {
    "rsa-sha1": "300d06092a864886f70d0101050500",
    "rsa-sha256": "300d06092a864886f70d01010b0500",
    "rsa-sha384": "300d06092a864886f70d01010c0500",
    "rsa-sha512": "300d06092a864886f70d01010d0500",
    "ecdsa-sha256": "300a06082a8648ce3d040302",
    "ecdsa-sha384": "300a06082a8648ce3d040303",
    "ecdsa-sha512": "300a06082a8648ce3d040304",
    "rsa/pss-sha256": "304106092a864886f70d01010a3034a00f300d06096086480165030402010500a11c"
                      "301a06092a864886f70d010108300d06096086480165030402010500a203020120",
    "ed25519": "300506032b6570",
    "ed448": "300506032b6571",
}

_KEYS: dict[str, object] = {}


def _key(scheme):
    """A private key fitting the scheme (one per kind per test run: RSA generation is slow)."""
    if scheme.family == "eddsa":
        kind = scheme.keyword
    elif scheme.family.startswith("rsa"):
        kind = "rsa"
    else:
        kind = f"ec-{scheme.curve or 'secp256r1'}"
    if kind not in _KEYS:
        if kind == "rsa":
            _KEYS[kind] = rsa.generate_private_key(65537, 2048)
        elif kind == "ed25519":
            _KEYS[kind] = ed25519.Ed25519PrivateKey.generate()
        elif kind == "ed448":
            _KEYS[kind] = ed448.Ed448PrivateKey.generate()
        else:
            curve = {"ec-secp256r1": ec.SECP256R1, "ec-secp384r1": ec.SECP384R1,
                     "ec-secp521r1": ec.SECP521R1}[kind]
            _KEYS[kind] = ec.generate_private_key(curve())
    return _KEYS[kind]


def _pem(key, passphrase: bytes | None = None) -> bytes:
    enc = (serialization.BestAvailableEncryption(passphrase) if passphrase
           else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def _spki(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def dispatcher() -> Dispatcher:
    return Dispatcher(Registry.from_drivers([OpenSSLDriver()]))


# -- the catalogue entries -----------------------------------------------------------------------
def test_schemes_are_catalogue_entries():
    for scheme in all_schemes():
        assert catalogue.get(scheme.keyword) is scheme
        assert scheme.primitive is Primitive.SIGNATURE
        assert scheme.ike_id is None  # not an SA proposal transform
    assert catalogue.get("rsa-pss-sha384").keyword == "rsa/pss-sha384"
    assert catalogue.get("ECDSA256").keyword == "ecdsa-256"
    with pytest.raises(UnknownAlgorithm):
        catalogue.get("rsa/pss-sha1")


def test_scheme_families_and_methods():
    assert {s.keyword for s in all_schemes()} == {
        "rsa-sha1", "rsa-sha256", "rsa-sha384", "rsa-sha512",
        "rsa/pss-sha256", "rsa/pss-sha384", "rsa/pss-sha512",
        "ecdsa-sha256", "ecdsa-sha384", "ecdsa-sha512", "ecdsa-256", "ecdsa-384", "ecdsa-521",
        "ed25519", "ed448"}
    # RFC 7296 3.8 / RFC 4754: the dedicated methods
    assert by_ike_method(1).keyword == "rsa-sha1"
    assert [by_ike_method(m).keyword for m in (9, 10, 11)] == ["ecdsa-256", "ecdsa-384",
                                                                "ecdsa-521"]
    assert by_ike_method(14) is None
    assert get_scheme("ecdsa-521").output_size == 132  # r || s, 66 bytes each


@pytest.mark.parametrize("keyword", sorted(RFC_ALGORITHM_IDENTIFIERS))
def test_algorithm_identifier_matches_the_rfc(keyword):
    scheme = get_scheme(keyword)
    assert scheme.algorithm_identifier.hex() == RFC_ALGORITHM_IDENTIFIERS[keyword]
    assert by_algorithm_identifier(scheme.algorithm_identifier) is scheme


def _signature_algorithm_of(cert_der: bytes) -> bytes:
    """Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }."""
    def tlv(buf: bytes, at: int) -> tuple[int, int]:  # (start of content, end)
        n = buf[at + 1]
        if n < 0x80:
            return at + 2, at + 2 + n
        k = n & 0x7F
        size = int.from_bytes(buf[at + 2:at + 2 + k], "big")
        return at + 2 + k, at + 2 + k + size
    inner, _ = tlv(cert_der, 0)
    _, tbs_end = tlv(cert_der, inner)
    _, alg_end = tlv(cert_der, tbs_end)
    return cert_der[tbs_end:alg_end]


@pytest.mark.parametrize("scheme", [s for s in all_schemes() if s.digest != "sha1"],
                         ids=lambda s: s.keyword)
def test_algorithm_identifier_matches_cryptography(scheme):
    """Every AlgorithmIdentifier, including those RFC 7427 does not print (PSS with SHA-384 and
    SHA-512), is what OpenSSL writes into a certificate signed with that scheme (cryptography
    no longer signs certificates with SHA-1: rsa-sha1 is checked against the RFC above)."""
    key = _key(scheme)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alg-id")])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)))
    digest = None if scheme.family == "eddsa" else getattr(hashes, scheme.digest.upper())()
    kwargs = {}
    if scheme.family == "rsa-pss":
        kwargs["rsa_padding"] = padding.PSS(padding.MGF1(digest), digest.digest_size)
    cert = builder.sign(key, digest, **kwargs)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert _signature_algorithm_of(der) == scheme.algorithm_identifier


# -- sessions on the OpenSSL driver --------------------------------------------------------------
@pytest.mark.parametrize("scheme", all_schemes(), ids=lambda s: s.keyword)
def test_sign_and_verify_through_the_dispatcher(dispatcher, scheme, tmp_path):
    key = _key(scheme)
    path = tmp_path / "key.pem"
    path.write_bytes(_pem(key))
    with dispatcher.open_signer(scheme.keyword, KeyFile(str(path))) as signer:
        assert signer.driver == "openssl"
        assert signer.public_key() == _spki(key)
        signature = signer.sign(b"signed octets")
        assert signer.ops == 2  # the pairwise check at open, and this one
    if scheme.encoding == "raw" or scheme.family == "eddsa":
        assert len(signature) == scheme.output_size
    with dispatcher.open_verifier(scheme.keyword, PublicKey(_spki(key))) as verifier:
        verifier.verify(b"signed octets", signature)
        with pytest.raises(InvalidSignature):
            verifier.verify(b"signed octetS", signature)
        with pytest.raises(InvalidSignature):
            verifier.verify(b"signed octets", signature[:-1] + bytes([signature[-1] ^ 1]))
        assert verifier.auth_failures == 2


def test_ecdsa_der_and_raw_are_the_same_signature(dispatcher):
    key = _key(get_scheme("ecdsa-256"))
    with dispatcher.open_signer("ecdsa-256", KeyBytes(_pem(key))) as raw_signer:
        raw = raw_signer.sign(b"m")
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    # the r || s pair, re-encoded as DER, verifies with cryptography
    key.public_key().verify(encode_dss_signature(r, s), b"m", ec.ECDSA(hashes.SHA256()))
    with dispatcher.open_signer("ecdsa-sha256", KeyBytes(_pem(key))) as der_signer:
        assert len(decode_dss_signature(der_signer.sign(b"m"))) == 2


def test_encrypted_key_file(dispatcher, tmp_path):
    key = _key(get_scheme("ecdsa-384"))
    path = tmp_path / "enc.pem"
    path.write_bytes(_pem(key, b"correct horse"))
    with dispatcher.open_signer("ecdsa-384", KeyFile(str(path), b"correct horse")) as s:
        assert s.public_key() == _spki(key)
    with pytest.raises(InvalidKey, match="no passphrase is configured"):
        dispatcher.open_signer("ecdsa-384", KeyFile(str(path)))
    with pytest.raises(InvalidKey, match="wrong passphrase"):
        dispatcher.open_signer("ecdsa-384", KeyFile(str(path), b"battery staple"))
    assert "correct horse" not in repr(KeyFile(str(path), b"correct horse"))


def test_unreadable_and_mismatched_keys(dispatcher, tmp_path):
    with pytest.raises(InvalidKey, match="cannot read the key"):
        dispatcher.open_signer("ed25519", KeyFile(str(tmp_path / "missing.pem")))
    ec_key = KeyBytes(_pem(_key(get_scheme("ecdsa-256"))))
    with pytest.raises(InvalidKey, match="needs an RSA key"):
        dispatcher.open_signer("rsa/pss-sha256", ec_key)
    # RFC 4754: method 10 binds P-384; a P-256 key cannot make an ecdsa-384 signature
    with pytest.raises(InvalidKey, match="secp384r1"):
        dispatcher.open_signer("ecdsa-384", ec_key)
    with pytest.raises(InvalidKey, match="needs an ed448 key"):
        dispatcher.open_verifier("ed448", PublicKey(_spki(_key(get_scheme("ed25519")))))


def test_a_key_no_driver_can_reach_is_named(dispatcher):
    ref = Pkcs11Key("pkcs11:token=t;object=k", pin="1234")
    with pytest.raises(BackendUnavailable, match="can reach the token key pkcs11:token=t") as e:
        dispatcher.open_signer("rsa-sha256", ref)
    assert "1234" not in str(e.value) and "1234" not in repr(ref)
    with pytest.raises(BackendUnavailable, match="can reach"):
        dispatcher.open_signer("rsa-sha256", ref, backend="openssl")


def test_errors_derive_from_ocferror():
    assert issubclass(InvalidSignature, OcfError)


# -- admission -----------------------------------------------------------------------------------
class _WrongHashSigner(OpenSSLSigner):
    """Signs PKCS#1 v1.5 with SHA-1 whatever the scheme says: a broken driver."""

    def sign(self, data: bytes) -> bytes:
        if self.transform.family == "rsa":
            return self._key.sign(data, padding.PKCS1v15(), hashes.SHA1())
        return super().sign(data)


class _BrokenDriver(OpenSSLDriver):
    name = "broken"

    def new_context(self, transform, key):
        if transform.primitive is Primitive.SIGNATURE and isinstance(key, KeyBytes):
            return _WrongHashSigner(transform, key)
        return super().new_context(transform, key)


def test_a_driver_that_signs_wrongly_is_quarantined_for_that_scheme():
    failures = selftest.run(_BrokenDriver(), ["rsa-sha256", "rsa-sha1", "ecdsa-256", "ed25519"])
    assert set(failures) == {"rsa-sha256"}
    assert "sign: got" in failures["rsa-sha256"]


class _TokenOnlyDriver(OpenSSLDriver):
    """Takes neither in-memory keys nor public keys (like a token driver), and signs wrongly."""

    name = "token-only"

    def offers(self):
        return [o for o in super().offers() if o.keyword == "rsa-sha256"]

    def new_context(self, transform, key):
        from ocfpy.crypto.errors import Reason, Unsupported

        if isinstance(key, KeyFile):
            return _WrongHashSigner(transform, key)
        raise Unsupported(transform.keyword, Reason.KEY_STORE, "token keys only")


def test_a_token_only_driver_is_checked_at_open(tmp_path):
    registry = Registry.from_drivers([OpenSSLDriver(), _TokenOnlyDriver()])
    record = registry.get("token-only")
    assert record.status is DriverStatus.ACTIVE and "rsa-sha256" in record.admitted
    path = tmp_path / "k.pem"
    path.write_bytes(_pem(_key(get_scheme("rsa-sha256"))))
    d = Dispatcher(registry, backend="token-only")
    with pytest.raises(InvalidKey, match="does not verify with its own public key"):
        d.open_signer("rsa-sha256", KeyFile(str(path)))
    # the verifier of the pairwise check ran on OpenSSL (the token-only driver cannot verify)
    assert registry.get("openssl").counters().auth_failures == 1
