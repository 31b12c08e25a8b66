"""Differential: every algorithm af_alg offers against OpenSSL (the `cryptography` package,
called directly, not through our openssl plugin), on random keys, nonces and AAD, at the
lengths that exercise block and page edges: 0, 1, 15, 16, 17, 1400, 9000, 65536."""

from __future__ import annotations

import hashlib
import hmac
import os
import random

import pytest
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ocfpy.crypto.catalogue import Primitive, all_transforms, get
from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.errors import AuthenticationError, InvalidInput

LENGTHS = [0, 1, 15, 16, 17, 1400, 9000, 65536]
SEED = int(os.environ.get("OCFPY_TEST_SEED", "0")) or random.SystemRandom().randrange(1 << 32)
rng = random.Random(SEED)


def rand(n: int) -> bytes:
    return rng.randbytes(n)


@pytest.fixture(scope="module")
def dispatcher(registry) -> Dispatcher:
    record = registry.get("af_alg")
    assert record is not None and record.status.value == "active", record and record.reason
    return Dispatcher(registry, backend="af_alg")


def offered(primitive: Primitive) -> list[str]:
    return [t.keyword for t in all_transforms() if t.primitive is primitive]


def _skip_unless_offered(d: Dispatcher, keyword: str) -> None:
    if not d.registry.get("af_alg").serves(get(keyword)):
        pytest.skip(f"af_alg does not offer {keyword} on this kernel")


def ref_aead(keyword: str, key: bytes, salt: bytes, iv: bytes, pt: bytes, aad: bytes,
             icv: int) -> bytes:
    if keyword == "chacha20poly1305":
        return ChaCha20Poly1305(key).encrypt(salt + iv, pt, aad)
    enc = Cipher(algorithms.AES(key), modes.GCM(salt + iv)).encryptor()
    enc.authenticate_additional_data(aad)
    ct = enc.update(pt) + enc.finalize()
    return ct + enc.tag[:icv]


# One test per algorithm looping over the lengths (not one per length): the guest is slow
# and per-test overhead there is about a third of a second.
@pytest.mark.parametrize("keyword", offered(Primitive.AEAD))
def test_aead_matches_openssl(dispatcher, keyword):
    _skip_unless_offered(dispatcher, keyword)
    t = get(keyword)
    for length, aad_len in ((n, a) for n in LENGTHS for a in (0, 8, 12, 32)):
        keymat, iv, pt, aad = rand(t.keymat_size), rand(8), rand(length), rand(aad_len)
        s = dispatcher.open(keyword, key=keymat)
        assert s.driver == "af_alg"
        want = ref_aead(keyword, keymat[:t.key_size], keymat[t.key_size:], iv, pt, aad,
                        t.icv_size)
        got = s.seal(iv, pt, aad)
        assert got == want, f"seed {SEED}: {keyword} len {length} aad {aad_len}"
        assert s.open(iv, got, aad) == pt
        bad = bytearray(got)
        bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        with pytest.raises(AuthenticationError):
            s.open(iv, bytes(bad), aad)
        s.close()


@pytest.mark.parametrize("keyword", offered(Primitive.AEAD))
def test_aead_batches_mark_only_the_bad_item(dispatcher, keyword):
    _skip_unless_offered(dispatcher, keyword)
    t = get(keyword)
    s = dispatcher.open(keyword, key=rand(t.keymat_size))
    items = [(rand(8), rand(n), rand(8)) for n in (0, 64, 1400, 1400)]
    sealed = s.seal_batch(items)
    assert sealed == [s.seal(iv, pt, aad) for iv, pt, aad in items]
    opened = [(iv, ct, aad) for (iv, _, aad), ct in zip(items, sealed, strict=True)]
    opened[2] = (opened[2][0], opened[2][1][:-1] + bytes([opened[2][1][-1] ^ 0x80]),
                 opened[2][2])
    out = s.open_batch(opened)
    assert out == [items[0][1], items[1][1], None, items[3][1]]
    assert s.auth_failures == 1


