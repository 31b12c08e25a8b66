"""A driver with two realistic bugs that ocfpy's known-answer tests must catch."""

from __future__ import annotations

import hashlib
import hmac

from ocfpy.crypto import (
    Context,
    Driver,
    DriverKind,
    HashContext,
    MacContext,
    Offer,
    Reason,
    Transform,
    Unsupported,
)

__all__ = ["BrokenDriver"]


class BrokenDriver(Driver):
    name = "broken"
    kind = DriverKind.HARDWARE  # claims the best class, so admission is all that keeps it out
    description = "deliberately wrong SHA-256 and HMAC-SHA-256 (test fixture)"

    def offers(self) -> list[Offer]:
        return [Offer("hashsha256", "off-by-one hashlib"), Offer("sha256", "HMAC truncated to 96")]

    def new_context(self, transform: Transform, key: bytes | None) -> Context:
        if transform.keyword == "hashsha256":
            return _OffByOneHash(transform)
        if transform.keyword == "sha256" and key is not None:
            return _ShortMac(transform, key)
        raise Unsupported(transform.keyword, Reason.NOT_OFFERED)


class _OffByOneHash(HashContext):
    def __init__(self, transform: Transform):
        self.transform = transform

    def digest(self, data: bytes) -> bytes:
        return hashlib.sha256(data[:-1]).digest()  # bug: drops the last byte


class _ShortMac(MacContext):
    def __init__(self, transform: Transform, key: bytes):
        self.transform = transform
        self._key = key

    def compute(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, "sha256").digest()[:12]  # bug: SHA1-96 truncation
