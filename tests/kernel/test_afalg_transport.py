"""ocfpy.kernel.afalg against the real kernel: error translation, driver-name binding, limits."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ocfpy.crypto.devices import proc_crypto
from ocfpy.crypto.errors import AuthenticationError, InvalidInput, Reason, Unsupported
from ocfpy.kernel import afalg


def test_tampered_gcm_is_an_authentication_error_and_the_socket_survives():
    key, nonce = os.urandom(16), os.urandom(12)
    with afalg.AeadOp("gcm(aes)", key, 16) as op:
        ct = op.seal(nonce, b"payload bytes", aad=b"aad")
        for i in (0, len(ct) - 1):  # a ciphertext byte, a tag byte
            bad = bytearray(ct)
            bad[i] ^= 1
            with pytest.raises(AuthenticationError):
                op.open(nonce, bytes(bad), aad=b"aad")
        with pytest.raises(AuthenticationError):
            op.open(nonce, ct, aad=b"other aad")
        assert op.open(nonce, ct, aad=b"aad") == b"payload bytes"
        assert ct == AESGCM(key).encrypt(nonce, b"payload bytes", b"aad")


def test_unknown_algorithm_is_unsupported_not_in_kernel():
    with pytest.raises(Unsupported) as info:
        afalg.HashOp("no-such-hash-ocfpy")
    assert info.value.reason is Reason.NOT_IN_KERNEL


def test_binding_by_exact_driver_name_gives_the_same_cipher():
    key, iv, data = os.urandom(16), os.urandom(16), os.urandom(64)
    with afalg.SkcipherOp("cbc(aes)", key) as by_name:
        impl = by_name.implementation
        ct = by_name.encrypt(iv, data)
    assert impl is not None and impl.driver != "cbc(aes)"
    with afalg.SkcipherOp(impl.driver, key) as by_driver:
        assert by_driver.implementation.driver == impl.driver
        assert by_driver.encrypt(iv, data) == ct
    ref = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    assert ct == ref.update(data) + ref.finalize()


def test_unaligned_cbc_is_invalid_input_and_the_socket_is_reset():
    with afalg.SkcipherOp("cbc(aes)", bytes(16)) as op:
        with pytest.raises(InvalidInput):
            op.encrypt(bytes(16), b"x" * 15)
        assert len(op.encrypt(bytes(16), b"x" * 16)) == 16


def test_request_above_the_socket_buffer_is_refused_not_hung():
    with afalg.AeadOp("gcm(aes)", bytes(16), 16) as op:
        limit = op.max_request
        assert limit >= 65536 + 64  # an ESP packet with any AAD fits
        with pytest.raises(InvalidInput, match="request limit"):
            op.seal(bytes(12), bytes(limit + 1), aad=b"")


def test_hash_of_empty_and_long_messages():
    with afalg.HashOp("sha256") as op:
        assert op.digest(b"") == hashlib.sha256(b"").digest()
        big = os.urandom(1 << 20)
        assert op.digest(big) == hashlib.sha256(big).digest()
        assert op.digest(b"abc") == hashlib.sha256(b"abc").digest()  # state reset between ops


def test_wrong_key_length_is_invalid_key():
    from ocfpy.crypto.errors import InvalidKey

    with pytest.raises(InvalidKey):
        afalg.SkcipherOp("cbc(aes)", bytes(17))


@pytest.mark.virtio
def test_virtio_crypto_by_driver_name_matches_openssl():
    virtio = proc_crypto.by_driver("virtio_crypto_aes_cbc")
    if virtio is None:
        pytest.skip("no virtio_crypto_aes_cbc in /proc/crypto (no virtio-crypto device)")
    key, iv, data = os.urandom(16), os.urandom(16), os.urandom(256)
    with afalg.SkcipherOp("virtio_crypto_aes_cbc", key) as op:
        assert op.implementation.driver == "virtio_crypto_aes_cbc"
        ct = op.encrypt(iv, data)
        assert op.decrypt(iv, ct) == data
    ref = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    assert ct == ref.update(data) + ref.finalize()


def test_empty_aad_and_payload_open_checks_the_tag():
    """A zero-length recv buffer makes the kernel skip the request (tag unchecked) and
    leave it queued; the transport must never do that (found by the NIST KAT, Linux 6.1)."""
    key, nonce = os.urandom(16), os.urandom(12)
    tag = AESGCM(key).encrypt(nonce, b"", b"")
    with afalg.AeadOp("gcm(aes)", key, 16) as op:
        assert op.seal(nonce, b"", aad=b"") == tag
        assert op.open(nonce, tag, aad=b"") == b""
        with pytest.raises(AuthenticationError):
            op.open(nonce, bytes(16), aad=b"")
        assert op.open(nonce, tag, aad=b"") == b""  # nothing left queued by the failure
