"""Unauthenticated ciphers: AES-CBC (RFC 3602) and AES-CTR (RFC 3686).

ESP pads to the block size itself (RFC 4303 section 2.4), so CBC here never pads: input that
is not block aligned is the caller's bug and raises InvalidInput.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ocfpy.catalogue import Transform
from ocfpy.driver import CipherContext
from ocfpy.errors import InvalidInput

from ._util import bad_iv, exact_key

_BLOCK = 16
_CTR_ONE = b"\x00\x00\x00\x01"  # RFC 3686 section 4: the block counter starts at one


class AesCbc(CipherContext):
    def __init__(self, transform: Transform, key: bytes | None):
        self.transform = transform
        self._aes = algorithms.AES(exact_key(transform, key))

    def _check(self, iv: bytes, data: bytes) -> None:
        if len(iv) != _BLOCK:
            raise bad_iv(self.transform, iv)
        if len(data) % _BLOCK:
            raise InvalidInput(
                f"{self.transform}: input must be a multiple of {_BLOCK} bytes (ESP pads it), "
                f"got {len(data)}")

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        self._check(iv, data)
        enc = Cipher(self._aes, modes.CBC(iv)).encryptor()
        return enc.update(data) + enc.finalize()

    def decrypt(self, iv: bytes, data: bytes) -> bytes:
        self._check(iv, data)
        dec = Cipher(self._aes, modes.CBC(iv)).decryptor()
        return dec.update(data) + dec.finalize()


class AesCtr(CipherContext):
    """Keying material is AES key || 4-byte nonce; the counter block is nonce || IV || 1."""

    def __init__(self, transform: Transform, key: bytes | None):
        keymat = exact_key(transform, key)
        self.transform = transform
        self._aes = algorithms.AES(keymat[: transform.key_size])
        self._nonce = keymat[transform.key_size:]

    def _crypt(self, iv: bytes, data: bytes) -> bytes:
        if len(iv) != 8:
            raise bad_iv(self.transform, iv)
        # One packet may not run the 32-bit block counter round (RFC 3686 section 2: at most
        # 2^32 - 1 blocks per packet); OpenSSL would carry into the IV bytes instead.
        if len(data) > (2**32 - 1) * _BLOCK:
            raise InvalidInput(f"{self.transform}: input too long for one RFC 3686 packet")
        ctx = Cipher(self._aes, modes.CTR(self._nonce + iv + _CTR_ONE)).encryptor()
        return ctx.update(data) + ctx.finalize()

    encrypt = _crypt
    decrypt = _crypt


def new_cipher(transform: Transform, key: bytes | None) -> CipherContext:
    if transform.salt_size:
        return AesCtr(transform, key)
    return AesCbc(transform, key)
