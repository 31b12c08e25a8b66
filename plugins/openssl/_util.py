"""Small checks shared by the OpenSSL contexts."""

from __future__ import annotations

from ocfpy.crypto.catalogue import Transform
from ocfpy.crypto.errors import InvalidInput, InvalidKey


def exact_key(transform: Transform, key: bytes | None) -> bytes:
    """The keying material, which must be exactly keymat_size bytes (key || salt)."""
    if key is None:
        raise InvalidKey(f"{transform}: a key of {transform.keymat_size} bytes is required")
    key = bytes(key)
    if len(key) != transform.keymat_size:
        raise InvalidKey(
            f"{transform}: keying material must be {transform.keymat_size} bytes "
            f"({transform.key_size} key + {transform.salt_size} salt), got {len(key)}")
    return key


def any_key(transform: Transform, key: bytes | None) -> bytes:
    """PRF keys: any length is legal (the PRF defines how it uses them)."""
    if key is None:
        raise InvalidKey(f"{transform}: a key is required")
    return bytes(key)


def bad_iv(transform: Transform, iv: bytes) -> InvalidInput:
    return InvalidInput(f"{transform}: IV must be {transform.iv_size} bytes, got {len(iv)}")
