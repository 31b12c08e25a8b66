"""Key exchange: MODP groups (RFC 2409, RFC 3526), ECP groups 19-21 (RFC 5903) and
X25519 / X448 (RFC 7748, RFC 8031), with the peer checks of RFC 6989 and RFC 7748 section 6.

Wire forms (what public_value() returns and shared_secret() takes):
  MODP: g^x big-endian, left-padded to the prime's length (RFC 7296 section 3.4).
  ECP:  x || y, each left-padded to the field size, no 0x04 prefix (RFC 5903 section 7);
        the shared secret is the x coordinate only.
  X25519 / X448: the raw 32 / 56 bytes (RFC 8031 section 2).
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import warnings
from collections.abc import Iterator

from cryptography.hazmat.primitives.asymmetric import ec, x448, x25519

from ocfpy.crypto.catalogue import Transform
from ocfpy.crypto.driver import KeyExchangeContext
from ocfpy.crypto.errors import InvalidKey, InvalidPublicValue
from ocfpy.crypto.modp import MODP_GROUPS

try:  # cryptography deprecated finite-field DH (46+) and announced its removal
    from cryptography.hazmat.primitives.asymmetric import dh
except ImportError:  # pragma: no cover - a future cryptography without FFDH
    dh = None  # type: ignore[assignment]

try:
    from cryptography.utils import CryptographyDeprecationWarning
except ImportError:  # pragma: no cover
    CryptographyDeprecationWarning = DeprecationWarning  # type: ignore[misc,assignment]

MODP_AVAILABLE = dh is not None

_CURVES: dict[int, type[ec.EllipticCurve]] = {
    19: ec.SECP256R1,
    20: ec.SECP384R1,
    21: ec.SECP521R1,
}


@contextlib.contextmanager
def _ffdh_quiet() -> Iterator[None]:
    # IKE still negotiates MODP groups with real peers; the deprecation is for cryptography's
    # users in general, not news to an IKE daemon's log on every exchange.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        yield


# Groups OpenSSL knows by name (RFC 3526 "modp_1536" .. "modp_8192"): it trusts their
# parameters. The 1024-bit Oakley group 2 is not among them, and cryptography then re-checks
# the prime (a primality test) on every key it builds from numbers: 25-80 ms per peer value
# (measured). For that group the exponentiation is done with Python's pow, which is exact and
# takes about 0.3 ms with a 256-bit exponent.
OPENSSL_NAMED_GROUPS = frozenset({5, 14, 15, 16, 17, 18})
_POW_EXPONENT_BITS = 256  # at least twice the group's security strength (RFC 3526 section 8)


@functools.cache
def _modp_parameters(group: int):
    _bits, _offset, prime = MODP_GROUPS[group]
    with _ffdh_quiet():
        numbers = dh.DHParameterNumbers(prime, 2)
        return numbers, numbers.parameters()


class ModpExchange(KeyExchangeContext):
    def __init__(self, transform: Transform, key: bytes | None):
        self.transform = transform
        self._group = group = transform.group or 0
        self._p = MODP_GROUPS[group][2]
        self._size = transform.public_size
        self._openssl = MODP_AVAILABLE and group in OPENSSL_NAMED_GROUPS
        self._private = None  # the OpenSSL key, built when first needed
        self._y: int | None = None
        if key is not None:
            x = int.from_bytes(key, "big")
            if not 1 < x < self._p - 1:
                raise InvalidKey(f"{transform}: private value out of range (1, p-1)")
            self._x = x
        elif self._openssl:
            _numbers, params = _modp_parameters(group)
            with _ffdh_quiet():
                self._private = params.generate_private_key()
                self._x = self._private.private_numbers().x
                self._y = self._private.public_key().public_numbers().y
        else:
            self._x = secrets.randbits(_POW_EXPONENT_BITS) | (1 << (_POW_EXPONENT_BITS - 1))

    def _public(self) -> int:
        if self._y is None:
            # OpenSSL will not derive y from an imported x (cryptography wants both), so an
            # imported private value (migration, fixed test values) costs one exact pow here.
            self._y = pow(2, self._x, self._p)
        return self._y

    def _openssl_key(self):
        if self._private is None:
            numbers, _params = _modp_parameters(self._group)
            with _ffdh_quiet():
                public = dh.DHPublicNumbers(self._public(), numbers)
                self._private = dh.DHPrivateNumbers(self._x, public).private_key()
        return self._private

    def public_value(self) -> bytes:
        return self._public().to_bytes(self._size, "big")

    def private_value(self) -> bytes | None:
        x = self._x
        return x.to_bytes((x.bit_length() + 7) // 8, "big")

    def shared_secret(self, peer_public: bytes) -> bytes:
        if len(peer_public) != self._size:
            raise InvalidPublicValue(
                f"{self.transform}: public value must be {self._size} bytes, got {len(peer_public)}")
        y = int.from_bytes(peer_public, "big")
        # RFC 6989 section 2.1: 1 < y < p-1 rules out the trivial subgroups {1}, {1, p-1}.
        # These primes are safe primes and g = 2 generates the q-order subgroup, so no
        # further subgroup test is required for them.
        if not 1 < y < self._p - 1:
            raise InvalidPublicValue(f"{self.transform}: peer public value not in (1, p-1)")
        if not self._openssl:
            return pow(y, self._x, self._p).to_bytes(self._size, "big")
        numbers, _params = _modp_parameters(self._group)
        with _ffdh_quiet():
            try:
                peer = dh.DHPublicNumbers(y, numbers).public_key()
                secret = self._openssl_key().exchange(peer)
            except ValueError as exc:
                raise InvalidPublicValue(f"{self.transform}: {exc}") from None
        return secret.rjust(self._size, b"\x00")


class EcpExchange(KeyExchangeContext):
    def __init__(self, transform: Transform, key: bytes | None):
        self.transform = transform
        self._curve = _CURVES[transform.group or 0]()
        self._coord = transform.output_size
        if key is None:
            self._private = ec.generate_private_key(self._curve)
        else:
            try:
                self._private = ec.derive_private_key(int.from_bytes(key, "big"), self._curve)
            except ValueError as exc:
                raise InvalidKey(f"{transform}: {exc}") from None

    def public_value(self) -> bytes:
        nums = self._private.public_key().public_numbers()
        return nums.x.to_bytes(self._coord, "big") + nums.y.to_bytes(self._coord, "big")

    def private_value(self) -> bytes | None:
        return self._private.private_numbers().private_value.to_bytes(self._coord, "big")

    def shared_secret(self, peer_public: bytes) -> bytes:
        if len(peer_public) != 2 * self._coord:
            raise InvalidPublicValue(
                f"{self.transform}: public value must be {2 * self._coord} bytes "
                f"(x || y), got {len(peer_public)}")
        try:
            # from_encoded_point checks that the point is on the curve (RFC 6989 section 2.3;
            # these prime-order curves have cofactor 1, so on-curve is all that is needed).
            peer = ec.EllipticCurvePublicKey.from_encoded_point(
                self._curve, b"\x04" + bytes(peer_public))
            secret = self._private.exchange(ec.ECDH(), peer)
        except ValueError as exc:
            raise InvalidPublicValue(f"{self.transform}: peer point rejected: {exc}") from None
        return secret.rjust(self._coord, b"\x00")


_MONTGOMERY = {
    "x25519": (x25519.X25519PrivateKey, x25519.X25519PublicKey),
    "x448": (x448.X448PrivateKey, x448.X448PublicKey),
}


class MontgomeryExchange(KeyExchangeContext):
    """X25519 / X448: raw little-endian public values; all-zero results rejected."""

    def __init__(self, transform: Transform, key: bytes | None):
        self.transform = transform
        self._size = transform.public_size
        private_cls, self._public_cls = _MONTGOMERY[transform.keyword]
        if key is None:
            self._private = private_cls.generate()
        else:
            if len(key) != self._size:
                raise InvalidKey(f"{transform}: private value must be {self._size} bytes")
            self._private = private_cls.from_private_bytes(bytes(key))

    def public_value(self) -> bytes:
        return self._private.public_key().public_bytes_raw()

    def private_value(self) -> bytes | None:
        return self._private.private_bytes_raw()

    def shared_secret(self, peer_public: bytes) -> bytes:
        if len(peer_public) != self._size:
            raise InvalidPublicValue(
                f"{self.transform}: public value must be {self._size} bytes, got {len(peer_public)}")
        try:
            peer = self._public_cls.from_public_bytes(bytes(peer_public))
            secret = self._private.exchange(peer)
        except ValueError as exc:  # OpenSSL refuses an all-zero result itself
            raise InvalidPublicValue(f"{self.transform}: {exc}") from None
        # RFC 7748 section 6.1 / 6.2: a low-order peer point gives all zeros; check it here
        # too so the rule does not depend on the OpenSSL version.
        if not any(secret):
            raise InvalidPublicValue(f"{self.transform}: shared secret is all zero")
        return secret


def new_ke(transform: Transform, key: bytes | None) -> KeyExchangeContext:
    if transform.keyword.startswith("modp"):
        return ModpExchange(transform, key)
    if transform.keyword.startswith("ecp"):
        return EcpExchange(transform, key)
    return MontgomeryExchange(transform, key)
