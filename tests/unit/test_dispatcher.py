"""Dispatcher policy, forced backends, overrides, quarantine and migration, with real drivers
registered through real entry points (the ocfpy-testdrivers distribution in tests/fixtures,
installed by scripts/setup.sh) next to the OpenSSL backend."""

from __future__ import annotations

import importlib.metadata as md

import pytest

from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.errors import AuthenticationError, BackendUnavailable
from ocfpy.crypto.registry import DriverStatus, Registry

ocfpy_testdrivers = pytest.importorskip(
    "ocfpy_testdrivers", reason="ocfpy-testdrivers not installed: run scripts/setup.sh")

KEY256 = bytes(range(32)) + b"salt"
KEY128 = bytes(range(16)) + b"salt"


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setenv("OCFPY_TESTDRIVERS", "1")
    ocfpy_testdrivers.FAULTS.reset()
    yield Registry.load()
    ocfpy_testdrivers.FAULTS.reset()


def test_testdrivers_come_from_real_entry_points():
    names = {ep.name for ep in md.entry_points(group="ocfpy.drivers")}
    assert {"openssl", "test_flaky", "test_badkat", "test_halfbad"} <= names


def test_admission_states(registry):
    rec = {r.name: r for r in registry.records()}
    assert rec["openssl"].status is DriverStatus.ACTIVE
    assert rec["test_flaky"].status is DriverStatus.ACTIVE
    assert rec["test_badkat"].status is DriverStatus.QUARANTINED
    assert set(rec["test_badkat"].quarantined) == {"aes128gcm16", "aes256gcm16"}
    half = rec["test_halfbad"]
    assert half.status is DriverStatus.ACTIVE
    assert set(half.admitted) == {"aes128gcm16"} and set(half.quarantined) == {"aes256gcm16"}
    assert rec["test_broken_import"].status is DriverStatus.UNAVAILABLE
    assert "import failed" in rec["test_broken_import"].reason
    assert rec["test_broken_ctor"].status is DriverStatus.UNAVAILABLE
    assert "construction failed" in rec["test_broken_ctor"].reason
    assert "always fails" in rec["test_broken_ctor"].reason


def test_test_drivers_are_inert_without_the_switch(monkeypatch):
    monkeypatch.delenv("OCFPY_TESTDRIVERS", raising=False)
    rec = {r.name: r for r in Registry.load().records()}
    assert rec["test_flaky"].status is DriverStatus.UNAVAILABLE
    assert "OCFPY_TESTDRIVERS=1" in rec["test_flaky"].reason
    d = Dispatcher(Registry.load())
    assert d.open("aes256gcm16", KEY256).driver == "openssl"


def test_hardware_first_then_fewest_sessions(registry):
    d = Dispatcher(registry)
    # Only openssl serves CBC; hardware test drivers serve GCM.
    assert d.open("aes256", bytes(32)).driver == "openssl"
    assert d.open("aes256gcm16", KEY256).driver == "test_flaky"  # halfbad's 256 is quarantined
    # Two hardware drivers serve aes128gcm16: ties go to the one with fewer open sessions.
    sessions = [d.open("aes128gcm16", KEY128) for _ in range(4)]
    used = [s.driver for s in sessions]
    assert sorted(used) == ["test_flaky", "test_flaky", "test_halfbad", "test_halfbad"], used


def test_forced_backend(registry):
    d = Dispatcher(registry, backend="openssl")
    assert d.open("aes256gcm16", KEY256).driver == "openssl"


def test_forced_backend_that_cannot_serve_names_backend_algorithm_and_alternatives(registry):
    d = Dispatcher(registry, backend="test_flaky")
    with pytest.raises(BackendUnavailable) as err:
        d.open("aes256", bytes(32))
    msg = str(err.value)
    assert "test_flaky" in msg and "aes256" in msg and "openssl" in msg
    assert err.value.alternatives == ["openssl"]


def test_quarantined_algorithm_is_named_as_the_reason(registry):
    d = Dispatcher(registry, backend="test_halfbad")
    with pytest.raises(BackendUnavailable, match="quarantined"):
        d.open("aes256gcm16", KEY256)


