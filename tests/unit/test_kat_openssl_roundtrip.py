"""The OpenSSL driver: every catalogue transform round-trips through a dispatcher session,
and the input checks the driver contract promises hold (wrong key / IV / alignment, tampering,
bad peer values). Known answers are in test_kat_runner.py; this file checks behaviour."""

from __future__ import annotations

import os

import pytest
from ocfpy.plugins.openssl import OpenSSLDriver

from ocfpy.crypto.catalogue import Primitive, crypto_transforms
from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.errors import (
    AuthenticationError,
    InvalidInput,
    InvalidKey,
    InvalidPublicValue,
    Reason,
    Unsupported,
)
from ocfpy.crypto.registry import DriverStatus, Registry
from ocfpy.crypto.signatures import all_schemes

ALL = crypto_transforms()


def by(primitive: Primitive) -> list[str]:
    return [t.keyword for t in ALL if t.primitive is primitive]


@pytest.fixture(scope="module")
def dispatcher() -> Dispatcher:
    return Dispatcher(Registry.from_drivers([OpenSSLDriver()]), backend="openssl")


def keymat(keyword: str) -> bytes:
    from ocfpy.crypto.catalogue import get

    return os.urandom(get(keyword).keymat_size)


def test_driver_offers_whole_catalogue_and_passes_selftest() -> None:
    record = Registry.from_drivers([OpenSSLDriver()]).get("openssl")
    assert record is not None and record.status is DriverStatus.ACTIVE, record and record.reason
    # the whole catalogue, and every signature scheme (its KATs: selftest_signatures)
    assert sorted(record.admitted) == sorted([t.keyword for t in ALL]
                                             + [s.keyword for s in all_schemes()])
    assert record.quarantined == {}


@pytest.mark.parametrize("keyword", by(Primitive.AEAD))
def test_aead_round_trip_and_tamper(dispatcher: Dispatcher, keyword: str) -> None:
    s = dispatcher.open(keyword, key=keymat(keyword))
    assert s.driver == "openssl"
    iv, pt, aad = os.urandom(8), os.urandom(123), os.urandom(12)
    ct = s.seal(iv, pt, aad)
    assert len(ct) == len(pt) + s.transform.icv_size
    assert s.open(iv, ct, aad) == pt
    assert s.seal(iv, b"", aad) != b"" and s.open(iv, s.seal(iv, b"", aad), aad) == b""
    for bad_ct, bad_aad, bad_iv in (
        (ct[:-1] + bytes([ct[-1] ^ 1]), aad, iv),  # tag
        (bytes([ct[0] ^ 0x80]) + ct[1:], aad, iv),  # ciphertext
        (ct, aad + b"x", iv),  # AAD
        (ct, aad, bytes(8)),  # IV
        (ct[: s.transform.icv_size - 1], aad, iv),  # shorter than a tag
    ):
        with pytest.raises(AuthenticationError):
            s.open(bad_iv, bad_ct, bad_aad)
    assert s.auth_failures == 5
    with pytest.raises(InvalidInput):
        s.seal(os.urandom(12), pt, aad)  # the 8-byte explicit IV, not a full nonce
    items = [(os.urandom(8), os.urandom(n), b"hdr") for n in (0, 1, 1400)]
    sealed = s.seal_batch(items)
    assert sealed == [s.seal(*i) for i in items]
    # Flip a bit of the second item's tag (overwriting a byte could leave it unchanged).
    opened = s.open_batch([(iv, c[:-1] + bytes([c[-1] ^ 1]) if n == 1 else c, a)
                           for n, ((iv, _, a), c) in enumerate(zip(items, sealed, strict=True))])
    assert opened == [items[0][1], None, items[2][1]]


@pytest.mark.parametrize("keyword", by(Primitive.AEAD) + by(Primitive.CIPHER)
                         + by(Primitive.INTEG))
def test_wrong_key_length_is_invalid_key(dispatcher: Dispatcher, keyword: str) -> None:
    for key in (keymat(keyword)[:-1], keymat(keyword) + b"\0", None):
        with pytest.raises(InvalidKey):
            dispatcher.open(keyword, key=key)


