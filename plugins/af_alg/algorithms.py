"""Which kernel algorithm serves which catalogue keyword.

One row per keyword: the AF_ALG socket type and the kernel algorithm name bound for it.
Why these names (measured in the VM lane, Debian 6.1):

- AES-GCM uses ``gcm(aes)`` with the 12-byte nonce salt || IV, not ``rfc4106(gcm(aes))``:
  the kernel's rfc4106 accepts only assoclen 16 or 20 (ESP's SPI || SEQ [|| ESN-high] || IV,
  crypto_ipsec_check_assoclen), so IKE's SK payload (32-byte AAD) could not use it. Same
  driver underneath (aesni), same speed.
- ChaCha20-Poly1305 uses ``rfc7539esp(chacha20,poly1305)``, which takes key || salt as the
  key and the 8-byte IV both in ALG_SET_IV and at the end of the AAD region; any AAD length
  of at least 8 works, and the input is never empty.
- Integrity and PRF keys go into ``hmac(...)``, ``xcbc(aes)``, ``cmac(aes)``; truncation
  (RFC 2404, 3566, 4868) and the PRF key rules of RFC 4434 / RFC 4615 are ours.
- MODP groups go to keyctl(KEYCTL_DH_COMPUTE); ECP and Curve25519/448 are not offered: the
  kernel has ecdh/curve25519 KPP implementations but no user-space interface to them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ocfpy.crypto.catalogue import Primitive, Transform, crypto_transforms


@dataclass(frozen=True, slots=True)
class KernelAlg:
    afalg_type: str  # "aead" | "skcipher" | "hash" | "keyctl"
    name: str  # kernel algorithm name, or "dh" for keyctl


_HMAC = {"sha1": "hmac(sha1)", "sha256": "hmac(sha256)", "sha384": "hmac(sha384)",
         "sha512": "hmac(sha512)"}

NOT_OFFERED_REASON = ("the kernel has no user-space interface to ECDH/X25519/X448 "
                      "(AF_ALG has no kpp type; keyctl DH is MODP only)")


def kernel_alg(t: Transform) -> KernelAlg | None:
    """The kernel algorithm for a transform, or None if this driver never offers it."""
    k = t.keyword
    if t.primitive is Primitive.AEAD:
        if k == "chacha20poly1305":
            return KernelAlg("aead", "rfc7539esp(chacha20,poly1305)")
        return KernelAlg("aead", "gcm(aes)")
    if t.primitive is Primitive.CIPHER:
        return KernelAlg("skcipher", "rfc3686(ctr(aes))" if k.endswith("ctr") else "cbc(aes)")
    if t.primitive is Primitive.INTEG:
        return KernelAlg("hash", "xcbc(aes)" if k == "aesxcbc" else _HMAC[t.digest or ""])
    if t.primitive is Primitive.PRF:
        if k == "prfaesxcbc":
            return KernelAlg("hash", "xcbc(aes)")
        if k == "prfaescmac":
            return KernelAlg("hash", "cmac(aes)")
        return KernelAlg("hash", _HMAC[t.digest or ""])
    if t.primitive is Primitive.HASH:
        return KernelAlg("hash", t.digest or "")
    if t.primitive is Primitive.KE and k.startswith("modp"):
        return KernelAlg("keyctl", "dh")
    return None


def table() -> dict[str, KernelAlg]:
    """keyword -> kernel algorithm, for every transform this driver may offer."""
    return {t.keyword: ka for t in crypto_transforms() if (ka := kernel_alg(t)) is not None}


def never_offered() -> list[str]:
    return [t.keyword for t in crypto_transforms() if kernel_alg(t) is None]
