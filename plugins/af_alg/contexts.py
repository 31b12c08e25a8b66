"""Contexts of the af_alg driver: each holds its own bound + accepted AF_ALG socket pair.

Keys are checked here, before the kernel sees them, so a wrong length is an InvalidKey that
names the transform rather than an EINVAL from setsockopt.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from ocfpy.crypto.catalogue import Transform
from ocfpy.crypto.driver import (
    AeadContext,
    CipherContext,
    HashContext,
    KeyExchangeContext,
    MacContext,
    PrfContext,
)
from ocfpy.crypto.errors import AuthenticationError, InvalidInput, InvalidKey, InvalidPublicValue
from ocfpy.crypto.modp import MODP_GROUPS
from ocfpy.kernel import afalg, keyctl


def _check_key(t: Transform, key: bytes | None) -> bytes:
    if key is None or len(key) != t.keymat_size:
        got = "none" if key is None else f"{len(key)} bytes"
        raise InvalidKey(f"{t.keyword} needs {t.keymat_size} bytes of keying material "
                         f"({t.key_size}-byte key + {t.salt_size}-byte salt), got {got}")
    return key


def _check_iv(t: Transform, iv: bytes) -> None:
    if len(iv) != t.iv_size:
        raise InvalidInput(f"{t.keyword} takes a {t.iv_size}-byte IV, got {len(iv)} bytes")


class _Closing:
    _ops: tuple[afalg._Op, ...] = ()
    _aio: afalg.AioQueue | None = None

    def close(self) -> None:
        if self._aio is not None:
            self._aio.close()
        for op in self._ops:
            op.close()


class _Async(_Closing):
    """Asynchronous submission through kernel AIO (afalg.AioQueue): one operation socket per
    request in flight, so that an asynchronous kernel implementation holds up to max_depth
    requests at once; the synchronous methods keep their own socket."""

    asynchronous = True
    max_depth = 32
    _op: afalg.AeadOp | afalg.SkcipherOp

    def _request(self, ticket: int, method: str, args: tuple):  # pragma: no cover - abstract
        raise NotImplementedError

    def submit(self, requests) -> None:
        q = self._aio
        if q is None:
            q = self._aio = afalg.AioQueue(self._op, self.max_depth)
        built = []
        for ticket, method, args in requests:
            try:
                request = self._request(ticket, method, args)
            except (InvalidInput, AuthenticationError) as exc:  # this request's own fault
                q.reject(ticket, exc)
                continue
            if isinstance(request, bytes):  # known without the kernel
                q.reject(ticket, None, request)
            else:
                built.append(request)
        q.submit(built)

    def collect(self, wait: bool = True):
        q = self._aio
        return q.collect(wait) if q is not None else []


class GcmContext(_Async, AeadContext):
    """AES-GCM on ``gcm(aes)``: nonce = salt || IV (RFC 4106 section 4), any AAD length."""

    def __init__(self, t: Transform, key: bytes | None):
        self.transform = t
        key = _check_key(t, key)
        self._salt = key[t.key_size:]
        self._op = afalg.AeadOp("gcm(aes)", key[:t.key_size], t.icv_size)
        self._ops = (self._op,)

    def seal(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        if len(iv) != 8:
            _check_iv(self.transform, iv)
        return self._op.seal(self._salt + iv, plaintext, aad=aad)

    def open(self, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        if len(iv) != 8:
            _check_iv(self.transform, iv)
        return self._op.open(self._salt + iv, ciphertext, aad=aad)

    def _request(self, ticket: int, method: str, args: tuple):
        iv, payload, aad = args
        if len(iv) != 8:
            _check_iv(self.transform, iv)
        return afalg.AioQueue.aead_request(self._op, ticket, method == "seal", self._salt + iv,
                                           payload, aad)

    def seal_batch(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bytes]:
        # The kernel takes one request per send/recv pair on an operation socket, so a
        # batch is a tight loop; what we save is the per-item Python dispatch.
        seal, salt = self._op.seal, self._salt
        out = []
        for iv, pt, aad in items:
            if len(iv) != 8:
                _check_iv(self.transform, iv)
            out.append(seal(salt + iv, pt, aad=aad))
        return out

    def open_batch(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bytes | None]:
        open_, salt = self._op.open, self._salt
        out: list[bytes | None] = []
        for iv, ct, aad in items:
            if len(iv) != 8:
                _check_iv(self.transform, iv)
            try:
                out.append(open_(salt + iv, ct, aad=aad))
            except AuthenticationError:
                out.append(None)
        return out


class ChaChaEspContext(_Async, AeadContext):
    """ChaCha20-Poly1305 on ``rfc7539esp(chacha20,poly1305)`` (key || salt; RFC 7634)."""

    def __init__(self, t: Transform, key: bytes | None):
        self.transform = t
        key = _check_key(t, key)
        self._op = afalg.AeadOp("rfc7539esp(chacha20,poly1305)", key, t.icv_size,
                                iv_in_aad=True)
        self._ops = (self._op,)

    def seal(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        _check_iv(self.transform, iv)
        return self._op.seal(iv, plaintext, aad=aad)

    def open(self, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        _check_iv(self.transform, iv)
        return self._op.open(iv, ciphertext, aad=aad)

    def _request(self, ticket: int, method: str, args: tuple):
        iv, payload, aad = args
        _check_iv(self.transform, iv)
        return afalg.AioQueue.aead_request(self._op, ticket, method == "seal", iv, payload, aad)


class SkcipherContext(_Async, CipherContext):
    """AES-CBC (``cbc(aes)``) or AES-CTR (``rfc3686(ctr(aes))``, key || 4-byte nonce)."""

    def __init__(self, t: Transform, key: bytes | None, kernel_name: str):
        self.transform = t
        key = _check_key(t, key)
        self._op = afalg.SkcipherOp(kernel_name, key)
        self._ops = (self._op,)
        self._block = t.block_size

    def _check(self, iv: bytes, data: bytes) -> None:
        _check_iv(self.transform, iv)
        if len(data) % self._block:
            raise InvalidInput(f"{self.transform.keyword}: data must be a multiple of "
                               f"{self._block} bytes, got {len(data)}")

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        self._check(iv, data)
        return self._op.encrypt(iv, data) if data else b""

    def decrypt(self, iv: bytes, data: bytes) -> bytes:
        self._check(iv, data)
        return self._op.decrypt(iv, data) if data else b""

    def _request(self, ticket: int, method: str, args: tuple):
        iv, data = args
        self._check(iv, data)
        if not data:
            return b""
        return afalg.AioQueue.skcipher_request(self._op, ticket, method == "encrypt", iv, data)


class MacOpContext(_Closing, MacContext):
    """HMAC-SHA1/SHA2 or AES-XCBC-MAC, truncated to the transform's ICV size."""

    def __init__(self, t: Transform, key: bytes | None, kernel_name: str):
        self.transform = t
        key = _check_key(t, key)
        self._op = afalg.HashOp(kernel_name, key)
        self._ops = (self._op,)
        self._icv = t.icv_size

    def compute(self, data: bytes) -> bytes:
        return self._op.digest(data)[:self._icv]

    def compute_batch(self, items: Sequence[bytes]) -> list[bytes]:
        digest, icv = self._op.digest, self._icv
        return [digest(d)[:icv] for d in items]


