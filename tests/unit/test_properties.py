"""Properties that hold for any input (hypothesis), on every host driver that offers the
algorithm: open(seal(x)) == x, any change to ciphertext, tag, AAD or IV is refused, CBC/CTR
round-trip, and prf+ behaves as RFC 7296 section 2.13 says it must."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocfpy.crypto.catalogue import Primitive, crypto_transforms
from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.errors import AuthenticationError, InvalidInput
from ocfpy.crypto.registry import Registry

# A modest budget: the CI machine is shared and these run in the unit lane.
PROFILE = settings(max_examples=40, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])

AEADS = [t for t in crypto_transforms() if t.primitive is Primitive.AEAD]
CIPHERS = [t for t in crypto_transforms() if t.primitive is Primitive.CIPHER]
PRFS = [t for t in crypto_transforms() if t.primitive is Primitive.PRF]


@cache
def registry() -> Registry:
    return Registry.load()


def _pairs(transforms):
    """(driver, transform) for every active driver offering it; a skip marker otherwise."""
    out = []
    for t in transforms:
        serving = [r.name for r in registry().active() if r.serves(t)]
        if not serving:
            out.append(pytest.param(None, t, id=f"none-{t.keyword}",
                                    marks=pytest.mark.skip(reason=f"no active driver offers {t}")))
        out += [pytest.param(name, t, id=f"{name}-{t.keyword}") for name in serving]
    return out


def _session(driver: str, transform, key: bytes):
    return Dispatcher(registry(), backend=driver).open(transform, key=key)


blobs = st.binary(min_size=0, max_size=300)


@pytest.mark.parametrize(("driver", "transform"), _pairs(AEADS))
@PROFILE
@given(data=st.data(), plaintext=blobs, aad=st.binary(max_size=40))
def test_aead_open_inverts_seal_and_refuses_any_change(driver, transform, data, plaintext, aad):
    key = data.draw(st.binary(min_size=transform.keymat_size, max_size=transform.keymat_size))
    iv = data.draw(st.binary(min_size=8, max_size=8))
    s = _session(driver, transform, key)
    sealed = s.seal(iv, plaintext, aad)
    assert len(sealed) == len(plaintext) + transform.icv_size
    assert s.open(iv, sealed, aad) == plaintext
    assert s.open_batch([(iv, sealed, aad)]) == [plaintext]

    # Flip one bit anywhere in ciphertext || tag.
    pos = data.draw(st.integers(0, len(sealed) - 1))
    bit = data.draw(st.integers(0, 7))
    tampered = bytearray(sealed)
    tampered[pos] ^= 1 << bit
    with pytest.raises(AuthenticationError):
        s.open(iv, bytes(tampered), aad)
    assert s.open_batch([(iv, bytes(tampered), aad)]) == [None]

    # Any other AAD, any other IV, a truncated message.
    other_aad = data.draw(st.binary(max_size=40).filter(lambda a: a != aad))
    with pytest.raises(AuthenticationError):
        s.open(iv, sealed, other_aad)
    other_iv = data.draw(st.binary(min_size=8, max_size=8).filter(lambda v: v != iv))
    with pytest.raises(AuthenticationError):
        s.open(other_iv, sealed, aad)
    cut = data.draw(st.integers(1, len(sealed)))
    with pytest.raises((AuthenticationError, InvalidInput)):
        s.open(iv, sealed[:-cut], aad)


@pytest.mark.parametrize(("driver", "transform"), _pairs(CIPHERS))
@PROFILE
@given(data=st.data(), blocks=st.integers(0, 20), tail=st.integers(0, 15))
def test_cipher_round_trip(driver, transform, data, blocks, tail):
    key = data.draw(st.binary(min_size=transform.keymat_size, max_size=transform.keymat_size))
    iv = data.draw(st.binary(min_size=transform.iv_size, max_size=transform.iv_size))
    stream = transform.block_size == 1
    size = blocks * 16 + (tail if stream else 0)
    plaintext = data.draw(st.binary(min_size=size, max_size=size))
    s = _session(driver, transform, key)
    ciphertext = s.encrypt(iv, plaintext)
    assert len(ciphertext) == len(plaintext)
    assert s.decrypt(iv, ciphertext) == plaintext
    if not stream and tail:
        with pytest.raises(InvalidInput):
            s.encrypt(iv, plaintext + bytes(tail))
    if stream and plaintext:
        # CTR is its own inverse and a prefix of the keystream does not depend on the length.
        assert s.encrypt(iv, ciphertext) == plaintext
        assert s.encrypt(iv, plaintext[:-1]) == ciphertext[:-1]


@pytest.mark.parametrize(("driver", "transform"), _pairs(PRFS))
@PROFILE
@given(key=st.binary(min_size=1, max_size=80), seed=st.binary(max_size=64),
       n=st.integers(0, 600), m=st.integers(0, 600))
def test_prf_plus_length_and_prefix(driver, transform, key, seed, n, m):
    s = _session(driver, transform, key)
    size = transform.output_size
    a, b = s.prf_plus(seed, n), s.prf_plus(seed, m)
    assert len(a) == n and len(b) == m
    short, long_ = sorted((a, b), key=len)
    assert long_[: len(short)] == short  # a shorter prf+ is a prefix of a longer one
    if n >= size:  # T1 = prf(K, S | 0x01)
        assert a[:size] == s.prf(seed + b"\x01")
    if n >= 2 * size:  # T2 = prf(K, T1 | S | 0x02)
        assert a[size: 2 * size] == s.prf(a[:size] + seed + b"\x02")


@pytest.mark.parametrize(("driver", "transform"), _pairs(PRFS))
def test_prf_plus_refuses_more_than_255_blocks(driver, transform):
    s = _session(driver, transform, b"k" * 16)
    assert len(s.prf_plus(b"seed", 255 * transform.output_size)) == 255 * transform.output_size
    with pytest.raises(InvalidInput):
        s.prf_plus(b"seed", 255 * transform.output_size + 1)


def _reference(transform, key: bytes, iv: bytes, data: bytes, decrypt: bool) -> bytes:
    """One fresh streaming cryptography context per call: the textbook construction."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    if transform.salt_size:  # RFC 3686 counter block
        aes = algorithms.AES(key[: transform.key_size])
        mode = modes.CTR(key[transform.key_size:] + iv + b"\x00\x00\x00\x01")
    else:
        aes, mode = algorithms.AES(key), modes.CBC(iv)
    ctx = Cipher(aes, mode).decryptor() if decrypt else Cipher(aes, mode).encryptor()
    return ctx.update(data) + ctx.finalize()


