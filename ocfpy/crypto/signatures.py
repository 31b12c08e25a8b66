"""Signature schemes: the catalogue entries for signing and verifying (IKE AUTH, RFC 7427).

A scheme is a `Transform` of primitive SIGNATURE, named by a strongSwan-style keyword, so the
registry admits it, the dispatcher selects a driver for it and the strict/fallback rules and
per-algorithm overrides apply to it exactly as to an AEAD. It has no IKE transform ID (it is
not negotiated in an SA proposal); what IKE needs to put it on the wire is here instead:

* ``algorithm_identifier``: the DER AlgorithmIdentifier that RFC 7427 section 3 puts in front of
  the signature in an AUTH payload of method 14 ("Digital Signature"), byte for byte as in
  RFC 7427 Appendix A where it lists one, RFC 8420 section 2 for EdDSA, and RFC 4055 for
  RSASSA-PSS with SHA-384/512 (MGF1 with the same hash, salt as long as the hash, RFC 8247
  section 3.2 / RFC 7427 Appendix A.4.3 style);
* ``ike_method``: the older dedicated AUTH method, where one exists (RFC 7296 section 3.8:
  1 = RSA Digital Signature, PKCS#1 v1.5 with SHA-1; RFC 4754 section 7: 9/10/11 = ECDSA
  with SHA-256/384/512 on P-256/384/521, signature r || s);
* ``hash_id``: the RFC 7427 section 7 hash algorithm number of its hash (SHA1 = 1,
  SHA2-256 = 2, SHA2-384 = 3, SHA2-512 = 4) and RFC 8420's Identity (5) for EdDSA, which is
  what SIGNATURE_HASH_ALGORITHMS announces.

ECDSA comes twice: DER-encoded ECDSA-Sig-Value (``ecdsa-sha256``: RFC 7427 method 14, RFC 3279
section 2.2.3; the curve is the key's, as the AlgorithmIdentifier does not bind one) and the
fixed-width r || s of RFC 4754 (``ecdsa-256`` for method 9, which binds P-256 and SHA-256).

Keys: a signer is opened with a *private key reference* (a file, in-memory bytes for tests
and self-tests, a PKCS#11 URI); only a driver that can reach the key serves the session (a
driver that cannot raises ``Unsupported(..., Reason.KEY_STORE)``). A verifier is opened with a
`PublicKey` (DER SubjectPublicKeyInfo, as found in a certificate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .catalogue import Primitive, Transform
from .errors import UnknownAlgorithm

# RFC 7427 section 7 / IANA "IKEv2 Hash Algorithms"; 5 = Identity from RFC 8420 section 2.
HASH_IDS: dict[str, int] = {"sha1": 1, "sha256": 2, "sha384": 3, "sha512": 4, "identity": 5}
HASH_NAMES: dict[int, str] = {v: k for k, v in HASH_IDS.items()}
_HASH_SIZE = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}

# DER of the hash OIDs inside AlgorithmIdentifiers (RFC 3279, RFC 5754 section 2).
_HASH_OID = {
    "sha1": "06052b0e03021a",
    "sha256": "0609608648016503040201",
    "sha384": "0609608648016503040202",
    "sha512": "0609608648016503040203",
}


def _der(tag: int, content: bytes) -> bytes:
    """One DER TLV (lengths below 128 bytes only: every AlgorithmIdentifier here is short)."""
    assert len(content) < 0x80
    return bytes((tag, len(content))) + content


def _rsa_pkcs1_alg_id(digest: str) -> bytes:
    # sha*WithRSAEncryption, parameters NULL (RFC 4055 section 5; RFC 7427 Appendix A.1).
    last = {"sha1": 0x05, "sha256": 0x0B, "sha384": 0x0C, "sha512": 0x0D}[digest]
    oid = bytes.fromhex("06092a864886f70d0101") + bytes((last,))
    return _der(0x30, oid + bytes.fromhex("0500"))


def _rsa_pss_alg_id(digest: str) -> bytes:
    # id-RSASSA-PSS with RSASSA-PSS-params (RFC 4055 section 3.1): hashAlgorithm [0],
    # maskGenAlgorithm [1] = MGF1 with the same hash, saltLength [2] = hash length; the
    # trailerField is the default (1) and so absent in DER. RFC 7427 Appendix A.4.3 shows
    # this encoding for SHA-256.
    hash_alg = _der(0x30, bytes.fromhex(_HASH_OID[digest] + "0500"))
    mgf1 = _der(0x30, bytes.fromhex("06092a864886f70d010108") + hash_alg)
    salt = _der(0x02, bytes((_HASH_SIZE[digest],)))
    params = _der(0x30, _der(0xA0, hash_alg) + _der(0xA1, mgf1) + _der(0xA2, salt))
    return _der(0x30, bytes.fromhex("06092a864886f70d01010a") + params)


def _ecdsa_alg_id(digest: str) -> bytes:
    # ecdsa-with-SHA* without parameters (RFC 5758 section 3.2; RFC 7427 Appendix A.3).
    if digest == "sha1":
        return _der(0x30, bytes.fromhex("06072a8648ce3d0401"))
    last = {"sha256": 0x02, "sha384": 0x03, "sha512": 0x04}[digest]
    return _der(0x30, bytes.fromhex("06082a8648ce3d0403") + bytes((last,)))


@dataclass(frozen=True, slots=True)
class SignatureScheme(Transform):
    """A signature scheme. ``digest`` is its hash (None for EdDSA, which hashes internally)."""

    family: str = ""  # "rsa" (PKCS#1 v1.5), "rsa-pss", "ecdsa", "eddsa"
    curve: str | None = None  # "secp256r1".., "ed25519", "ed448"; None: the key's curve
    encoding: str = ""  # "der" | "raw" (ECDSA r || s) | "" (RSA, EdDSA: one form only)
    algorithm_identifier: bytes = b""
    ike_method: int | None = None  # RFC 7296 3.8 / RFC 4754 method, besides 14
    hash_id: int | None = None  # RFC 7427 section 7

    @property
    def name(self) -> str:
        """How a person says it, for `sa why` ("RSA-PSS/SHA-256")."""
        return self.description


def _rsa(digest: str) -> SignatureScheme:
    return SignatureScheme(
        f"rsa-{digest}", Primitive.SIGNATURE, None, None, digest=digest,
        output_size=0, family="rsa", algorithm_identifier=_rsa_pkcs1_alg_id(digest),
        ike_method=1 if digest == "sha1" else None, hash_id=HASH_IDS[digest],
        description=f"RSA PKCS#1 v1.5/{digest.upper().replace('SHA', 'SHA-')}",
        rfc="RFC 8017 section 8.2, RFC 7427",
    )


def _rsa_pss(digest: str) -> SignatureScheme:
    return SignatureScheme(
        f"rsa/pss-{digest}", Primitive.SIGNATURE, None, None, digest=digest,
        family="rsa-pss", algorithm_identifier=_rsa_pss_alg_id(digest),
        hash_id=HASH_IDS[digest], salt_size=_HASH_SIZE[digest],
        description=f"RSA-PSS/{digest.upper().replace('SHA', 'SHA-')}",
        rfc="RFC 8017 section 8.1, RFC 4055, RFC 7427",
    )


_ECDSA_CURVE = {"sha256": ("secp256r1", 256, 9), "sha384": ("secp384r1", 384, 10),
                "sha512": ("secp521r1", 521, 11)}


def _ecdsa_der(digest: str) -> SignatureScheme:
    return SignatureScheme(
        f"ecdsa-{digest}", Primitive.SIGNATURE, None, None, digest=digest, family="ecdsa",
        encoding="der", algorithm_identifier=_ecdsa_alg_id(digest), hash_id=HASH_IDS[digest],
        description=f"ECDSA/{digest.upper().replace('SHA', 'SHA-')} (DER)",
        rfc="FIPS 186-5, RFC 3279 section 2.2.3, RFC 7427",
    )


def _ecdsa_raw(digest: str) -> SignatureScheme:
    curve, bits, method = _ECDSA_CURVE[digest]
    return SignatureScheme(
        f"ecdsa-{bits}", Primitive.SIGNATURE, None, None, digest=digest, family="ecdsa",
        curve=curve, encoding="raw", output_size=2 * ((bits + 7) // 8),
        algorithm_identifier=_ecdsa_alg_id(digest), ike_method=method,
        hash_id=HASH_IDS[digest],
        description=f"ECDSA P-{bits}/{digest.upper().replace('SHA', 'SHA-')} (r||s)",
        rfc="RFC 4754",
    )


def _eddsa(curve: str, oid_last: int, size: int) -> SignatureScheme:
    # id-Ed25519 / id-Ed448 without parameters (RFC 8410 section 3; RFC 8420 section 2).
    return SignatureScheme(
        curve, Primitive.SIGNATURE, None, None, family="eddsa", curve=curve,
        output_size=size, algorithm_identifier=_der(0x30, bytes((0x06, 3, 0x2B, 0x65, oid_last))),
        hash_id=HASH_IDS["identity"], description=curve.capitalize(), rfc="RFC 8032, RFC 8420",
    )


SCHEMES: list[SignatureScheme] = [
    *(_rsa(d) for d in ("sha1", "sha256", "sha384", "sha512")),
    *(_rsa_pss(d) for d in ("sha256", "sha384", "sha512")),
    *(_ecdsa_der(d) for d in ("sha256", "sha384", "sha512")),
    *(_ecdsa_raw(d) for d in ("sha256", "sha384", "sha512")),
    _eddsa("ed25519", 0x70, 64),
    _eddsa("ed448", 0x71, 114),
]

# strongSwan's spellings in `auth = pubkey-...` / `ike:...` constraints, and obvious variants.
ALIASES: dict[str, str] = {
    "rsa": "rsa-sha1", "rsa-pss-sha256": "rsa/pss-sha256", "rsa-pss-sha384": "rsa/pss-sha384",
    "rsa-pss-sha512": "rsa/pss-sha512", "rsapss-sha256": "rsa/pss-sha256",
    "rsapss-sha384": "rsa/pss-sha384", "rsapss-sha512": "rsa/pss-sha512",
    "ecdsa256": "ecdsa-256", "ecdsa384": "ecdsa-384", "ecdsa521": "ecdsa-521",
}

_BY_KEYWORD = {s.keyword: s for s in SCHEMES}
_BY_ALG_ID = {s.algorithm_identifier: s for s in SCHEMES if s.encoding != "raw"}
_BY_METHOD = {s.ike_method: s for s in SCHEMES if s.ike_method is not None}


def find(keyword: str) -> SignatureScheme | None:
    """The scheme for a keyword or alias, or None (the catalogue's get() asks this last)."""
    name = keyword.strip().lower()
    return _BY_KEYWORD.get(ALIASES.get(name, name))


def get(keyword: str | SignatureScheme) -> SignatureScheme:
    if isinstance(keyword, SignatureScheme):
        return keyword
    found = find(keyword)
    if found is None:
        raise UnknownAlgorithm(keyword, sorted(_BY_KEYWORD))
    return found


def by_algorithm_identifier(der: bytes) -> SignatureScheme | None:
    """The scheme an RFC 7427 AUTH payload names, or None if we do not know (or accept) it.

    Matching is on the exact DER: RFC 7427 section 3 leaves parameters to the signature
    scheme, and a PSS AlgorithmIdentifier with other parameters (another salt length, MGF1
    with another hash) is another scheme that we do not implement, so it must not match."""
    return _BY_ALG_ID.get(bytes(der))


def by_ike_method(method: int) -> SignatureScheme | None:
    """The scheme of a dedicated AUTH method (1, 9, 10, 11), or None."""
    return _BY_METHOD.get(method)


def all_schemes() -> list[SignatureScheme]:
    return list(SCHEMES)


# -- keys --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PublicKey:
    """A public key as DER SubjectPublicKeyInfo (RFC 5280 section 4.1.2.7)."""

    spki: bytes = field(repr=False)

    def describe(self) -> str:
        return f"a public key ({len(self.spki)} bytes of SubjectPublicKeyInfo)"


@dataclass(frozen=True, slots=True)
class PrivateKeyRef:
    """Where a private key is. ``store`` tells drivers whether they can reach it; repr and
    describe() never show secrets (passphrase, PIN, key bytes)."""

    store = ""

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class KeyFile(PrivateKeyRef):
    """A PEM or DER private key file (PKCS#8, or traditional RSA/EC), optionally encrypted."""

    path: str
    passphrase: bytes | None = field(default=None, repr=False)
    store = "file"

    def describe(self) -> str:
        return f"the key file {self.path}"


@dataclass(frozen=True, slots=True)
class KeyBytes(PrivateKeyRef):
    """A private key in memory (PEM or DER): self-tests and tests, never a daemon's config."""

    data: bytes = field(repr=False)
    passphrase: bytes | None = field(default=None, repr=False)
    store = "memory"

    def describe(self) -> str:
        return "an in-memory key"


@dataclass(frozen=True, slots=True)
class Pkcs11Key(PrivateKeyRef):
    """A key in a PKCS#11 token, named by an RFC 7512 URI; the PIN comes from configuration
    (``[secrets.token-NAME]``), never from the URI."""

    uri: str
    pin: str | None = field(default=None, repr=False)
    store = "pkcs11"

    def describe(self) -> str:
        return f"the token key {self.uri}"