class HmacPrfContext(_Closing, PrfContext):
    """PRF-HMAC-SHA1/SHA2: any key length (the kernel's hmac hashes long keys itself)."""

    def __init__(self, t: Transform, key: bytes | None, kernel_name: str):
        self.transform = t
        if key is None:
            raise InvalidKey(f"{t.keyword} needs a key")
        self._op = afalg.HashOp(kernel_name, key)
        self._ops = (self._op,)

    def prf(self, data: bytes) -> bytes:
        return self._op.digest(data)


class AesPrfContext(_Closing, PrfContext):
    """AES-XCBC-PRF-128 (RFC 4434) or AES-CMAC-PRF-128 (RFC 4615) on the kernel's MAC.

    The key rules are ours: a 16-byte key is used as is; otherwise the key is first
    MACed under the all-zero key (both RFCs), except that XCBC pads a shorter key with
    zeros (RFC 4434 section 2).
    """

    def __init__(self, t: Transform, key: bytes | None, kernel_name: str):
        self.transform = t
        if key is None:
            raise InvalidKey(f"{t.keyword} needs a key")
        if len(key) != 16:
            if kernel_name == "xcbc(aes)" and len(key) < 16:
                key = key + bytes(16 - len(key))
            else:
                with afalg.HashOp(kernel_name, bytes(16)) as zero:
                    key = zero.digest(key)
        self._op = afalg.HashOp(kernel_name, key)
        self._ops = (self._op,)

    def prf(self, data: bytes) -> bytes:
        return self._op.digest(data)


class DigestContext(_Closing, HashContext):
    def __init__(self, t: Transform, kernel_name: str):
        self.transform = t
        self._op = afalg.HashOp(kernel_name)
        self._ops = (self._op,)

    def digest(self, data: bytes) -> bytes:
        return self._op.digest(data)


class ModpContext(KeyExchangeContext):
    """MODP Diffie-Hellman (RFC 3526 groups) with both exponentiations done by the kernel.

    The private value stays in this process (the kernel keys holding it live only for
    one call), so private_value() can hand it to the dispatcher for migration.
    """

    def __init__(self, t: Transform, key: bytes | None):
        self.transform = t
        self._size = t.public_size
        self._p = MODP_GROUPS[t.group or 0][2]
        self._prime = self._p.to_bytes(self._size, "big")
        if key is None:
            x = secrets.randbelow(self._p - 3) + 2  # 2 <= x <= p - 2
        else:
            x = int.from_bytes(key, "big")
            if not 1 < x < self._p - 1:
                raise InvalidKey(f"{t.keyword}: private value out of range (1 < x < p-1)")
        self._x = x.to_bytes(self._size, "big")
        self._public: bytes | None = None

    def public_value(self) -> bytes:
        if self._public is None:
            self._public = keyctl.dh_compute(self._x, self._prime, b"\x02")
        return self._public

    def shared_secret(self, peer_public: bytes) -> bytes:
        # RFC 6989 section 2.2: for these safe-prime groups, 1 < y < p-1 is the whole check
        # (it excludes 0, 1 and p-1, the only elements of small order).
        if len(peer_public) != self._size:
            raise InvalidPublicValue(f"{self.transform.keyword}: public value must be "
                                     f"{self._size} bytes, got {len(peer_public)}")
        y = int.from_bytes(peer_public, "big")
        if not 1 < y < self._p - 1:
            raise InvalidPublicValue(f"{self.transform.keyword}: public value out of range "
                                     "(RFC 6989: 1 < y < p-1)")
        secret = keyctl.dh_compute(self._x, self._prime, peer_public)
        if int.from_bytes(secret, "big") <= 1:
            raise InvalidPublicValue(f"{self.transform.keyword}: degenerate shared secret")
        return secret

    def private_value(self) -> bytes | None:
        return self._x