def test_forced_backend_fallback_is_counted(registry):
    d = Dispatcher(registry, backend="test_flaky", strict=False)
    s = d.open("aes256", bytes(32))
    assert s.driver == "openssl"
    assert d.fallbacks == 1


def test_unknown_or_unavailable_backend_is_refused_at_once(registry):
    with pytest.raises(BackendUnavailable, match="no such driver"):
        Dispatcher(registry, backend="nonesuch")
    with pytest.raises(BackendUnavailable, match="quarantined"):
        Dispatcher(registry, backend="test_badkat")


def test_per_algorithm_override(registry):
    d = Dispatcher(registry, overrides={"aes256gcm16": "openssl"})
    assert d.open("aes256gcm16", KEY256).driver == "openssl"
    assert d.open("aes128gcm16", KEY128).driver.startswith("test_")
    d.set_handler("aes256gcm16", None)
    assert d.open("aes256gcm16", KEY256).driver == "test_flaky"


def _stream(session, n):
    out = []
    for i in range(n):
        iv = i.to_bytes(8, "big")
        pt = (i % 251).to_bytes(1, "big") * (1 + i % 300)
        out.append(session.seal(iv, pt, b"hdr" + iv))
    return out


def test_stream_across_a_driver_failure_is_byte_identical(registry):
    reference = _stream(Dispatcher(registry, backend="openssl").open("aes256gcm16", KEY256), 10_000)

    ocfpy_testdrivers.FAULTS.reset(fail_after=5_000)
    d = Dispatcher(registry)
    s = d.open("aes256gcm16", KEY256)
    assert s.driver == "test_flaky"
    got = _stream(s, 10_000)
    assert got == reference
    assert s.driver == "openssl"
    assert s.migrations == 1 and s.errors == 1 and s.ops == 10_000
    assert ocfpy_testdrivers.FAULTS.served == 5_000
    stats = d.stats()
    assert stats["openssl"]["migrations"] == 1


def test_open_and_batches_migrate_too(registry):
    # aes256gcm16: test_halfbad has it quarantined, so the fallback is openssl
    sealer = Dispatcher(registry, backend="openssl").open("aes256gcm16", KEY256)
    items = [(i.to_bytes(8, "big"), bytes([i]) * 100, b"a") for i in range(200)]
    sealed = sealer.seal_batch(items)
    ocfpy_testdrivers.FAULTS.reset(fail_after=50)
    s = Dispatcher(registry, backend="test_flaky", strict=False).open("aes256gcm16", KEY256)
    opened = [s.open(iv, ct, aad) for (iv, _, aad), ct in zip(items[:100], sealed[:100], strict=True)]
    opened += s.open_batch([(iv, ct, aad) for (iv, _, aad), ct in zip(items[100:], sealed[100:], strict=True)])
    assert opened == [pt for _, pt, _ in items]
    assert s.driver == "openssl" and s.migrations == 1


def test_authentication_failure_is_not_a_migration(registry):
    s = Dispatcher(registry).open("aes256gcm16", KEY256)
    ct = s.seal(bytes(8), b"payload", b"aad")
    with pytest.raises(AuthenticationError):
        s.open(bytes(8), ct[:-1] + bytes([ct[-1] ^ 1]), b"aad")
    assert s.migrations == 0 and s.auth_failures == 1 and s.driver == "test_flaky"


def test_removed_driver_moves_its_sessions_at_once(registry):
    d = Dispatcher(registry)
    sessions = [d.open("aes256gcm16", KEY256) for _ in range(3)]
    before = [s.seal(bytes(8), b"x" * 64, b"") for s in sessions]
    registry.remove("test_flaky", "device unplugged")
    assert [s.driver for s in sessions] == ["openssl"] * 3
    assert all(s.migrations == 1 for s in sessions)
    assert [s.seal(bytes(8), b"x" * 64, b"") for s in sessions] == before
    assert d.open("aes256gcm16", KEY256).driver == "openssl"
    assert registry.get("test_flaky").status is DriverStatus.GONE


