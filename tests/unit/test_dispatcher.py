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
