"""Contexts over a transport handle: the IKE/ESP conventions on top of kernel algorithms.

Every request is fenced by the device's `Presence`: a request is refused before it starts if
the device is already gone, and its result is thrown away (DriverFailure, so the dispatcher
retries it on another driver) if the device went while it ran. A result is returned only if
the device was present from start to finish, so a vanishing device never yields wrong bytes.
"""

from __future__ import annotations

import threading

from ocfpy.catalogue import Transform
from ocfpy.driver import AeadContext, CipherContext, HashContext, MacContext, PrfContext
from ocfpy.errors import DriverFailure, InvalidInput, InvalidKey

from .transport import AeadHandle, CipherHandle, HashHandle, Transport


class Presence:
    """Whether a device is still there, shared by its driver and every context on it."""

    def __init__(self, label: str):
        self.label = label
        self.reason = ""
        self._gone = threading.Event()
        self._generation = 0  # bumped on every departure; a request compares before/after

    def depart(self, reason: str) -> None:
        self.reason = reason
        self._generation += 1
        self._gone.set()

    @property
    def gone(self) -> bool:
        return self._gone.is_set()

    def enter(self) -> int:
        if self._gone.is_set():
            raise DriverFailure(f"{self.label}: device gone ({self.reason})")
        return self._generation

    def leave(self, ticket: int) -> None:
        if self._gone.is_set() or self._generation != ticket:
            raise DriverFailure(f"{self.label}: device went away during the request "
                                f"({self.reason}); result discarded")


def _key_check(transform: Transform, key: bytes | None) -> bytes:
    if key is None or len(key) != transform.keymat_size:
        got = 0 if key is None else len(key)
        raise InvalidKey(f"{transform.keyword} takes {transform.keymat_size} bytes of keying "
                         f"material, not {got}")
    return key


class _Fenced:
    _handle: CipherHandle | AeadHandle | HashHandle

    def close(self) -> None:
        handle, self._handle = self._handle, None  # type: ignore[assignment]
        if handle is not None:
            handle.close()


class CbcContext(_Fenced, CipherContext):
    """AES-CBC (RFC 3602) on ``cbc(aes)``: 16-byte IV, whole blocks."""

    def __init__(self, transform: Transform, key: bytes | None, transport: Transport,
                 implementation: str, presence: Presence):
        self.transform = transform
        self._presence = presence
        self._handle = transport.cipher(implementation, _key_check(transform, key))

    def _run(self, encrypt: bool, iv: bytes, data: bytes) -> bytes:
        if len(iv) != 16:
            raise InvalidInput(f"{self.transform.keyword} takes a 16-byte IV, not {len(iv)}")
        if len(data) % 16:
            raise InvalidInput(f"{self.transform.keyword}: {len(data)} bytes is not a whole "
                               "number of 16-byte blocks")
        if not data:
            return b""
        ticket = self._presence.enter()
        handle = self._handle
        if handle is None:
            raise DriverFailure(f"{self._presence.label}: context closed")
        out = handle.encrypt(iv, data) if encrypt else handle.decrypt(iv, data)
        self._presence.leave(ticket)
        return out

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        return self._run(True, iv, data)

    def decrypt(self, iv: bytes, data: bytes) -> bytes:
        return self._run(False, iv, data)


class CtrContext(CbcContext):
    """AES-CTR for ESP (RFC 3686) on ``rfc3686(ctr(aes))``: key || 4-byte nonce, 8-byte IV."""

    def _run(self, encrypt: bool, iv: bytes, data: bytes) -> bytes:
        if len(iv) != 8:
            raise InvalidInput(f"{self.transform.keyword} takes an 8-byte IV, not {len(iv)}")
        if not data:
            return b""
        ticket = self._presence.enter()
        handle = self._handle
        if handle is None:
            raise DriverFailure(f"{self._presence.label}: context closed")
        out = handle.encrypt(iv, data) if encrypt else handle.decrypt(iv, data)
        self._presence.leave(ticket)
        return out


