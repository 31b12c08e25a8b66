"""Key derivation against published vectors.

Data: tests/unit/ike/data/ikev2_kdf.json, copied unchanged from the project's vector set: NIST
CAVP SP 800-135 IKEv2 cases (prf+ DKM for HMAC-SHA-256/384/512; one full SHA-1 case with
SKEYSEED, DKM, child DKM with and without D-H, rekey SKEYSEED), RFC 7296 sections 2.13-2.18.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ocfpy.crypto import catalogue
from ocfpy.ike import keys

DATA = json.loads((Path(__file__).parent / "data" / "ikev2_kdf.json").read_text())
PRF = {"hmac-sha1": "prfsha1", "hmac-sha256": "prfsha256", "hmac-sha384": "prfsha384",
       "hmac-sha512": "prfsha512"}
PRF_PLUS = [c for c in DATA["cases"] if c["kind"] == "prf_plus"]
FULL = [c for c in DATA["cases"] if c["kind"] == "ikev2_full"]
h = bytes.fromhex


@pytest.mark.parametrize("case", PRF_PLUS, ids=[c["name"] for c in PRF_PLUS])
def test_prf_plus(dispatcher, case):
    prf = catalogue.get(PRF[case["prf"]])
    out = keys.prf_plus(dispatcher, prf, h(case["key_skeyseed"]), h(case["seed_ni_nr_spii_spir"]),
                        case["length"])
    assert out.hex() == case["dkm"]


@pytest.mark.parametrize("case", FULL, ids=[c["name"] for c in FULL])
def test_full_derivation(dispatcher, case):
    prf = catalogue.get(PRF[case["prf"]])
    ni, nr = h(case["ni"]), h(case["nr"])
    seed = keys.skeyseed(dispatcher, prf, ni, nr, h(case["gir"]))
    assert seed.hex() == case["skeyseed"]
    dkm = keys.prf_plus(dispatcher, prf, seed, ni + nr + h(case["spii"]) + h(case["spir"]),
                        case["dkm_length"])
    assert dkm.hex() == case["dkm"]
    sk_d = dkm[:prf.output_size]
    assert keys.prf_plus(dispatcher, prf, sk_d, ni + nr, case["dkm_length"]).hex() == \
        case["dkm_child_sa"]
    assert keys.prf_plus(dispatcher, prf, sk_d, h(case["gir_new"]) + ni + nr,
                         case["dkm_length"]).hex() == case["dkm_child_sa_dh"]


def test_ike_keys_split_in_rfc_order(dispatcher):
    """The seven keys are consecutive slices of prf+ output, in RFC 7296 2.14 order."""
    case = FULL[0]
    prf, encr, integ = (catalogue.get(k) for k in ("prfsha1", "aes128", "sha1"))
    ni, nr, spi_i, spi_r = (h(case[k]) for k in ("ni", "nr", "spii", "spir"))
    seed = h(case["skeyseed"])
    k = keys.ike_keys(dispatcher, prf, encr, integ, seed, ni, nr, spi_i, spi_r)
    flat = k.sk_d + k.sk_ai + k.sk_ar + k.sk_ei + k.sk_er + k.sk_pi + k.sk_pr
    assert [len(x) for x in (k.sk_d, k.sk_ai, k.sk_ei, k.sk_pi)] == [20, 20, 16, 20]
    assert flat.hex() == case["dkm"][:2 * len(flat)]
    assert "secret" in repr(k) and case["dkm"][:16] not in repr(k)


def test_child_keys_initiator_to_responder_first(dispatcher):
    case = FULL[0]
    prf, encr = catalogue.get("prfsha1"), catalogue.get("aes128gcm16")
    ni, nr, sk_d = h(case["ni"]), h(case["nr"]), h(case["dkm"])[:20]
    ck = keys.child_keys(dispatcher, prf, sk_d, ni, nr, encr, None)
    km = h(case["dkm_child_sa"])
    assert ck.encr_i2r == km[:20] and ck.encr_r2i == km[20:40]
    assert ck.integ_i2r == ck.integ_r2i == b""


def test_psk_auth_matches_rfc_formula(dispatcher):
    """AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>) (RFC 7296 2.15),
    checked against the stdlib HMAC as an independent implementation."""
    import hashlib
    import hmac

    prf = catalogue.get("prfsha256")
    octets = b"message" + b"n" * 32 + b"maced-id"
    inner = hmac.new(b"psk", b"Key Pad for IKEv2", hashlib.sha256).digest()
    want = hmac.new(inner, octets, hashlib.sha256).digest()
    assert keys.psk_auth(dispatcher, prf, b"psk", octets) == want


def test_fixed_key_prfs_take_64_bits_of_each_nonce():
    prf = catalogue.get("prfaesxcbc")
    assert keys.nonce_key(prf, b"A" * 32, b"B" * 32) == b"A" * 8 + b"B" * 8
    assert keys.nonce_key(catalogue.get("prfsha256"), b"A" * 32, b"B" * 32) == b"A" * 32 + b"B" * 32
