"""The catalogue: one-to-one keywords <-> IKEv2 transform IDs, and the sizes RFCs fix."""

import pytest

from ocfpy.crypto import catalogue
from ocfpy.crypto.catalogue import Primitive, TransformType
from ocfpy.crypto.errors import UnknownAlgorithm


def test_every_ike_transform_maps_one_to_one():
    seen = {}
    for t in catalogue.all_transforms():
        if t.ike_id is None:
            assert t.primitive is Primitive.HASH
            continue
        assert t.ike_id not in seen, f"{t} and {seen.get(t.ike_id)} share {t.ike_id}"
        seen[t.ike_id] = t
        assert catalogue.by_ike_id(*t.ike_id) is t


@pytest.mark.parametrize("keyword,ttype,tid,bits", [
    # IANA "IKEv2 Parameters", Transform Type Values 1-5
    ("aes128", TransformType.ENCR, 12, 128), ("aes256", TransformType.ENCR, 12, 256),
    ("aes192ctr", TransformType.ENCR, 13, 192),
    ("aes128gcm8", TransformType.ENCR, 18, 128), ("aes192gcm12", TransformType.ENCR, 19, 192),
    ("aes256gcm16", TransformType.ENCR, 20, 256),
    ("chacha20poly1305", TransformType.ENCR, 28, None),
    ("prfsha1", TransformType.PRF, 2, None), ("prfaesxcbc", TransformType.PRF, 4, None),
    ("prfsha256", TransformType.PRF, 5, None), ("prfsha512", TransformType.PRF, 7, None),
    ("prfaescmac", TransformType.PRF, 8, None),
    ("sha1", TransformType.INTEG, 2, None), ("aesxcbc", TransformType.INTEG, 5, None),
    ("sha256", TransformType.INTEG, 12, None), ("sha384", TransformType.INTEG, 13, None),
    ("sha512", TransformType.INTEG, 14, None),
    ("modp1024", TransformType.KE, 2, None), ("modp1536", TransformType.KE, 5, None),
    ("modp2048", TransformType.KE, 14, None), ("modp8192", TransformType.KE, 18, None),
    ("ecp256", TransformType.KE, 19, None), ("ecp521", TransformType.KE, 21, None),
    ("x25519", TransformType.KE, 31, None), ("x448", TransformType.KE, 32, None),
    ("noesn", TransformType.ESN, 0, None), ("esn", TransformType.ESN, 1, None),
])
def test_iana_ids(keyword, ttype, tid, bits):
    assert catalogue.get(keyword).ike_id == (ttype, tid, bits)


def test_sizes_from_the_rfcs():
    gcm = catalogue.get("aes256gcm16")
    assert (gcm.key_size, gcm.salt_size, gcm.iv_size, gcm.icv_size, gcm.keymat_size) == (32, 4, 8, 16, 36)
    assert catalogue.get("aes128gcm8").icv_size == 8
    cc = catalogue.get("chacha20poly1305")
    assert (cc.key_size, cc.salt_size, cc.iv_size, cc.icv_size) == (32, 4, 8, 16)  # RFC 7634
    ctr = catalogue.get("aes128ctr")
    assert (ctr.key_size, ctr.salt_size, ctr.iv_size) == (16, 4, 8)  # RFC 3686
    assert (catalogue.get("sha256").key_size, catalogue.get("sha256").icv_size) == (32, 16)  # RFC 4868
    assert (catalogue.get("sha384").key_size, catalogue.get("sha384").icv_size) == (48, 24)
    assert (catalogue.get("sha512").key_size, catalogue.get("sha512").icv_size) == (64, 32)
    assert catalogue.get("sha1").icv_size == 12 and catalogue.get("aesxcbc").icv_size == 12
    assert catalogue.get("ecp521").public_size == 132  # 2 x 66 bytes, RFC 5903
    assert catalogue.get("modp3072").public_size == 384


def test_strongswan_aliases():
    assert catalogue.get("curve25519") is catalogue.get("x25519")
    assert catalogue.get("aes256gcm") is catalogue.get("aes256gcm16")
    assert catalogue.get(" AES128 ") is catalogue.get("aes128")


def test_unknown_keyword_is_explained():
    with pytest.raises(UnknownAlgorithm, match="'aes129'.*similar: aes1"):
        catalogue.get("aes129")