@pytest.mark.parametrize(("driver", "transform"), _pairs(CIPHERS))
@PROFILE
@given(data=st.data(), calls=st.lists(st.tuples(st.booleans(), st.integers(0, 8),
                                                st.integers(0, 15)), min_size=1, max_size=12))
def test_cipher_sequence_matches_fresh_contexts(driver, transform, data, calls):
    """Drivers may keep state between calls (the OpenSSL CBC context does): any sequence of
    encrypts and decrypts with changing IVs must equal fresh per-call contexts."""
    key = data.draw(st.binary(min_size=transform.keymat_size, max_size=transform.keymat_size))
    s = _session(driver, transform, key)
    for decrypt, blocks, tail in calls:
        iv = data.draw(st.binary(min_size=transform.iv_size, max_size=transform.iv_size))
        size = blocks * 16 + (tail if transform.block_size == 1 else 0)
        payload = data.draw(st.binary(min_size=size, max_size=size))
        got = s.decrypt(iv, payload) if decrypt else s.encrypt(iv, payload)
        assert got == _reference(transform, key, iv, payload, decrypt)


@pytest.mark.parametrize(("driver", "transform"), _pairs(CIPHERS))
def test_cipher_context_shared_by_threads(driver, transform):
    import os
    import threading

    key = os.urandom(transform.keymat_size)
    s = _session(driver, transform, key)
    jobs = [(os.urandom(transform.iv_size), os.urandom(16 * (1 + n % 20))) for n in range(400)]
    want = [_reference(transform, key, iv, d, False) for iv, d in jobs]
    got: list = [None] * len(jobs)

    def work(start: int) -> None:
        for n in range(start, len(jobs), 4):
            got[n] = s.encrypt(*jobs[n])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert got == want
