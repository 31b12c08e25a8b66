"""The algorithm catalogue: one vocabulary for the API, the config, the CLI and the benchmark.

Every algorithm is named by its strongSwan proposal keyword and maps one-to-one to an IANA
IKEv2 transform (type, ID, key-length attribute). A `Transform` is validated once, here,
before any driver sees it (pyca/cryptography's algorithm objects play the same role).

Sizes are in bytes. For AEADs and AES-CTR, ``salt_size`` is the part of the keying material
that follows the cipher key (RFC 4106 section 8.1, RFC 3686 section 5.1, RFC 7634 section 2):
a session is opened with ``key_size + salt_size`` bytes, exactly what IKE's KEYMAT yields,
and each operation takes the 8-byte explicit IV that travels on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from .errors import UnknownAlgorithm


class TransformType(IntEnum):
    """IKEv2 transform types (RFC 7296 section 3.3.2)."""

    ENCR = 1
    PRF = 2
    INTEG = 3
    KE = 4  # "D-H" in RFC 7296, "Key Exchange Method" since RFC 9370
    ESN = 5


class Primitive(StrEnum):
    """What kind of session an algorithm opens."""

    AEAD = "aead"
    CIPHER = "cipher"
    INTEG = "integ"
    PRF = "prf"
    KE = "ke"
    HASH = "hash"
    FLAG = "flag"  # ESN on/off: negotiated, never computed
    SIGNATURE = "signature"  # sign / verify (IKE AUTH); the schemes are in signatures.py


@dataclass(frozen=True, slots=True)
class Transform:
    keyword: str
    primitive: Primitive
    transform_type: TransformType | None
    transform_id: int | None
    key_bits: int | None = None  # the IKE Key Length attribute, for variable-length ciphers
    key_size: int = 0  # cipher / MAC / PRF key (preferred length for PRFs)
    salt_size: int = 0  # keying material after the key: AEAD salt or CTR nonce
    iv_size: int = 0  # explicit IV carried per packet
    block_size: int = 1
    icv_size: int = 0  # AEAD tag or truncated MAC
    output_size: int = 0  # PRF or hash output, full MAC output
    digest: str | None = None  # underlying hash, for HMAC / hash / PRF
    group: int | None = None  # KE: the IKE group number
    public_size: int = 0  # KE: length of the KE payload data
    description: str = ""
    rfc: str = ""

    @property
    def keymat_size(self) -> int:
        """Bytes of keying material a session of this transform is opened with."""
        return self.key_size + self.salt_size

    @property
    def ike_id(self) -> tuple[TransformType, int, int | None] | None:
        if self.transform_type is None or self.transform_id is None:
            return None
        return (self.transform_type, self.transform_id, self.key_bits)

    def __str__(self) -> str:
        return self.keyword


def _aes_cbc(bits: int) -> Transform:
    return Transform(
        f"aes{bits}", Primitive.CIPHER, TransformType.ENCR, 12, bits, bits // 8,
        iv_size=16, block_size=16, description=f"AES-{bits}-CBC", rfc="RFC 3602",
    )


def _aes_ctr(bits: int) -> Transform:
    return Transform(
        f"aes{bits}ctr", Primitive.CIPHER, TransformType.ENCR, 13, bits, bits // 8, salt_size=4,
        iv_size=8, block_size=1, description=f"AES-{bits}-CTR", rfc="RFC 3686, RFC 5930",
    )


_GCM_IDS = {8: 18, 12: 19, 16: 20}


def _aes_gcm(bits: int, icv: int) -> Transform:
    return Transform(
        f"aes{bits}gcm{icv}", Primitive.AEAD, TransformType.ENCR, _GCM_IDS[icv], bits, bits // 8,
        salt_size=4, iv_size=8, block_size=1, icv_size=icv,
        description=f"AES-{bits}-GCM with a {icv}-byte ICV", rfc="RFC 4106, RFC 5282",
    )


def _hmac(keyword: str, tid: int, digest: str, key: int, icv: int, rfc: str) -> Transform:
    return Transform(
        keyword, Primitive.INTEG, TransformType.INTEG, tid, key_size=key, icv_size=icv,
        output_size=key, digest=digest, block_size=1,
        description=f"HMAC-{digest.upper()}-{icv * 8}", rfc=rfc,
    )


def _prf_hmac(keyword: str, tid: int, digest: str, size: int, rfc: str) -> Transform:
    return Transform(
        keyword, Primitive.PRF, TransformType.PRF, tid, key_size=size, output_size=size,
        digest=digest, description=f"PRF-HMAC-{digest.upper()}", rfc=rfc,
    )


def _modp(group: int, bits: int, rfc: str) -> Transform:
    return Transform(
        f"modp{bits}", Primitive.KE, TransformType.KE, group, group=group,
        public_size=bits // 8, output_size=bits // 8,
        description=f"{bits}-bit MODP group", rfc=rfc,
    )


def _ecp(group: int, bits: int) -> Transform:
    coord = (bits + 7) // 8
    return Transform(
        f"ecp{bits}", Primitive.KE, TransformType.KE, group, group=group,
        public_size=2 * coord, output_size=coord,
        description=f"{bits}-bit random ECP group (NIST P-{bits})", rfc="RFC 5903",
    )


def _hash(digest: str, size: int) -> Transform:
    return Transform(
        f"hash{digest}", Primitive.HASH, None, None, output_size=size, digest=digest,
        description=f"{digest.upper()} hash", rfc="FIPS 180-4",
    )


_ALL: list[Transform] = [
    *(_aes_cbc(b) for b in (128, 192, 256)),
    *(_aes_ctr(b) for b in (128, 192, 256)),
    *(_aes_gcm(b, icv) for b in (128, 192, 256) for icv in (8, 12, 16)),
    Transform(
        "chacha20poly1305", Primitive.AEAD, TransformType.ENCR, 28, None, 32, salt_size=4,
        iv_size=8, block_size=1, icv_size=16, description="ChaCha20-Poly1305", rfc="RFC 7634",
    ),
    _hmac("sha1", 2, "sha1", 20, 12, "RFC 2404"),
    Transform(
        "aesxcbc", Primitive.INTEG, TransformType.INTEG, 5, key_size=16, icv_size=12,
        output_size=16, block_size=16, description="AES-XCBC-MAC-96", rfc="RFC 3566",
    ),
    _hmac("sha256", 12, "sha256", 32, 16, "RFC 4868"),
    _hmac("sha384", 13, "sha384", 48, 24, "RFC 4868"),
    _hmac("sha512", 14, "sha512", 64, 32, "RFC 4868"),
    _prf_hmac("prfsha1", 2, "sha1", 20, "RFC 2104"),
    Transform(
        "prfaesxcbc", Primitive.PRF, TransformType.PRF, 4, key_size=16, output_size=16,
        block_size=16, description="AES-XCBC-PRF-128", rfc="RFC 4434",
    ),
    _prf_hmac("prfsha256", 5, "sha256", 32, "RFC 4868"),
    _prf_hmac("prfsha384", 6, "sha384", 48, "RFC 4868"),
    _prf_hmac("prfsha512", 7, "sha512", 64, "RFC 4868"),
    Transform(
        "prfaescmac", Primitive.PRF, TransformType.PRF, 8, key_size=16, output_size=16,
        block_size=16, description="AES-CMAC-PRF-128", rfc="RFC 4615",
    ),
    _modp(2, 1024, "RFC 2409"),
    _modp(5, 1536, "RFC 3526"),
    _modp(14, 2048, "RFC 3526"),
    _modp(15, 3072, "RFC 3526"),
    _modp(16, 4096, "RFC 3526"),
    _modp(17, 6144, "RFC 3526"),
    _modp(18, 8192, "RFC 3526"),
    _ecp(19, 256),
    _ecp(20, 384),
    _ecp(21, 521),
    Transform(
        "x25519", Primitive.KE, TransformType.KE, 31, group=31, public_size=32, output_size=32,
        description="Curve25519 (X25519)", rfc="RFC 8031",
    ),
    Transform(
        "x448", Primitive.KE, TransformType.KE, 32, group=32, public_size=56, output_size=56,
        description="Curve448 (X448)", rfc="RFC 8031",
    ),
    Transform("noesn", Primitive.FLAG, TransformType.ESN, 0, description="32-bit sequence numbers"),
    Transform("esn", Primitive.FLAG, TransformType.ESN, 1, description="Extended sequence numbers"),
    _hash("sha1", 20),
    _hash("sha256", 32),
    _hash("sha384", 48),
    _hash("sha512", 64),
]

# strongSwan accepts these spellings too (proposal_keywords_static.txt).
ALIASES: dict[str, str] = {
    "aes": "aes128",
    "aes128gcm": "aes128gcm16",
    "aes192gcm": "aes192gcm16",
    "aes256gcm": "aes256gcm16",
    "aes128gcm64": "aes128gcm8",
    "aes128gcm96": "aes128gcm12",
    "aes128gcm128": "aes128gcm16",
    "aes192gcm64": "aes192gcm8",
    "aes192gcm96": "aes192gcm12",
    "aes192gcm128": "aes192gcm16",
    "aes256gcm64": "aes256gcm8",
    "aes256gcm96": "aes256gcm12",
    "aes256gcm128": "aes256gcm16",
    "sha": "sha1",
    "sha2_256": "sha256",
    "sha2_384": "sha384",
    "sha2_512": "sha512",
    "prfsha": "prfsha1",
    "curve25519": "x25519",
    "curve448": "x448",
}

_BY_KEYWORD: dict[str, Transform] = {t.keyword: t for t in _ALL}
_BY_IKE_ID: dict[tuple[TransformType, int, int | None], Transform] = {
    t.ike_id: t for t in _ALL if t.ike_id is not None
}
assert len(_BY_KEYWORD) == len(_ALL) and len(_BY_IKE_ID) == len(_ALL) - 4  # hashes have no ID


def get(keyword: str | Transform) -> Transform:
    """The transform named by a strongSwan keyword (aliases accepted)."""
    if isinstance(keyword, Transform):
        return keyword
    found = _BY_KEYWORD.get(keyword)
    if found is not None:
        return found
    name = keyword.strip().lower()
    name = ALIASES.get(name, name)
    try:
        return _BY_KEYWORD[name]
    except KeyError:
        pass
    # Signature schemes are not IKE transforms (no ID, no proposal) but drivers offer them
    # and the registry admits them by keyword like any other algorithm.
    from .signatures import find

    scheme = find(name)
    if scheme is not None:
        return scheme
    raise UnknownAlgorithm(keyword, sorted(_BY_KEYWORD)) from None


def by_ike_id(transform_type: int, transform_id: int, key_bits: int | None = None) -> Transform | None:
    """The transform for an IKEv2 (type, ID, key length) triple, or None if we do not know it."""
    return _BY_IKE_ID.get((TransformType(transform_type), transform_id, key_bits))


def all_transforms() -> list[Transform]:
    return list(_ALL)


def crypto_transforms() -> list[Transform]:
    """Everything a driver can implement (all but the ESN flags)."""
    return [t for t in _ALL if t.primitive is not Primitive.FLAG]


def of_type(transform_type: TransformType) -> list[Transform]:
    return [t for t in _ALL if t.transform_type == transform_type]
