"""Plain hashes (SHA-1, SHA-2), used by IKE for NAT detection and signature hashes."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes

from ocfpy.crypto.catalogue import Transform
from ocfpy.crypto.driver import HashContext

from .mac import HASHES


class Hash(HashContext):
    def __init__(self, transform: Transform, key: bytes | None):
        self.transform = transform
        self._algorithm = HASHES[transform.digest or ""]()

    def digest(self, data: bytes) -> bytes:
        h = hashes.Hash(self._algorithm)
        h.update(data)
        return h.finalize()


def new_hash(transform: Transform, key: bytes | None) -> HashContext:
    return Hash(transform, key)
