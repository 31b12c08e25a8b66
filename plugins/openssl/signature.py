"""Signatures with keys the process may hold: PEM/DER key files (optionally encrypted with a
passphrase) and in-memory keys (self-tests), and verification with any public key.

The schemes are ocfpy.crypto.signatures': RSA PKCS#1 v1.5 (RFC 8017 section 8.2), RSASSA-PSS
with MGF1 on the same hash and a salt as long as the hash (RFC 8017 section 8.1, as RFC 7427
Appendix A.4.3 and RFC 8247 section 3.2 expect), ECDSA as DER (RFC 3279 section 2.2.3, for
RFC 7427) or r || s (RFC 4754 section 7), Ed25519/Ed448 (RFC 8032, RFC 8420).
A key reference this driver cannot reach (a PKCS#11 URI) is refused with Reason.KEY_STORE, so
the dispatcher asks the next driver.
"""

from __future__ import annotations

import functools

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ocfpy.crypto.driver import Context, SignContext, VerifyContext
from ocfpy.crypto.errors import InvalidKey, InvalidSignature, Reason, Unsupported
from ocfpy.crypto.signatures import KeyBytes, KeyFile, PublicKey, SignatureScheme

_HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
           "sha512": hashes.SHA512}

_KEY_TYPES = {
    "rsa": (rsa.RSAPrivateKey, rsa.RSAPublicKey),
    "rsa-pss": (rsa.RSAPrivateKey, rsa.RSAPublicKey),
    "ecdsa": (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey),
}
_EDDSA = {
    "ed25519": (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey),
    "ed448": (ed448.Ed448PrivateKey, ed448.Ed448PublicKey),
}


def load_private_key(data: bytes, passphrase: bytes | None, where: str, *,
                     trusted: bool = False):
    """A private key from PEM or DER bytes; InvalidKey says why not, naming ``where``.

    ``trusted`` skips OpenSSL's RSA key consistency check (0.1-0.3 s per 2048-bit key here),
    for the published self-test keys only; a configured key file is always checked."""
    try:
        if b"-----BEGIN" in data:
            return serialization.load_pem_private_key(
                data, passphrase, unsafe_skip_rsa_key_validation=trusted)
        return serialization.load_der_private_key(
            data, passphrase, unsafe_skip_rsa_key_validation=trusted)
    except TypeError as exc:  # encrypted without a passphrase, or a passphrase for a clear key
        if passphrase is None:
            raise InvalidKey(f"{where}: the key is encrypted and no passphrase is configured"
                             ) from None
        raise InvalidKey(f"{where}: {exc}") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        if passphrase is not None and b"ENCRYPTED" in data:
            raise InvalidKey(f"{where}: wrong passphrase or corrupt key") from None
        raise InvalidKey(f"{where}: not a private key cryptography can read ({exc})") from None


def _key_bytes(key) -> tuple[bytes, bytes | None, str]:
    if isinstance(key, KeyFile):
        try:
            with open(key.path, "rb") as f:
                return f.read(), key.passphrase, key.path
        except OSError as exc:
            raise InvalidKey(f"{key.path}: cannot read the key: {exc.strerror}") from None
    return key.data, key.passphrase, "in-memory key"


def _check_type(scheme: SignatureScheme, key, private: bool) -> None:
    index = 0 if private else 1
    want = (_EDDSA[scheme.keyword] if scheme.family == "eddsa" else _KEY_TYPES[scheme.family])
    if not isinstance(key, want[index]):
        kind = {"rsa": "an RSA", "rsa-pss": "an RSA", "ecdsa": "an EC"}.get(scheme.family,
                                                                          f"an {scheme.keyword}")
        raise InvalidKey(f"{scheme}: needs {kind} key, got {type(key).__name__.lstrip('_')}")
    if scheme.curve and scheme.family == "ecdsa" and key.curve.name != scheme.curve:
        # RFC 4754 methods 9-11 bind the curve to the hash; method 14 (DER) does not.
        raise InvalidKey(f"{scheme}: needs a key on {scheme.curve}, got {key.curve.name}")


def _padding(scheme: SignatureScheme):
    algorithm = _HASHES[scheme.digest]()  # type: ignore[index]
    if scheme.family == "rsa-pss":
        return padding.PSS(mgf=padding.MGF1(algorithm), salt_length=algorithm.digest_size)
    return padding.PKCS1v15()


def _coord(key) -> int:
    return (key.curve.key_size + 7) // 8


@functools.lru_cache(maxsize=4)
def _load_in_memory(data: bytes, passphrase: bytes | None):
    # In-memory keys are the admission KATs' published keys (KeyBytes is not a configuration
    # form): the same RSA key serves several schemes, so load it once per process, without
    # OpenSSL's slow RSA consistency check (a wrong published key fails its KAT anyway). Key
    # files are neither cached nor trusted.
    return load_private_key(data, passphrase, "in-memory key", trusted=True)


class OpenSSLSigner(SignContext):
    def __init__(self, scheme: SignatureScheme, key) -> None:
        self.transform = scheme
        if isinstance(key, KeyBytes):
            self._key = _load_in_memory(bytes(key.data), key.passphrase)
        else:
            data, passphrase, where = _key_bytes(key)
            self._key = load_private_key(data, passphrase, where)
        _check_type(scheme, self._key, private=True)

    def sign(self, data: bytes) -> bytes:
        s, key = self.transform, self._key
        if s.family == "eddsa":
            return key.sign(data)
        algorithm = _HASHES[s.digest]()  # type: ignore[index]
        if s.family == "ecdsa":
            der = key.sign(data, ec.ECDSA(algorithm))
            if s.encoding == "der":
                return der
            r, sv = decode_dss_signature(der)
            n = _coord(key)
            return r.to_bytes(n, "big") + sv.to_bytes(n, "big")
        return key.sign(data, _padding(s), algorithm)

    def public_key(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def close(self) -> None:
        self._key = None


class OpenSSLVerifier(VerifyContext):
    def __init__(self, scheme: SignatureScheme, key: PublicKey) -> None:
        self.transform = scheme
        try:
            self._key = serialization.load_der_public_key(key.spki)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise InvalidKey(f"{scheme}: not a public key cryptography can read ({exc})"
                             ) from None
        _check_type(scheme, self._key, private=False)

    def verify(self, data: bytes, signature: bytes) -> None:
        s, key = self.transform, self._key
        try:
            if s.family == "eddsa":
                key.verify(signature, data)
                return
            algorithm = _HASHES[s.digest]()  # type: ignore[index]
            if s.family == "ecdsa":
                if s.encoding == "raw":
                    n = _coord(key)
                    if len(signature) != 2 * n:
                        raise InvalidSignature(f"{s}: r || s must be {2 * n} bytes")
                    signature = encode_dss_signature(int.from_bytes(signature[:n], "big"),
                                                     int.from_bytes(signature[n:], "big"))
                key.verify(signature, data, ec.ECDSA(algorithm))
                return
            key.verify(signature, data, _padding(s), algorithm)
        except (_CryptoInvalidSignature, ValueError):
            raise InvalidSignature(f"{s}: signature does not verify") from None


def new_signature(transform: SignatureScheme, key) -> Context:
    if isinstance(key, PublicKey):
        return OpenSSLVerifier(transform, key)
    if isinstance(key, (KeyFile, KeyBytes)):
        return OpenSSLSigner(transform, key)
    store = getattr(key, "store", type(key).__name__)
    raise Unsupported(transform.keyword, Reason.KEY_STORE,
                      f"OpenSSL signs with key files and in-memory keys, not {store} keys")
