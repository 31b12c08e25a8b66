"""A driver that computes correctly until told to fail, for migration tests.

See README.md for the switches. Failures are all-or-nothing: an operation either returns the
right bytes or raises DriverFailure, never anything in between (what a real device driver must
guarantee too, so that the dispatcher's retry on another driver is safe).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ocfpy.crypto import (
    AeadContext,
    AuthenticationError,
    CipherContext,
    Context,
    Driver,
    DriverFailure,
    DriverKind,
    DriverUnavailable,
    InvalidInput,
    InvalidKey,
    MacContext,
    Offer,
    Primitive,
    Reason,
    Transform,
    Unsupported,
)

__all__ = ["FaultyDriver"]

_OFFERED = ("aes128gcm16", "aes256gcm16", "aes128", "aes256", "sha256")
_KINDS = {"software": DriverKind.SOFTWARE, "accelerated": DriverKind.ACCELERATED,
          "hardware": DriverKind.HARDWARE}


class FaultyDriver(Driver):
    name = "faulty"
    description = "cryptography-backed, fails on demand (OCFPY_FAULTY_*; test fixture)"

    def __init__(self) -> None:
        env = os.environ
        self.kind = _KINDS.get(env.get("OCFPY_FAULTY_KIND", "accelerated").lower(),
                               DriverKind.ACCELERATED)
        raw = env.get("OCFPY_FAULTY_FAIL_AFTER", "")
        self.fail_after: int | None = int(raw) if raw.strip() else None
        self.mode = env.get("OCFPY_FAULTY_MODE", "fail")
        # Inert unless asked for: installed next to real drivers (scripts/setup.sh installs every
        # example into the venv), it must never take a user's sessions by accident.
        self.enabled = bool(raw.strip()) or env.get("OCFPY_FAULTY_ENABLE") == "1"
        self.ops = 0
        self._armed = False  # counting starts at admission (watch), after the KATs
        self._failed = False
        self._on_gone: Callable[[str], None] | None = None
        self._lock = threading.Lock()

    def probe(self) -> None:
        if not self.enabled:
            raise DriverUnavailable("inert test fixture: set OCFPY_FAULTY_FAIL_AFTER=N (or "
                                    "OCFPY_FAULTY_ENABLE=1) to enable it")

    def offers(self) -> list[Offer]:
        return [Offer(k, "cryptography (fails on demand)") for k in _OFFERED]

    def watch(self, on_gone: Callable[[str], None]) -> None:
        self._on_gone = on_gone
        self._armed = True

    def new_context(self, transform: Transform, key: bytes | None) -> Context:
        if self._failed:
            raise DriverFailure(f"{self.name}: failed after {self.fail_after} operations")
        if transform.keyword not in _OFFERED:
            raise Unsupported(transform.keyword, Reason.NOT_OFFERED)
        if key is None or len(key) != transform.keymat_size:
            raise InvalidKey(f"{transform.keyword} takes {transform.keymat_size} bytes of keying "
                             f"material, not {0 if key is None else len(key)}")
        cls = {Primitive.AEAD: _Gcm, Primitive.CIPHER: _Cbc, Primitive.INTEG: _Hmac}
        return cls[transform.primitive](self, transform, key)

    def _charge(self, n: int) -> None:
        """Count n operations; raise DriverFailure (before any output exists) past the limit."""
        gone = False
        with self._lock:
            if not self._failed and self._armed and self.fail_after is not None:
                if self.ops + n > self.fail_after:
                    self._failed = True
                    gone = self.mode == "gone"
            if not self._failed:
                if self._armed:
                    self.ops += n
                return
        if gone and self._on_gone is not None:
            self._on_gone(f"simulated unplug after {self.fail_after} operations")
        raise DriverFailure(f"{self.name}: failed after {self.fail_after} operations")


class _Gcm(AeadContext):
    def __init__(self, driver: FaultyDriver, transform: Transform, key: bytes):
        self.transform = transform
        self._driver = driver
        self._aead = AESGCM(key[:-4])
        self._salt = key[-4:]

    def _nonce(self, iv: bytes) -> bytes:
        if len(iv) != 8:
            raise InvalidInput(f"{self.transform.keyword} takes an 8-byte IV, not {len(iv)}")
        return self._salt + iv

    def seal(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        nonce = self._nonce(iv)
        self._driver._charge(1)
        return self._aead.encrypt(nonce, plaintext, aad)

    def open(self, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        nonce = self._nonce(iv)
        self._driver._charge(1)
        try:
            return self._aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise AuthenticationError(f"{self.transform.keyword}: bad ICV") from None

    def seal_batch(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bytes]:
        nonces = [self._nonce(iv) for iv, _, _ in items]
        self._driver._charge(len(items))
        enc = self._aead.encrypt
        return [enc(n, pt, aad) for n, (_, pt, aad) in zip(nonces, items, strict=True)]

    def open_batch(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bytes | None]:
        nonces = [self._nonce(iv) for iv, _, _ in items]
        self._driver._charge(len(items))
        out: list[bytes | None] = []
        for n, (_, ct, aad) in zip(nonces, items, strict=True):
            try:
                out.append(self._aead.decrypt(n, ct, aad))
            except InvalidTag:
                out.append(None)
        return out


class _Cbc(CipherContext):
    def __init__(self, driver: FaultyDriver, transform: Transform, key: bytes):
        self.transform = transform
        self._driver = driver
        self._key = key

    def _run(self, encrypt: bool, iv: bytes, data: bytes) -> bytes:
        if len(iv) != 16 or len(data) % 16:
            raise InvalidInput("AES-CBC takes a 16-byte IV and whole 16-byte blocks")
        self._driver._charge(1)
        c = Cipher(algorithms.AES(self._key), modes.CBC(iv))
        op = c.encryptor() if encrypt else c.decryptor()
        return op.update(data) + op.finalize()

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        return self._run(True, iv, data)

    def decrypt(self, iv: bytes, data: bytes) -> bytes:
        return self._run(False, iv, data)


class _Hmac(MacContext):
    def __init__(self, driver: FaultyDriver, transform: Transform, key: bytes):
        self.transform = transform
        self._driver = driver
        self._key = key

    def compute(self, data: bytes) -> bytes:
        self._driver._charge(1)
        h = hmac.HMAC(self._key, hashes.SHA256())
        h.update(data)
        return h.finalize()[: self.transform.icv_size]
