"""Software backend: OpenSSL through the cryptography package.

Registered as the ``openssl`` entry point of ``ocfpy.drivers``, like any third-party driver.
It implements every transform in the catalogue. MODP groups go through OpenSSL's FFDH where
OpenSSL knows the group by name, and through Python's exact pow otherwise (the 1024-bit group 2,
or every group once cryptography drops its deprecated FFDH).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import cryptography
from cryptography.hazmat.backends.openssl import backend as _openssl

from ocfpy.crypto.catalogue import Primitive, Transform, crypto_transforms
from ocfpy.crypto.catalogue import get as get_transform
from ocfpy.crypto.driver import Context, Driver, DriverKind, Offer
from ocfpy.crypto.errors import Reason, Unsupported
from ocfpy.crypto.signatures import all_schemes

from .aead import new_aead
from .cipher import new_cipher
from .hash import new_hash
from .ke import MODP_AVAILABLE, OPENSSL_NAMED_GROUPS, new_ke
from .mac import new_mac
from .signature import new_signature

log = logging.getLogger(__name__)

__all__ = ["OpenSSLDriver"]

_FACTORIES: dict[Primitive, Callable[[Transform, bytes | None], Context]] = {
    Primitive.AEAD: new_aead,
    Primitive.CIPHER: new_cipher,
    Primitive.INTEG: new_mac,
    Primitive.PRF: new_mac,
    Primitive.KE: new_ke,
    Primitive.HASH: new_hash,
    Primitive.SIGNATURE: new_signature,
}

# What each construction is in OpenSSL terms, for `ocfpy drivers`.
_HOW: dict[str, str] = {
    "aead16": "EVP aes-gcm via AESGCM (one-shot)",
    "aead": "EVP aes-gcm via Cipher(GCM), truncated tag",
    "chacha20poly1305": "EVP chacha20-poly1305 via ChaCha20Poly1305",
    "cbc": "EVP aes-cbc, no padding",
    "ctr": "EVP aes-ctr, RFC 3686 counter block",
    "hmac": "HMAC",
    "xcbc": "AES-XCBC on EVP aes-cbc",
    "cmac": "CMAC",
    "modp": "DH (FFDH)",
    "modp-pow": "Python pow (not an OpenSSL named group)",
    "ecp": "ECDH",
    "x": "EVP X25519/X448",
    "hash": "EVP digest",
}


def _how(t: Transform) -> str:
    if t.primitive is Primitive.AEAD:
        if t.keyword == "chacha20poly1305":
            return _HOW["chacha20poly1305"]
        return _HOW["aead16"] if t.icv_size == 16 else _HOW["aead"]
    if t.primitive is Primitive.CIPHER:
        return _HOW["ctr"] if t.salt_size else _HOW["cbc"]
    if t.primitive in (Primitive.INTEG, Primitive.PRF):
        if t.digest:
            return _HOW["hmac"]
        return _HOW["cmac"] if t.keyword == "prfaescmac" else _HOW["xcbc"]
    if t.primitive is Primitive.KE:
        if t.keyword.startswith("modp"):
            named = MODP_AVAILABLE and t.group in OPENSSL_NAMED_GROUPS
            return _HOW["modp"] if named else _HOW["modp-pow"]
        return _HOW["ecp"] if t.keyword.startswith("ecp") else _HOW["x"]
    return _HOW["hash"]


class OpenSSLDriver(Driver):
    name = "openssl"
    kind = DriverKind.SOFTWARE
    priority = 100  # in-process, AES-NI/VAES where the CPU has them: the software fast path

    def __init__(self) -> None:
        version = _openssl.openssl_version_text()
        self.description = f"{version} via cryptography {cryptography.__version__}"
        self._offers = {
            t.keyword: Offer(t.keyword, f"{_how(t)} ({version})")
            for t in crypto_transforms()
        }
        for s in all_schemes():  # key files and in-memory keys sign; any public key verifies
            self._offers[s.keyword] = Offer(s.keyword, f"EVP {s.description} ({version})")

    def offers(self) -> Iterable[Offer]:
        return list(self._offers.values())

    def new_context(self, transform: Transform, key: bytes | None) -> Context:
        transform = get_transform(transform)
        if transform.keyword not in self._offers:
            raise Unsupported(transform.keyword, Reason.NOT_OFFERED)
        return _FACTORIES[transform.primitive](transform, key)