def test_strict_forced_backend_does_not_migrate_silently(registry):
    ocfpy_testdrivers.FAULTS.reset(fail_after=1)
    s = Dispatcher(registry, backend="test_flaky").open("aes256gcm16", KEY256)
    s.seal(bytes(8), b"x", b"")
    from ocfpy.crypto.errors import DriverFailure

    with pytest.raises(DriverFailure, match="no other driver may take it"):
        s.seal(bytes(8), b"x", b"")


def test_a_request_moves_on_until_a_driver_serves_it(registry):
    # test_flaky and test_halfbad both serve aes128gcm16 and share one fault switch:
    # once it trips, the request fails on both hardware drivers and lands on openssl.
    reference = Dispatcher(registry, backend="openssl").open("aes128gcm16", KEY128).seal(
        bytes(8), b"payload", b"aad")
    ocfpy_testdrivers.FAULTS.reset(fail_after=0)
    s = Dispatcher(registry).open("aes128gcm16", KEY128)
    assert s.driver in ("test_flaky", "test_halfbad")
    assert s.seal(bytes(8), b"payload", b"aad") == reference
    assert s.driver == "openssl" and s.migrations == 2 and s.errors == 2


# -- the one retry path, for every kind of operation ------------------------------------------
# test_every (hardware, so preferred) serves AES-CBC, HMAC, PRF, hash and X25519 on OpenSSL's
# own contexts behind the shared fault switch; openssl is the only other driver for them.
KEYS = {"aes256": bytes(range(32)), "sha256": bytes(range(32)), "prfsha256": b"prf key",
        "hashsha256": None}


@pytest.fixture
def every(monkeypatch, registry):
    monkeypatch.setenv("OCFPY_TESTDRIVERS_EVERY", "1")
    loaded = Registry.load()
    assert loaded.get("test_every").status is DriverStatus.ACTIVE, loaded.get("test_every").reason
    ocfpy_testdrivers.FAULTS.reset()
    return loaded


def _reference(registry, keyword):
    return Dispatcher(registry, backend="openssl").open(keyword, KEYS[keyword])


SINGLE = [  # (keyword, operation, bytes it counts)
    ("aes256", lambda s: s.encrypt(bytes(16), bytes(range(64))), 64),
    ("aes256", lambda s: s.decrypt(bytes(16), bytes(range(64))), 64),
    ("sha256", lambda s: s.compute(b"m" * 100), 100),
    ("prfsha256", lambda s: s.prf(b"d" * 40), 40),
    ("hashsha256", lambda s: s.digest(b"h" * 50), 50),
]


@pytest.mark.parametrize("keyword,op,nbytes", SINGLE, ids=[
    "encrypt", "decrypt", "compute", "prf", "digest"])
def test_a_single_op_that_fails_moves_and_is_served(every, keyword, op, nbytes):
    expected = op(_reference(every, keyword))
    s = Dispatcher(every).open(keyword, KEYS[keyword])
    assert s.driver == "test_every"
    assert op(s) == expected  # served by test_every
    ocfpy_testdrivers.FAULTS.reset(fail_after=0)
    assert op(s) == expected  # failed there, served by openssl
    assert s.driver == "openssl"
    assert s.counters() | {"time_ns": 0} == {
        "ops": 2, "bytes": 2 * nbytes, "errors": 1, "auth_failures": 0, "migrations": 1,
        "batches": 0, "time_ns": 0}


def test_mac_verify_moves_and_a_bad_icv_does_not(every):
    icv = _reference(every, "sha256").compute(b"m" * 100)
    s = Dispatcher(every).open("sha256", KEYS["sha256"])
    ocfpy_testdrivers.FAULTS.reset(fail_after=0)
    s.verify(b"m" * 100, icv)
    assert s.driver == "openssl" and s.migrations == 1 and s.errors == 1
    from ocfpy.crypto.errors import AuthenticationError

    with pytest.raises(AuthenticationError):
        s.verify(b"m" * 100, bytes(len(icv)))
    assert s.migrations == 1 and s.auth_failures == 1 and s.ops == 2


