"""AEAD contexts: AES-GCM (RFC 4106) and ChaCha20-Poly1305 (RFC 7634).

Keying material is cipher key || 4-byte salt; the nonce is salt || the 8-byte explicit IV.
The 16-byte-tag GCM and ChaCha20-Poly1305 paths go straight to cryptography's one-shot AEAD
objects (the per-packet hot path: one length check, one concatenation, one call). GCM with
8- and 12-byte ICVs (RFC 4106 section 8) also uses the one-shot AESGCM object, which only
produces and accepts 16-byte tags: see ShortTagGcm for how.
"""

from __future__ import annotations

from collections.abc import Sequence
from hmac import compare_digest
from operator import itemgetter

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ocfpy.crypto.catalogue import Transform
from ocfpy.crypto.driver import AeadContext
from ocfpy.crypto.errors import AuthenticationError, InvalidInput

from ._util import bad_iv, exact_key

_first = itemgetter(0)


def _auth_failed(transform: Transform) -> AuthenticationError:
    return AuthenticationError(f"{transform}: ICV did not verify")


class OneShotAead(AeadContext):
    """AES-GCM-16 and ChaCha20-Poly1305 on cryptography's one-shot AEAD objects."""

    def __init__(self, transform: Transform, key: bytes | None, factory: type):
        keymat = exact_key(transform, key)
        self.transform = transform
        split = transform.key_size
        aead = factory(keymat[:split])
        self._salt = keymat[split:]
        self._encrypt = aead.encrypt
        self._decrypt = aead.decrypt

    def one_shot(self):
        return self._encrypt, self._decrypt, self._salt

    def seal(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        # The IV check matters: AESGCM accepts any nonce of 8 to 128 bytes, so a short IV
        # would otherwise silently produce a different (non-RFC 4106) nonce.
        if len(iv) != 8:
            raise bad_iv(self.transform, iv)
        try:
            return self._encrypt(self._salt + iv, plaintext, aad)
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInput(f"{self.transform}: {exc}") from None

    def open(self, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        if len(iv) != 8:
            raise bad_iv(self.transform, iv)
        try:
            return self._decrypt(self._salt + iv, ciphertext, aad)
        except InvalidTag:
            raise _auth_failed(self.transform) from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInput(f"{self.transform}: {exc}") from None

    # Batches keep everything in locals and check every IV in one C-level pass (map/set),
    # so the per-packet cost stays at the direct call's: at 1400 bytes a Python-level check
    # per item is a visible share of it.
    def _check_ivs(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> None:
        if items and set(map(len, map(_first, items))) != {8}:
            bad = next(iv for iv, _, _ in items if len(iv) != 8)
            raise bad_iv(self.transform, bad)

    def seal_batch(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bytes]:
        self._check_ivs(items)
        encrypt = self._encrypt
        salt = self._salt
        try:
            return [encrypt(salt + iv, plaintext, aad) for iv, plaintext, aad in items]
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInput(f"{self.transform}: {exc}") from None

    def open_batch(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bytes | None]:
        self._check_ivs(items)
        decrypt = self._decrypt
        salt = self._salt
        out: list[bytes | None] = []
        append = out.append
        for iv, ciphertext, aad in items:
            try:
                append(decrypt(salt + iv, ciphertext, aad))
            except InvalidTag:
                append(None)
        return out


class ShortTagGcm(AeadContext):
    """AES-GCM with an 8- or 12-byte ICV (IKEv2 ENCR IDs 18 and 19), on the one-shot AESGCM.

    A truncated GCM tag is the leftmost bytes of the full tag (NIST SP 800-38D section 5.2.1.2),
    so sealing is AESGCM's output shortened. AESGCM only verifies full tags, so opening is
    done in two one-shot calls (about 3x faster than a streaming Cipher(GCM) per packet):
    GCM's encryption is data XOR a keystream that depends only on key and nonce, so
    encrypting the received ciphertext yields the candidate plaintext; encrypting that
    candidate with the AAD reproduces the sender's ciphertext and its full tag, whose
    leftmost ICV bytes are compared in constant time. Nothing leaves before that compare.
    """

    def __init__(self, transform: Transform, key: bytes | None):
        keymat = exact_key(transform, key)
        self.transform = transform
        split = transform.key_size
        self._encrypt = AESGCM(keymat[:split]).encrypt
        self._salt = keymat[split:]
        self._icv = transform.icv_size
        self._cut = 16 - transform.icv_size

    def seal(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        if len(iv) != 8:
            raise bad_iv(self.transform, iv)
        try:
            return self._encrypt(self._salt + iv, plaintext, aad)[: -self._cut]
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInput(f"{self.transform}: {exc}") from None

    def open(self, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        if len(iv) != 8:
            raise bad_iv(self.transform, iv)
        icv = self._icv
        size = len(ciphertext) - icv
        if size < 0:
            raise _auth_failed(self.transform)
        nonce = self._salt + iv
        try:
            candidate = self._encrypt(nonce, ciphertext[:size], None)[:-16]
            tag = self._encrypt(nonce, candidate, aad)[size: size + icv]
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInput(f"{self.transform}: {exc}") from None
        if not compare_digest(tag, ciphertext[size:]):
            raise _auth_failed(self.transform)
        return candidate


def new_aead(transform: Transform, key: bytes | None) -> AeadContext:
    if transform.keyword == "chacha20poly1305":
        return OneShotAead(transform, key, ChaCha20Poly1305)
    if transform.icv_size == 16:
        return OneShotAead(transform, key, AESGCM)
    return ShortTagGcm(transform, key)
