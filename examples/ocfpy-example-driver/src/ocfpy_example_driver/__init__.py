"""An ocfpy driver offering SHA-2 hashes, HMAC-SHA2 integrity and HMAC-SHA2 PRFs via hashlib.

It imports only ocfpy's public driver API (``from ocfpy.crypto import ...``), exactly what
any vendor's package would.
"""

from __future__ import annotations

import hashlib
import hmac

from ocfpy.crypto import (
    Context,
    Driver,
    DriverKind,
    HashContext,
    InvalidKey,
    MacContext,
    Offer,
    PrfContext,
    Primitive,
    Reason,
    Transform,
    Unsupported,
)

__all__ = ["ExampleDriver"]

# catalogue keyword -> hashlib name; the catalogue says which primitive each keyword is.
_OFFERED = {
    "hashsha256": "sha256", "hashsha384": "sha384", "hashsha512": "sha512",
    "sha256": "sha256", "sha384": "sha384", "sha512": "sha512",  # HMAC-SHA2-N/2 integrity
    "prfsha256": "sha256", "prfsha384": "sha384", "prfsha512": "sha512",
}


class ExampleDriver(Driver):
    name = "example"
    kind = DriverKind.SOFTWARE
    description = "hashlib SHA-2, HMAC-SHA2 integrity and PRFs (third-party example)"

    def probe(self) -> None:
        # Nothing to check: hashlib always has SHA-2. A hardware driver would look for its
        # device here and raise ocfpy.crypto.DriverUnavailable("why") if it is missing.
        pass

    def offers(self) -> list[Offer]:
        return [Offer(k, f"hashlib {h} ({hashlib.new(h).name})") for k, h in _OFFERED.items()]

    def new_context(self, transform: Transform, key: bytes | None) -> Context:
        digest = _OFFERED.get(transform.keyword)
        if digest is None:
            raise Unsupported(transform.keyword, Reason.NOT_OFFERED)
        if transform.primitive is Primitive.HASH:
            return _Hash(transform, digest)
        if key is None:
            raise InvalidKey(f"{transform.keyword} needs a key")
        if transform.primitive is Primitive.INTEG:
            if len(key) != transform.key_size:  # RFC 4868 section 2.1.1: key = output size
                raise InvalidKey(f"{transform.keyword} takes a {transform.key_size}-byte key, "
                                 f"not {len(key)}")
            return _Mac(transform, digest, key)
        if transform.primitive is Primitive.PRF:
            return _Prf(transform, digest, key)  # PRF keys may have any length (RFC 2104)
        raise Unsupported(transform.keyword, Reason.NOT_OFFERED)


class _Hash(HashContext):
    def __init__(self, transform: Transform, digest: str):
        self.transform = transform
        self._digest = digest

    def digest(self, data: bytes) -> bytes:
        return hashlib.new(self._digest, data).digest()


class _Mac(MacContext):
    def __init__(self, transform: Transform, digest: str, key: bytes):
        self.transform = transform
        self._template = hmac.new(key, digestmod=digest)  # keyed once, copied per message

    def compute(self, data: bytes) -> bytes:
        h = self._template.copy()
        h.update(data)
        return h.digest()[: self.transform.icv_size]


class _Prf(PrfContext):
    def __init__(self, transform: Transform, digest: str, key: bytes):
        self.transform = transform
        self._template = hmac.new(key, digestmod=digest)

    def prf(self, data: bytes) -> bytes:
        h = self._template.copy()
        h.update(data)
        return h.digest()