class EspAeadContext(_Fenced, AeadContext):
    """``rfc4106(gcm(aes))`` / ``rfc7539esp(chacha20,poly1305)``: the kernel takes key || salt
    and the 8-byte IV, which also travels at the end of the associated data (counted in
    assoclen, not authenticated)."""

    def __init__(self, transform: Transform, key: bytes | None, transport: Transport,
                 implementation: str, presence: Presence):
        self.transform = transform
        self._presence = presence
        self._handle = transport.aead(implementation, _key_check(transform, key),
                                      transform.icv_size)

    def _iv(self, iv: bytes) -> bytes:
        if len(iv) != 8:
            raise InvalidInput(f"{self.transform.keyword} takes an 8-byte IV, not {len(iv)}")
        return iv

    def seal(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        iv = self._iv(iv)
        ticket = self._presence.enter()
        out = self._handle.seal(iv, aad + iv, plaintext)  # type: ignore[union-attr]
        self._presence.leave(ticket)
        return out

    def open(self, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        iv = self._iv(iv)
        ticket = self._presence.enter()
        out = self._handle.open(iv, aad + iv, ciphertext)  # type: ignore[union-attr]
        self._presence.leave(ticket)
        return out


class GcmContext(EspAeadContext):
    """Plain ``gcm(aes)`` (what the CCP offers): the key without the salt, a 12-byte nonce
    salt || IV. The kernel cannot take an empty request, which ESP never makes."""

    def __init__(self, transform: Transform, key: bytes | None, transport: Transport,
                 implementation: str, presence: Presence):
        self.transform = transform
        self._presence = presence
        key = _key_check(transform, key)
        self._salt = key[transform.key_size:]
        self._handle = transport.aead(implementation, key[: transform.key_size],
                                      transform.icv_size)

    def seal(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        nonce = self._salt + self._iv(iv)
        if not plaintext and not aad:
            raise InvalidInput(f"{self.transform.keyword}: the kernel's gcm(aes) takes no "
                               "empty request")
        ticket = self._presence.enter()
        out = self._handle.seal(nonce, aad, plaintext)  # type: ignore[union-attr]
        self._presence.leave(ticket)
        return out

    def open(self, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        nonce = self._salt + self._iv(iv)
        ticket = self._presence.enter()
        out = self._handle.open(nonce, aad, ciphertext)  # type: ignore[union-attr]
        self._presence.leave(ticket)
        return out


class _Digest(_Fenced):
    _presence: Presence

    def _digest(self, data: bytes) -> bytes:
        ticket = self._presence.enter()
        handle = self._handle
        if handle is None:
            raise DriverFailure(f"{self._presence.label}: context closed")
        out = handle.digest(data)  # type: ignore[union-attr]
        self._presence.leave(ticket)
        return out


class MacContextOnHash(_Digest, MacContext):
    """HMAC-SHA1/SHA2 (RFC 2404, RFC 4868) or AES-XCBC-MAC-96 (RFC 3566), truncated."""

    def __init__(self, transform: Transform, key: bytes | None, transport: Transport,
                 implementation: str, presence: Presence):
        self.transform = transform
        self._presence = presence
        self._handle = transport.hash(implementation, _key_check(transform, key))

    def compute(self, data: bytes) -> bytes:
        return self._digest(data)[: self.transform.icv_size]


class HmacPrfContext(_Digest, PrfContext):
    """PRF-HMAC-SHA1/SHA2: keys of any length (RFC 2104 hashes long keys itself)."""

    def __init__(self, transform: Transform, key: bytes | None, transport: Transport,
                 implementation: str, presence: Presence):
        if key is None:
            raise InvalidKey(f"{transform.keyword} needs a key")
        self.transform = transform
        self._presence = presence
        self._handle = transport.hash(implementation, key)

    def prf(self, data: bytes) -> bytes:
        return self._digest(data)


class CmacPrfContext(HmacPrfContext):
    """AES-CMAC-PRF-128 (RFC 4615): a key that is not 16 bytes is first condensed to
    AES-CMAC(0^128, key), on the same device."""

    def __init__(self, transform: Transform, key: bytes | None, transport: Transport,
                 implementation: str, presence: Presence):
        if key is None:
            raise InvalidKey(f"{transform.keyword} needs a key")
        if len(key) != 16:
            condense = transport.hash(implementation, bytes(16))
            try:
                ticket = presence.enter()
                key = condense.digest(key)
                presence.leave(ticket)
            finally:
                condense.close()
        super().__init__(transform, key, transport, implementation, presence)


class HashContextOnHash(_Digest, HashContext):
    def __init__(self, transform: Transform, key: bytes | None, transport: Transport,
                 implementation: str, presence: Presence):
        self.transform = transform
        self._presence = presence
        self._handle = transport.hash(implementation, None)

    def digest(self, data: bytes) -> bytes:
        return self._digest(data)