BATCH = [  # (keyword, batch operation, items, bytes it counts)
    ("aes256", "encrypt_batch", [(bytes([i]) * 16, bytes([i]) * 32) for i in range(8)], 8 * 32),
    ("aes256", "decrypt_batch", [(bytes([i]) * 16, bytes([i]) * 32) for i in range(8)], 8 * 32),
    ("sha256", "compute_batch", [bytes([i]) * (10 + i) for i in range(8)], sum(range(10, 18))),
]


@pytest.mark.parametrize("keyword,method,items,nbytes", BATCH, ids=[b[1] for b in BATCH])
def test_a_batch_that_fails_half_way_is_run_again_whole_and_counted_once(
        every, keyword, method, items, nbytes):
    expected = getattr(_reference(every, keyword), method)(items)
    s = Dispatcher(every).open(keyword, KEYS[keyword])
    ocfpy_testdrivers.FAULTS.reset(fail_after=3)  # the 4th item of 8 fails on test_every
    assert getattr(s, method)(items) == expected
    assert ocfpy_testdrivers.FAULTS.served == 3
    assert s.driver == "openssl"
    c = s.counters()
    assert (c["ops"], c["bytes"], c["batches"], c["errors"], c["migrations"]) == (
        len(items), nbytes, 1, 1, 1)
    assert c["time_ns"] > 0


def test_aead_seal_batch_that_fails_half_way_moves(registry):
    items = [(i.to_bytes(8, "big"), bytes([i]) * 100, b"a") for i in range(8)]
    expected = Dispatcher(registry, backend="openssl").open("aes256gcm16", KEY256).seal_batch(items)
    s = Dispatcher(registry).open("aes256gcm16", KEY256)
    assert s.driver == "test_flaky"
    ocfpy_testdrivers.FAULTS.reset(fail_after=3)
    assert s.seal_batch(items) == expected
    assert s.driver == "openssl"
    assert (s.ops, s.bytes, s.batches, s.errors, s.migrations) == (8, 800, 1, 1, 1)


def test_open_batch_counts_bad_tags_and_does_not_move_for_them(registry):
    s = Dispatcher(registry).open("aes256gcm16", KEY256)
    items = [(i.to_bytes(8, "big"), bytes([i]) * 10, b"a") for i in range(4)]
    sealed = s.seal_batch(items)
    sealed[1] = sealed[1][:-1] + bytes([sealed[1][-1] ^ 1])
    out = s.open_batch([(iv, ct, aad) for (iv, _, aad), ct in zip(items, sealed, strict=True)])
    assert out == [items[0][1], None, items[2][1], items[3][1]]
    assert s.driver == "test_flaky" and s.migrations == 0 and s.auth_failures == 1
    assert s.batches == 2 and s.ops == 8


def test_key_exchange_moves_after_its_public_value_was_sent(every):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    peer = X25519PrivateKey.generate()
    peer_public = peer.public_key().public_bytes_raw()
    s = Dispatcher(every).open("x25519")
    assert s.driver == "test_every"
    ours = s.public_value()
    ocfpy_testdrivers.FAULTS.reset(fail_after=0)
    secret = s.shared_secret(peer_public)
    assert s.driver == "openssl" and s.migrations == 1 and s.errors == 1
    assert secret == peer.exchange(X25519PublicKey.from_public_bytes(ours))
    assert s.ops == 2 and s.bytes == len(peer_public)


def test_strict_forced_backend_names_the_driver_on_a_control_plane_op(every):
    s = Dispatcher(every, backend="test_every").open("hashsha256")
    ocfpy_testdrivers.FAULTS.reset(fail_after=0)
    from ocfpy.crypto.errors import DriverFailure

    with pytest.raises(DriverFailure, match="on test_every failed.*no other driver may take it"):
        s.digest(b"x")
    assert s.driver == "test_every" and s.errors == 1 and s.ops == 0