@pytest.mark.parametrize("keyword", offered(Primitive.CIPHER))
def test_cipher_matches_openssl(dispatcher, keyword):
    _skip_unless_offered(dispatcher, keyword)
    t = get(keyword)
    for length in LENGTHS:
        keymat, iv = rand(t.keymat_size), rand(t.iv_size)
        s = dispatcher.open(keyword, key=keymat)
        data = rand(length)
        if keyword.endswith("ctr"):
            mode = modes.CTR(keymat[t.key_size:] + iv + b"\x00\x00\x00\x01")
        else:
            mode = modes.CBC(iv)
        if length % t.block_size:
            with pytest.raises(InvalidInput):
                s.encrypt(iv, data)
            continue
        enc = Cipher(algorithms.AES(keymat[:t.key_size]), mode).encryptor()
        want = enc.update(data) + enc.finalize()
        got = s.encrypt(iv, data)
        assert got == want, f"seed {SEED}: {keyword} len {length}"
        assert s.decrypt(iv, got) == data


def ref_mac(t, key: bytes, data: bytes) -> bytes:
    if t.keyword in ("aesxcbc", "prfaesxcbc"):
        return xcbc_reference(key, data)
    if t.keyword == "prfaescmac":
        if len(key) != 16:
            c = cmac.CMAC(algorithms.AES(bytes(16)))
            c.update(key)
            key = c.finalize()
        c = cmac.CMAC(algorithms.AES(key))
        c.update(data)
        return c.finalize()
    return hmac.new(key, data, t.digest).digest()


def xcbc_reference(key: bytes, data: bytes) -> bytes:
    """AES-XCBC-MAC (RFC 3566) with the RFC 4434 PRF key rule, on OpenSSL's AES-ECB."""
    def aes(k: bytes, block: bytes) -> bytes:
        e = Cipher(algorithms.AES(k), modes.ECB()).encryptor()
        return e.update(block) + e.finalize()

    def mac(k: bytes, m: bytes) -> bytes:
        k1, k2, k3 = (aes(k, bytes([c]) * 16) for c in (1, 2, 3))
        blocks = [m[i:i + 16] for i in range(0, len(m), 16)] or [b""]
        e = bytes(16)
        for b in blocks[:-1]:
            e = aes(k1, bytes(x ^ y for x, y in zip(e, b, strict=True)))
        last = blocks[-1]
        if len(last) == 16:
            last = bytes(x ^ y for x, y in zip(last, k2, strict=True))
        else:
            last = last + b"\x80" + bytes(15 - len(last))
            last = bytes(x ^ y for x, y in zip(last, k3, strict=True))
        return aes(k1, bytes(x ^ y for x, y in zip(e, last, strict=True)))

    if len(key) < 16:
        key = key + bytes(16 - len(key))
    elif len(key) > 16:
        key = mac(bytes(16), key)
    return mac(key, data)


@pytest.mark.parametrize("keyword", offered(Primitive.INTEG))
def test_integrity_matches_openssl(dispatcher, keyword):
    _skip_unless_offered(dispatcher, keyword)
    t = get(keyword)
    for length in LENGTHS:
        key, data = rand(t.key_size), rand(length)
        s = dispatcher.open(keyword, key=key)
        icv = s.compute(data)
        want = ref_mac(t, key, data)[:t.icv_size]
        assert icv == want, f"seed {SEED}: {keyword} len {length}"
        s.verify(data, icv)
        with pytest.raises(AuthenticationError):
            s.verify(data + b"x", icv)


@pytest.mark.parametrize("keyword", offered(Primitive.PRF))
def test_prf_key_rules_and_output_match_openssl(dispatcher, keyword):
    _skip_unless_offered(dispatcher, keyword)
    t = get(keyword)
    for key_len in (0, 1, 10, 16, 18, 32, 64, 200):
        key = rand(key_len)
        s = dispatcher.open(keyword, key=key)
        for length in LENGTHS:
            data = rand(length)
            assert s.prf(data) == ref_mac(t, key, data), \
                f"seed {SEED}: {keyword} key {key_len} data {length}"
        # prf+ built on it (session code) agrees with a reference prf+
        seed = rand(64)
        want, prev, n = b"", b"", 1
        while len(want) < 100:
            prev = ref_mac(t, key, prev + seed + bytes([n]))
            want += prev
            n += 1
        assert s.prf_plus(seed, 100) == want[:100]


@pytest.mark.parametrize("keyword", offered(Primitive.HASH))
def test_hash_matches_openssl(dispatcher, keyword):
    _skip_unless_offered(dispatcher, keyword)
    t = get(keyword)
    s = dispatcher.open(keyword)
    for length in LENGTHS:
        data = rand(length)
        assert s.digest(data) == hashlib.new(t.digest, data).digest(), f"len {length}"
