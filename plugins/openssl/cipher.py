"""Unauthenticated ciphers: AES-CBC (RFC 3602) and AES-CTR (RFC 3686).

ESP pads to the block size itself (RFC 4303 section 2.4), so CBC here never pads: input that
is not block aligned is the caller's bug and raises InvalidInput.

Why these are not one fresh ``Cipher(AES, mode).encryptor()`` per packet: in cryptography 50
that costs about 2-3 us of set-up per call (algorithm fetch and key schedule), more than the
cipher work for a 1400-byte packet. So:
  * CBC keeps one long-lived CBC encryptor and decryptor and steers their chaining state to
    each packet's IV (see AesCbc);
  * CTR runs on the one-shot AESGCM object, whose keystream is exactly RFC 3686's
    (see AesCtr).
Both are checked against NIST CAVP and RFC 3686 vectors like everything else, and against
fresh per-call contexts in tests/unit/test_properties.py.
"""

from __future__ import annotations

import threading

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ocfpy.crypto.catalogue import Transform
from ocfpy.crypto.driver import CipherContext
from ocfpy.crypto.errors import InvalidInput

from ._util import bad_iv, exact_key

_BLOCK = 16
_ZERO = bytes(_BLOCK)


def _xor(a: bytes, b: bytes) -> bytes:
    n = len(a)
    return (int.from_bytes(a, "big") ^ int.from_bytes(b[:n], "big")).to_bytes(n, "big")


class AesCbc(CipherContext):
    """AES-CBC on persistent OpenSSL contexts.

    A CBC context's only state between update() calls is its chaining block: the last
    ciphertext block it produced (encrypt) or consumed (decrypt), which we always know.
    To start a packet with IV v:
      decrypt: feed v as one extra leading ciphertext block; its output is discarded and the
               chaining block becomes v.
      encrypt: feed one leading block X = D_K(v) XOR s (s = current chaining block); its
               output is E_K(X XOR s) = v, discarded, and the chaining block becomes v.
    The state is per context and shared, so calls are serialised by a lock.
    """

    def __init__(self, transform: Transform, key: bytes | None):
        self.transform = transform
        aes = algorithms.AES(exact_key(transform, key))
        self._enc = Cipher(aes, modes.CBC(_ZERO)).encryptor()
        self._dec = Cipher(aes, modes.CBC(_ZERO)).decryptor()
        self._ecb_dec = Cipher(aes, modes.ECB()).decryptor()
        self._enc_state = _ZERO
        self._lock = threading.Lock()

    def _check(self, iv: bytes, data: bytes) -> None:
        if len(iv) != _BLOCK:
            raise bad_iv(self.transform, iv)
        if len(data) % _BLOCK:
            raise InvalidInput(
                f"{self.transform}: input must be a multiple of {_BLOCK} bytes (ESP pads it), "
                f"got {len(data)}")

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        self._check(iv, data)
        if not data:
            return b""
        with self._lock:
            steer = _xor(self._ecb_dec.update(bytes(iv)), self._enc_state)
            out = self._enc.update(steer + data)
            self._enc_state = out[-_BLOCK:]
        return out[_BLOCK:]

    def decrypt(self, iv: bytes, data: bytes) -> bytes:
        self._check(iv, data)
        if not data:
            return b""
        with self._lock:
            out = self._dec.update(bytes(iv) + data)
        return out[_BLOCK:]


class AesCtr(CipherContext):
    """AES-CTR per RFC 3686: key || 4-byte nonce; counter blocks nonce || IV || 1, 2, ...

    GCM with a 96-bit nonce N encrypts with the counter blocks N||2, N||3, ... (inc32, as in
    RFC 3686), and with no AAD and no plaintext its tag is E_K(N||1) (GHASH of nothing is 0).
    With N = nonce || IV that is RFC 3686's keystream exactly: block 1 from an empty GCM
    encryption's tag, blocks 2.. from GCM's ciphertext of the rest (the GCM tag is dropped).
    """

    # RFC 3686 section 2: at most 2^32 - 1 blocks per packet (the 32-bit counter).
    MAX_BYTES = (2**32 - 1) * _BLOCK

    def __init__(self, transform: Transform, key: bytes | None):
        keymat = exact_key(transform, key)
        self.transform = transform
        self._encrypt = AESGCM(keymat[: transform.key_size]).encrypt
        self._nonce = keymat[transform.key_size:]

    def _crypt(self, iv: bytes, data: bytes) -> bytes:
        if len(iv) != 8:
            raise bad_iv(self.transform, iv)
        if not data:
            return b""
        if len(data) > self.MAX_BYTES:
            raise InvalidInput(f"{self.transform}: input too long for one RFC 3686 packet")
        counter = self._nonce + iv
        head = _xor(data[:_BLOCK], self._encrypt(counter, b"", None))
        if len(data) <= _BLOCK:
            return head
        return head + self._encrypt(counter, data[_BLOCK:], None)[:-_BLOCK]

    encrypt = _crypt
    decrypt = _crypt


def new_cipher(transform: Transform, key: bytes | None) -> CipherContext:
    if transform.salt_size:
        return AesCtr(transform, key)
    return AesCbc(transform, key)
