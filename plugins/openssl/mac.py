"""Integrity transforms and PRFs: HMAC (RFC 2404, RFC 4868), AES-XCBC (RFC 3566, RFC 4434)
and AES-CMAC-PRF-128 (RFC 4615)."""

from __future__ import annotations

import hmac as _stdlib_hmac
from collections.abc import Callable

from cryptography.hazmat.primitives import cmac, hashes
from cryptography.hazmat.primitives import hmac as _hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ocfpy.crypto.catalogue import Primitive, Transform
from ocfpy.crypto.driver import MacContext, PrfContext
from ocfpy.crypto.errors import AuthenticationError, Reason, Unsupported

from ._util import any_key, exact_key

HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

_BLOCK = 16
_ZERO_KEY = bytes(16)


# -- HMAC --------------------------------------------------------------------------------------
class _Hmac:
    """A keyed HMAC template: each message copies the keyed state instead of re-keying."""

    def __init__(self, key: bytes, digest: str):
        self._template = _hmac.HMAC(key, HASHES[digest]())

    def __call__(self, data: bytes) -> bytes:
        h = self._template.copy()
        h.update(data)
        return h.finalize()


class TruncatedMac(MacContext):
    """An integrity transform: a full MAC truncated to the ICV (HMAC-SHA1-96, HMAC-SHA2 at half
    their output per RFC 4868, AES-XCBC-MAC-96 per RFC 3566)."""

    def __init__(self, transform: Transform, mac: Callable[[bytes], bytes]):
        self.transform = transform
        self._mac = mac
        self._icv = transform.icv_size

    def compute(self, data: bytes) -> bytes:
        return self._mac(data)[: self._icv]

    def verify(self, data: bytes, icv: bytes) -> None:
        if not _stdlib_hmac.compare_digest(self._mac(data)[: self._icv], icv):
            raise AuthenticationError(f"{self.transform}: ICV mismatch")


class HmacPrf(PrfContext):
    """PRF-HMAC-SHA*: any key length (HMAC hashes long keys, pads short ones)."""

    def __init__(self, transform: Transform, key: bytes | None):
        self.transform = transform
        self._mac = _Hmac(any_key(transform, key), transform.digest or "")

    def prf(self, data: bytes) -> bytes:
        return self._mac(data)


# -- AES-XCBC ----------------------------------------------------------------------------------
def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


class _Xcbc:
    """AES-XCBC-MAC (RFC 3566 section 2) for a 16-byte key, full 128-bit output."""

    def __init__(self, key: bytes):
        derive = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        derived = derive.update(b"\x01" * 16 + b"\x02" * 16 + b"\x03" * 16) + derive.finalize()
        self._k1 = algorithms.AES(derived[:16])
        self._k2 = derived[16:32]
        self._k3 = derived[32:]

    def __call__(self, data: bytes) -> bytes:
        n = len(data)
        if n and n % _BLOCK == 0:
            head, last, mask = data[:-_BLOCK], data[-_BLOCK:], self._k2
        else:
            cut = n - n % _BLOCK
            head, last, mask = data[:cut], data[cut:] + b"\x80", self._k3
            last += bytes(_BLOCK - len(last))
        # CBC with a zero IV over M[1..n-1] || (M[n] ^ K2|K3) under K1 is exactly the
        # XCBC chain: E[i] = E_K1(M[i] ^ E[i-1]); the MAC is the last block.
        enc = Cipher(self._k1, modes.CBC(bytes(_BLOCK))).encryptor()
        out = enc.update(head + _xor(last, mask)) + enc.finalize()
        return out[-_BLOCK:]


def _xcbc_prf_key(key: bytes) -> bytes:
    """RFC 4434 section 2: pad short keys with zeros, compress long ones with XCBC(0^128)."""
    if len(key) == 16:
        return key
    if len(key) < 16:
        return key + bytes(16 - len(key))
    return _Xcbc(_ZERO_KEY)(key)


class XcbcPrf(PrfContext):
    def __init__(self, transform: Transform, key: bytes | None):
        self.transform = transform
        self._mac = _Xcbc(_xcbc_prf_key(any_key(transform, key)))

    def prf(self, data: bytes) -> bytes:
        return self._mac(data)


# -- AES-CMAC-PRF-128 --------------------------------------------------------------------------
def _cmac(key: bytes, data: bytes) -> bytes:
    c = cmac.CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


class CmacPrf(PrfContext):
    """RFC 4615 section 3: a key other than 16 bytes becomes AES-CMAC(0^128, key)."""

    def __init__(self, transform: Transform, key: bytes | None):
        self.transform = transform
        key = any_key(transform, key)
        if len(key) != 16:
            key = _cmac(_ZERO_KEY, key)
        self._template = cmac.CMAC(algorithms.AES(key))

    def prf(self, data: bytes) -> bytes:
        c = self._template.copy()
        c.update(data)
        return c.finalize()


def new_mac(transform: Transform, key: bytes | None) -> MacContext | PrfContext:
    if transform.primitive is Primitive.INTEG:
        key = exact_key(transform, key)  # RFC 4868 / RFC 3566: exactly the transform's size
        if transform.digest:
            return TruncatedMac(transform, _Hmac(key, transform.digest))
        return TruncatedMac(transform, _Xcbc(key))
    if transform.digest:
        return HmacPrf(transform, key)
    if transform.keyword == "prfaesxcbc":
        return XcbcPrf(transform, key)
    if transform.keyword == "prfaescmac":
        return CmacPrf(transform, key)
    raise Unsupported(transform.keyword, Reason.NOT_OFFERED)