@pytest.mark.parametrize("keyword", by(Primitive.CIPHER))
def test_cipher_round_trip(dispatcher: Dispatcher, keyword: str) -> None:
    s = dispatcher.open(keyword, key=keymat(keyword))
    iv = os.urandom(s.transform.iv_size)
    for size in (0, 16, 1408):
        data = os.urandom(size)
        ct = s.encrypt(iv, data)
        assert len(ct) == size and s.decrypt(iv, ct) == data
        if size:
            assert ct != data
    if s.transform.block_size == 16:
        with pytest.raises(InvalidInput):
            s.encrypt(iv, b"x" * 17)
        with pytest.raises(InvalidInput):
            s.decrypt(iv, b"x" * 15)
    else:  # CTR is a stream: any length
        assert s.decrypt(iv, s.encrypt(iv, b"odd")) == b"odd"
    with pytest.raises(InvalidInput):
        s.encrypt(iv + b"\0", bytes(16))


@pytest.mark.parametrize("keyword", by(Primitive.INTEG))
def test_integrity(dispatcher: Dispatcher, keyword: str) -> None:
    s = dispatcher.open(keyword, key=keymat(keyword))
    icv = s.compute(b"packet")
    assert len(icv) == s.transform.icv_size
    s.verify(b"packet", icv)
    with pytest.raises(AuthenticationError):
        s.verify(b"packet", icv[:-1] + bytes([icv[-1] ^ 1]))
    with pytest.raises(AuthenticationError):
        s.verify(b"packet!", icv)
    with pytest.raises(AuthenticationError):
        s.verify(b"packet", icv[:-1])


@pytest.mark.parametrize("keyword", by(Primitive.PRF))
def test_prf_any_key_length(dispatcher: Dispatcher, keyword: str) -> None:
    outs = set()
    for n in (1, 8, 16, 17, 64, 200):
        out = dispatcher.open(keyword, key=os.urandom(n)).prf(b"seed")
        assert len(out) == dispatcher.open(keyword, key=b"k").transform.output_size
        outs.add(out)
    assert len(outs) == 6


@pytest.mark.parametrize("keyword", by(Primitive.KE))
def test_key_exchange_agrees_and_migrates(dispatcher: Dispatcher, keyword: str) -> None:
    a, b = dispatcher.open(keyword), dispatcher.open(keyword)
    pa, pb = a.public_value(), b.public_value()
    assert len(pa) == len(pb) == a.transform.public_size
    secret = a.shared_secret(pb)
    assert secret == b.shared_secret(pa) and len(secret) == a.transform.output_size
    # The private value leaves the driver and recreates the same exchange (migration).
    again = dispatcher.open(keyword, key=a._key)
    assert again.public_value() == pa and again.shared_secret(pb) == secret


@pytest.mark.parametrize("keyword", by(Primitive.KE))
def test_key_exchange_rejects_bad_peer_values(dispatcher: Dispatcher, keyword: str) -> None:
    s = dispatcher.open(keyword)
    size = s.transform.public_size
    bad = [b"", bytes(size - 1), s.public_value() + b"\0"]
    if keyword.startswith("modp"):
        from ocfpy.crypto.modp import MODP_GROUPS

        p = MODP_GROUPS[s.transform.group][2]
        bad += [v.to_bytes(size, "big") for v in (0, 1, p - 1, p, 2**(size * 8) - 1)]
    elif keyword.startswith("ecp"):
        pub = bytearray(s.public_value())
        pub[-1] ^= 1  # y off the curve
        bad += [bytes(pub), bytes(size)]
    else:
        bad += [bytes(size), (1).to_bytes(size, "little")]  # low-order points: all-zero result
    for value in bad:
        with pytest.raises(InvalidPublicValue):
            s.shared_secret(value)


@pytest.mark.parametrize("keyword", by(Primitive.HASH))
def test_hash_sizes(dispatcher: Dispatcher, keyword: str) -> None:
    s = dispatcher.open(keyword)
    assert len(s.digest(b"abc")) == s.transform.output_size
    assert s.digest(b"abc") != s.digest(b"abd")


def test_unknown_transform_is_unsupported() -> None:
    from ocfpy.crypto.catalogue import get

    with pytest.raises(Unsupported) as exc:
        OpenSSLDriver().new_context(get("esn"), None)
    assert exc.value.reason is Reason.NOT_OFFERED
