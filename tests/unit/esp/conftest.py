"""Fixtures for the ESP unit tests.

The ESP code gets its crypto from the dispatcher, so these tests use the real registry (the
OpenSSL plugin) whenever it serves the ESP algorithms. Until that plugin is in the tree, a
small driver over the same `cryptography` calls stands in, so the wire-format tests below
still check against scapy and the RFC vectors (it is a driver, not a mock: it computes).
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ocfpy.crypto.catalogue import Primitive, Transform
from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.driver import AeadContext, CipherContext, Driver, MacContext, Offer
from ocfpy.crypto.errors import AuthenticationError, Reason, Unsupported
from ocfpy.crypto.registry import Registry

ESP_ALGORITHMS = ["aes128gcm16", "aes256gcm16", "chacha20poly1305", "aes128", "aes256",
                  "sha1", "sha256", "sha384", "sha512"]


def esp_dispatcher() -> Dispatcher:
    registry = Registry.load()
    d = Dispatcher(registry)
    if all(d.can_serve(a) for a in ESP_ALGORITHMS):
        return d
    return Dispatcher(Registry.from_drivers([StandInDriver()], run_selftests=False))



class _Aead(AeadContext):
    def __init__(self, transform: Transform, key: bytes):
        self.transform = transform
        k, self._salt = key[:transform.key_size], key[transform.key_size:]
        self._aead = (ChaCha20Poly1305(k) if transform.keyword == "chacha20poly1305"
                      else AESGCM(k))
        self._icv = transform.icv_size

    def seal(self, iv, plaintext, aad):
        return self._aead.encrypt(self._salt + iv, plaintext, aad)[
            :len(plaintext) + self._icv]

    def open(self, iv, ciphertext, aad):
        try:
            return self._aead.decrypt(self._salt + iv, ciphertext, aad)
        except InvalidTag:
            raise AuthenticationError("bad tag") from None


class _Cbc(CipherContext):
    def __init__(self, transform: Transform, key: bytes):
        self.transform = transform
        self._key = key

    def encrypt(self, iv, data):
        e = Cipher(algorithms.AES(self._key), modes.CBC(iv)).encryptor()
        return e.update(data) + e.finalize()

    def decrypt(self, iv, data):
        d = Cipher(algorithms.AES(self._key), modes.CBC(iv)).decryptor()
        return d.update(data) + d.finalize()


class _Hmac(MacContext):
    def __init__(self, transform: Transform, key: bytes):
        self.transform = transform
        self._key = key
        self._digest = getattr(hashlib, transform.digest)

    def compute(self, data):
        return hmac.digest(self._key, data, self._digest)[:self.transform.icv_size]


class StandInDriver(Driver):
    name = "stand-in"
    description = "cryptography, for ESP tests until the OpenSSL plugin lands"

    def offers(self):
        return [Offer(k) for k in ("aes128gcm16", "aes192gcm16", "aes256gcm16",
                                   "chacha20poly1305", "aes128", "aes192", "aes256", "sha1",
                                   "sha256", "sha384", "sha512")]

    def new_context(self, transform, key):
        if transform.primitive is Primitive.AEAD:
            return _Aead(transform, key)
        if transform.primitive is Primitive.CIPHER and transform.keyword in (
                "aes128", "aes192", "aes256"):
            return _Cbc(transform, key)
        if transform.primitive is Primitive.INTEG and transform.digest:
            return _Hmac(transform, key)
        raise Unsupported(transform.keyword, Reason.NOT_OFFERED)


@pytest.fixture(scope="session")
def dispatcher() -> Dispatcher:
    return esp_dispatcher()


@pytest.fixture(params=["compiled", "python"])
def csum(request, monkeypatch):
    """Each test runs with the C helper (when built) and with the pure-Python sum."""
    from ocfpy.esp import offload
    from ocfpy.esp.gso import ones_complement_sum

    if request.param == "python":
        monkeypatch.setattr(offload, "sum16", ones_complement_sum)
    elif offload.sum16 is ones_complement_sum:
        pytest.skip("the compiled helper ocfpy.esp._csum is not built here")
    return request.param
