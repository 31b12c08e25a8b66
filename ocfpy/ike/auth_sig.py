"""Public-key AUTH payloads (RFC 7296 section 2.15 and 3.8, RFC 4754, RFC 7427, RFC 8420).

Given the signed octets (ocfpy.ike.keys.signed_octets builds them, the same octets as for a
pre-shared key) this module builds and checks the AUTH payload *data* for:

* method 1, RSA Digital Signature: RSASSA-PKCS1-v1_5 with SHA-1 (RFC 7296 3.8; the hash is
  not negotiated for this method and SHA-1 is what every implementation uses);
* methods 9/10/11, ECDSA with SHA-256/384/512 on P-256/384/521: r || s (RFC 4754 section 7);
* method 14, Digital Signature (RFC 7427 section 3): one octet with the length of the
  AlgorithmIdentifier, the DER AlgorithmIdentifier, then the signature (ECDSA as DER).

and the SIGNATURE_HASH_ALGORITHMS notify (RFC 7427 section 4): a list of 2-octet hash IDs that
each side sends in IKE_SA_INIT; method 14 may be used towards a peer only if it sent one, and
then with a hash from its list. The signing and verifying happen in framework sessions
(Dispatcher.open_signer / open_verifier), never here.

Failures are IkeProtocolError(AUTHENTICATION_FAILED) with a reason in plain words (what
``sa why`` shows).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from ocfpy.crypto.errors import InvalidKey, InvalidSignature
from ocfpy.crypto.signatures import (
    HASH_IDS,
    HASH_NAMES,
    PublicKey,
    SignatureScheme,
    by_algorithm_identifier,
    by_ike_method,
)
from ocfpy.crypto.signatures import get as get_scheme
from ocfpy.ike.constants import AuthMethod, NotifyType
from ocfpy.ike.errors import DecodeError, IkeProtocolError

# What we announce and prefer, best first (RFC 8247 section 3.2: SHA2-256/384/512 MUST,
# SHA-1 MUST NOT; Identity for EdDSA, RFC 8420 section 2).
DEFAULT_HASHES: tuple[int, ...] = (HASH_IDS["sha256"], HASH_IDS["sha384"], HASH_IDS["sha512"],
                                   HASH_IDS["identity"])

# Scheme preference when we sign with method 14, best first: RSA keys sign RSA-PSS (RFC 8247
# section 3.2 recommends it over PKCS#1 v1.5), ECDSA keys the hash matching their curve first.
DEFAULT_PREFERENCE: tuple[str, ...] = (
    "ed25519", "ed448",
    "rsa/pss-sha256", "rsa/pss-sha384", "rsa/pss-sha512",
    "ecdsa-sha256", "ecdsa-sha384", "ecdsa-sha512",
    "rsa-sha256", "rsa-sha384", "rsa-sha512",
)
_CURVE_HASH = {"secp256r1": "sha256", "secp384r1": "sha384", "secp521r1": "sha512"}


def _fail(reason: str) -> IkeProtocolError:
    return IkeProtocolError(NotifyType.AUTHENTICATION_FAILED, reason)


# -- SIGNATURE_HASH_ALGORITHMS (RFC 7427 section 4) -------------------------------------------
def encode_hash_algorithms(ids: Iterable[int] = DEFAULT_HASHES) -> bytes:
    """Notification data: each hash algorithm ID as 2 octets, network order."""
    ids = list(ids)
    return struct.pack(f"!{len(ids)}H", *ids)


MAX_UNKNOWN_HASHES = 8  # unknown hash IDs kept (for ``sa why`` only; they are never chosen)


def decode_hash_algorithms(data: bytes) -> tuple[int, ...]:
    """The peer's list, in its order, each ID once: every ID we know, and the first
    MAX_UNKNOWN_HASHES unknown ones (ignored when choosing, named in messages). The list is
    kept for the SA's life, and anyone who sends an IKE_SA_INIT sets it: a 10 KB datagram
    of IDs was a 180 KB tuple per half-open SA before the bound."""
    if len(data) % 2:
        raise DecodeError(f"SIGNATURE_HASH_ALGORITHMS data of odd length {len(data)}")
    kept, unknown = [], 0
    for i in dict.fromkeys(struct.unpack(f"!{len(data) // 2}H", data)):
        if i not in HASH_NAMES:
            if unknown == MAX_UNKNOWN_HASHES:
                continue
            unknown += 1
        kept.append(i)
    return tuple(kept)


# -- keys ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KeyKind:
    family: str  # "rsa", "ecdsa", "ed25519", "ed448"
    curve: str | None = None
    bits: int = 0

    def __str__(self) -> str:
        if self.family == "rsa":
            return f"RSA-{self.bits}"
        if self.family == "ecdsa":
            return f"ECDSA {self.curve}"
        return self.family.capitalize()


def key_kind(spki: bytes) -> KeyKind:
    """What kind of key a DER SubjectPublicKeyInfo holds."""
    try:
        key = serialization.load_der_public_key(spki)
    except ValueError as exc:
        raise InvalidKey(f"not a public key: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        return KeyKind("rsa", None, key.key_size)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return KeyKind("ecdsa", key.curve.name, key.curve.key_size)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return KeyKind("ed25519", None, 256)
    if isinstance(key, ed448.Ed448PublicKey):
        return KeyKind("ed448", None, 456)
    raise InvalidKey(f"unsupported key type {type(key).__name__}")


def _fits(scheme: SignatureScheme, kind: KeyKind) -> bool:
    if scheme.family == "eddsa":
        return scheme.keyword == kind.family
    if scheme.family in ("rsa", "rsa-pss"):
        return kind.family == "rsa"
    return kind.family == "ecdsa" and scheme.curve in (None, kind.curve)


# -- choosing how to sign ----------------------------------------------------------------------
def choose_scheme(kind: KeyKind, peer_hashes: Sequence[int] | None,
                  preference: Sequence[str] = DEFAULT_PREFERENCE) -> tuple[int, SignatureScheme]:
    """(AUTH method, scheme) to sign with a key of ``kind``.

    With the peer's SIGNATURE_HASH_ALGORITHMS (``peer_hashes`` not None): method 14 with the
    first scheme of ``preference`` that fits the key and whose hash the peer announced
    (RFC 7427 section 4). Without it, the dedicated methods: 1 for RSA, 9/10/11 for ECDSA by
    curve; EdDSA has none (RFC 8420 needs RFC 7427), so that is an error."""
    if peer_hashes is not None:
        offered = set(peer_hashes)
        for keyword in preference:
            scheme = get_scheme(keyword)
            if _fits(scheme, kind) and scheme.hash_id in offered:
                return AuthMethod.DIGITAL_SIGNATURE, scheme
        names = ", ".join(HASH_NAMES.get(h, str(h)) for h in peer_hashes) or "none"
        raise _fail(f"no signature scheme for our {kind} key uses a hash the peer accepts "
                    f"(it announced: {names}; we would sign with: {', '.join(preference)})")
    if kind.family == "rsa":
        return AuthMethod.RSA_SIG, get_scheme("rsa-sha1")
    if kind.family == "ecdsa":
        method = {"secp256r1": 9, "secp384r1": 10, "secp521r1": 11}.get(kind.curve or "")
        if method is not None:
            return AuthMethod(method), by_ike_method(method)  # type: ignore[return-value]
    raise _fail(f"the peer did not send SIGNATURE_HASH_ALGORITHMS (RFC 7427), and a {kind} "
                "key has no other IKEv2 authentication method")


# -- AUTH payload data -------------------------------------------------------------------------
def build_auth(method: int, scheme: SignatureScheme, signer, octets: bytes) -> bytes:
    """AUTH payload data for ``method``, signed by ``signer`` (a SignSession for ``scheme``)."""
    if method == AuthMethod.DIGITAL_SIGNATURE:
        if scheme.encoding == "raw":
            raise ValueError(f"{scheme}: method 14 carries DER ECDSA signatures (RFC 7427 3)")
        alg_id = scheme.algorithm_identifier
        return bytes((len(alg_id),)) + alg_id + signer.sign(octets)
    if by_ike_method(method) is not scheme:
        raise ValueError(f"method {method} does not sign with {scheme}")
    return signer.sign(octets)


def parse_auth(method: int, data: bytes) -> tuple[SignatureScheme, bytes]:
    """(scheme, signature) from AUTH payload data; AUTHENTICATION_FAILED if we do not know
    the scheme (it is a failure to authenticate, not a syntax error: RFC 7427 section 3)."""
    if method == AuthMethod.DIGITAL_SIGNATURE:
        if not data or len(data) < 1 + data[0]:
            raise _fail("the peer's AUTH payload (method 14) is too short for its "
                        "AlgorithmIdentifier")
        alg_id = data[1:1 + data[0]]
        scheme = by_algorithm_identifier(alg_id)
        if scheme is None:
            raise _fail(f"the peer signed with an algorithm we do not implement "
                        f"(AlgorithmIdentifier {alg_id.hex()})")
        return scheme, data[1 + data[0]:]
    scheme = by_ike_method(method)
    if scheme is None:
        raise _fail(f"the peer authenticates with method {method}, which we do not implement")
    return scheme, data


def verify_auth(method: int, data: bytes, octets: bytes, peer_spki: bytes, dispatcher, *,
                accepted: Iterable[str] | None = None) -> SignatureScheme:
    """Check the peer's AUTH data against the signed octets and its certificate's public key
    (DER SPKI). ``accepted``: scheme keywords we allow (None: all we implement). Returns the
    scheme used; raises IkeProtocolError(AUTHENTICATION_FAILED) with the reason."""
    scheme, signature = parse_auth(method, data)
    if accepted is not None:
        allowed = [get_scheme(k) for k in accepted]
        if scheme not in allowed:
            raise _fail(f"the peer signed with {scheme.name}; we only accept "
                        f"{', '.join(s.name for s in allowed)}")
    kind = key_kind(peer_spki)
    if not _fits(scheme, kind):
        raise _fail(f"the peer signed with {scheme.name}, but its certificate holds an "
                    f"{kind} key")
    try:
        with dispatcher.open_verifier(scheme, PublicKey(peer_spki)) as verifier:
            verifier.verify(octets, signature)
    except InvalidSignature:
        raise _fail(f"the peer's AUTH signature ({scheme.name}) does not verify with the public "
                    "key of its certificate") from None
    except InvalidKey as exc:
        raise _fail(f"the peer's certificate key cannot verify {scheme.name}: {exc}") from None
    return scheme
