"""ocfpy.crypto.selftest: admission KATs catch wrong answers, raising contexts and missing vectors,
and are cheap enough to run at every start."""

from __future__ import annotations

import time

from ocfpy.plugins.openssl import OpenSSLDriver

from ocfpy.crypto import selftest
from ocfpy.crypto.catalogue import Transform, crypto_transforms
from ocfpy.crypto.driver import Context, Driver, Offer
from ocfpy.crypto.registry import DriverStatus, Registry

KEYWORDS = [t.keyword for t in crypto_transforms()]


class Wrapped(Driver):
    """The OpenSSL driver with one transform's context replaced or broken."""

    name = "wrapped"

    def __init__(self, patch: dict[str, type] | None = None, only: list[str] | None = None):
        self._inner = OpenSSLDriver()
        self._patch = patch or {}
        self._only = only

    def offers(self):
        return [Offer(k) for k in (self._only or KEYWORDS)]

    def new_context(self, transform: Transform, key: bytes | None) -> Context:
        ctx = self._inner.new_context(transform, key)
        wrapper = self._patch.get(transform.keyword)
        return wrapper(ctx) if wrapper else ctx


class FlipsSealOutput:
    def __init__(self, ctx):
        self._ctx = ctx

    def seal(self, iv, pt, aad):
        out = bytearray(self._ctx.seal(iv, pt, aad))
        out[0] ^= 1
        return bytes(out)

    def open(self, iv, ct, aad):
        return self._ctx.open(iv, ct, aad)


class AcceptsAnyTag(FlipsSealOutput):
    def seal(self, iv, pt, aad):
        return self._ctx.seal(iv, pt, aad)

    def open(self, iv, ct, aad):
        try:
            return self._ctx.open(iv, ct, aad)
        except Exception:
            return b""


class NoPeerCheck:
    def __init__(self, ctx):
        self._ctx = ctx

    def public_value(self):
        return self._ctx.public_value()

    def shared_secret(self, peer):
        try:
            return self._ctx.shared_secret(peer)
        except Exception:
            return b"\x00" * 32


class Raises:
    def __init__(self, ctx):
        pass

    def digest(self, data):
        raise RuntimeError("device on fire")


def test_openssl_passes_every_kat_quickly() -> None:
    driver = OpenSSLDriver()
    assert selftest.run(driver, KEYWORDS) == {}  # also loads the JSON and warms OpenSSL
    # CPU time, best of three: the machine is shared, and wall time measures the neighbours.
    spent = []
    for _ in range(3):
        start = time.process_time()
        selftest.run(driver, KEYWORDS)
        spent.append(time.process_time() - start)
    assert min(spent) < 0.3, f"openssl self-test took {min(spent):.3f} s of CPU (budget 0.3 s)"


def test_wrong_output_tampering_missed_and_raising_contexts_are_failures() -> None:
    driver = Wrapped({
        "aes128gcm16": FlipsSealOutput,
        "aes256gcm8": AcceptsAnyTag,
        "x25519": NoPeerCheck,
        "hashsha256": Raises,
    })
    failures = selftest.run(driver, KEYWORDS)
    assert set(failures) == {"aes128gcm16", "aes256gcm8", "x25519", "hashsha256"}
    assert "seal" in failures["aes128gcm16"]
    assert "tampered" in failures["aes256gcm8"]
    assert "invalid peer value accepted" in failures["x25519"]
    assert "RuntimeError: device on fire" in failures["hashsha256"]
    # Each reason names the published vector that caught it.
    assert "gcmEncryptExtIV128.rsp" in failures["aes128gcm16"]


def test_registry_quarantines_only_the_failing_algorithms() -> None:
    record = Registry.from_drivers([Wrapped({"sha256": Raises})]).get("wrapped")
    assert record is not None and record.status is DriverStatus.ACTIVE
    assert set(record.quarantined) == {"sha256"}
    assert "sha256" not in record.admitted and "aes128gcm16" in record.admitted


def test_algorithm_without_vector_is_not_admitted(monkeypatch) -> None:
    table = dict(selftest.vectors())
    del table["x448"]
    monkeypatch.setattr(selftest, "vectors", lambda: table)
    assert selftest.run(OpenSSLDriver(), ["x448", "x25519"]) == {
        "x448": "no known-answer vector for this algorithm"}


def test_unreadable_vectors_admit_nothing(monkeypatch) -> None:
    def broken():
        raise OSError("selftest_vectors/aead.json: No such file")
    monkeypatch.setattr(selftest, "vectors", broken)
    failures = selftest.run(OpenSSLDriver(), ["aes128gcm16", "x25519"])
    assert set(failures) == {"aes128gcm16", "x25519"}
    assert "No such file" in failures["x25519"]
