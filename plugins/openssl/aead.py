"""AEAD contexts: AES-GCM (RFC 4106) and ChaCha20-Poly1305 (RFC 7634).

Keying material is cipher key || 4-byte salt; the nonce is salt || the 8-byte explicit IV.
The 16-byte-tag GCM and ChaCha20-Poly1305 paths go straight to cryptography's one-shot AEAD
objects (the per-packet hot path: one length check, one concatenation, one call). GCM with
8- and 12-byte ICVs (RFC 4106 section 8) needs the streaming Cipher API, because the one-shot
AESGCM object only produces and accepts 16-byte tags.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ocfpy.catalogue import Transform
from ocfpy.driver import AeadContext
from ocfpy.errors import AuthenticationError, InvalidInput

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
        return self._encrypt, self._salt

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
    """AES-GCM with an 8- or 12-byte ICV (IKEv2 ENCR IDs 18 and 19)."""

    def __init__(self, transform: Transform, key: bytes | None):
        keymat = exact_key(transform, key)
        self.transform = transform
        split = transform.key_size
        self._aes = algorithms.AES(keymat[:split])
        self._salt = keymat[split:]
        self._icv = transform.icv_size

    def seal(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        if len(iv) != 8:
            raise bad_iv(self.transform, iv)
        try:
            enc = Cipher(self._aes, modes.GCM(self._salt + iv)).encryptor()
            enc.authenticate_additional_data(aad)
            out = enc.update(plaintext) + enc.finalize()
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInput(f"{self.transform}: {exc}") from None
        return out + enc.tag[: self._icv]

    def open(self, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        if len(iv) != 8:
            raise bad_iv(self.transform, iv)
        icv = self._icv
        if len(ciphertext) < icv:
            raise _auth_failed(self.transform)
        body = ciphertext[:-icv]
        tag = ciphertext[-icv:]
        try:
            dec = Cipher(
                self._aes, modes.GCM(self._salt + iv, tag, min_tag_length=icv)
            ).decryptor()
            dec.authenticate_additional_data(aad)
            out = dec.update(body)
            dec.finalize()  # raises InvalidTag; nothing of `out` leaves before this passes
        except InvalidTag:
            raise _auth_failed(self.transform) from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInput(f"{self.transform}: {exc}") from None
        return out


def new_aead(transform: Transform, key: bytes | None) -> AeadContext:
    if transform.keyword == "chacha20poly1305":
        return OneShotAead(transform, key, ChaCha20Poly1305)
    if transform.icv_size == 16:
        return OneShotAead(transform, key, AESGCM)
    return ShortTagGcm(transform, key)
