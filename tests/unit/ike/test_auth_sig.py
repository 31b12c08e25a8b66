"""Public-key AUTH payload data (RFC 7296 3.8, RFC 4754, RFC 7427) and the
SIGNATURE_HASH_ALGORITHMS notify, byte for byte, signed and checked through the dispatcher."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.registry import Registry
from ocfpy.crypto.signatures import KeyBytes
from ocfpy.crypto.signatures import get as get_scheme
from ocfpy.ike.auth_sig import (
    build_auth,
    choose_scheme,
    decode_hash_algorithms,
    encode_hash_algorithms,
    key_kind,
    verify_auth,
)
from ocfpy.ike.constants import AuthMethod, NotifyType
from ocfpy.ike.errors import DecodeError, IkeProtocolError
from plugins.openssl import OpenSSLDriver

OCTETS = b"IKE_SA_INIT message | Nr | prf(SK_pi, IDi')"
# RFC 8032 section 7.1 TEST 1
ED_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")


@pytest.fixture(scope="module")
def dispatcher():
    return Dispatcher(Registry.from_drivers([OpenSSLDriver()]))


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(65537, 2048)


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _spki(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def test_hash_algorithms_notify_bytes():
    # RFC 7427 section 4: 2-octet IDs; SHA2-256 = 2, SHA2-384 = 3, SHA2-512 = 4, Identity = 5
    assert encode_hash_algorithms() == bytes.fromhex("0002000300040005")
    assert encode_hash_algorithms([1, 2]) == bytes.fromhex("00010002")
    assert decode_hash_algorithms(bytes.fromhex("000200040009")) == (2, 4, 9)
    assert decode_hash_algorithms(b"") == ()
    with pytest.raises(DecodeError):
        decode_hash_algorithms(b"\x00\x02\x00")


def test_method_14_ed25519_is_byte_exact(dispatcher):
    key = ed25519.Ed25519PrivateKey.from_private_bytes(ED_SECRET)
    method, scheme = choose_scheme(key_kind(_spki(key)), [2, 5])
    assert (method, scheme.keyword) == (AuthMethod.DIGITAL_SIGNATURE, "ed25519")
    with dispatcher.open_signer(scheme, KeyBytes(_pem(key))) as signer:
        data = build_auth(method, scheme, signer, OCTETS)
    # RFC 7427 section 3: length of the AlgorithmIdentifier, RFC 8420's id-Ed25519, signature
    assert data == bytes.fromhex("07300506032b6570") + key.sign(OCTETS)
    assert verify_auth(method, data, OCTETS, _spki(key), dispatcher).keyword == "ed25519"


def test_method_1_is_pkcs1_sha1_without_algorithm_identifier(dispatcher, rsa_key):
    method, scheme = choose_scheme(key_kind(_spki(rsa_key)), None)  # no RFC 7427 from the peer
    assert (method, scheme.keyword) == (AuthMethod.RSA_SIG, "rsa-sha1")
    with dispatcher.open_signer(scheme, KeyBytes(_pem(rsa_key))) as signer:
        data = build_auth(method, scheme, signer, OCTETS)
    assert data == rsa_key.sign(OCTETS, padding.PKCS1v15(), hashes.SHA1())  # deterministic
    verify_auth(method, data, OCTETS, _spki(rsa_key), dispatcher)


@pytest.mark.parametrize("curve,method,size", [(ec.SECP256R1, 9, 64), (ec.SECP384R1, 10, 96),
                                               (ec.SECP521R1, 11, 132)])
def test_methods_9_to_11_are_r_s(dispatcher, curve, method, size):
    key = ec.generate_private_key(curve())
    m, scheme = choose_scheme(key_kind(_spki(key)), None)
    assert m == method
    with dispatcher.open_signer(scheme, KeyBytes(_pem(key))) as signer:
        data = build_auth(m, scheme, signer, OCTETS)
    assert len(data) == size  # RFC 4754 section 7: r || s, each the field size
    assert verify_auth(m, data, OCTETS, _spki(key), dispatcher) is scheme


def test_method_14_rsa_pss_with_the_hash_the_peer_announced(dispatcher, rsa_key):
    method, scheme = choose_scheme(key_kind(_spki(rsa_key)), [4])  # peer: SHA2-512 only
    assert scheme.keyword == "rsa/pss-sha512"
    with dispatcher.open_signer(scheme, KeyBytes(_pem(rsa_key))) as signer:
        data = build_auth(method, scheme, signer, OCTETS)
    alg_id = scheme.algorithm_identifier
    assert data[0] == len(alg_id) and data[1:1 + len(alg_id)] == alg_id
    assert len(data) == 1 + len(alg_id) + 256
    verify_auth(method, data, OCTETS, _spki(rsa_key), dispatcher)


def test_method_14_ecdsa_is_der(dispatcher):
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    key = ec.generate_private_key(ec.SECP384R1())
    method, scheme = choose_scheme(key_kind(_spki(key)), [2, 3])
    assert scheme.keyword == "ecdsa-sha256"  # preference order, a hash the peer announced
    with dispatcher.open_signer(scheme, KeyBytes(_pem(key))) as signer:
        data = build_auth(method, scheme, signer, OCTETS)
    assert data[:13] == bytes.fromhex("0c") + bytes.fromhex("300a06082a8648ce3d040302")
    decode_dss_signature(data[13:])  # DER ECDSA-Sig-Value (RFC 7427 section 3, RFC 3279)


def test_no_common_hash_and_eddsa_without_rfc7427():
    ed = key_kind(_spki(ed25519.Ed25519PrivateKey.generate()))
    with pytest.raises(IkeProtocolError, match="announced: sha1") as e:
        choose_scheme(ed, [1])
    assert e.value.notify == NotifyType.AUTHENTICATION_FAILED
    with pytest.raises(IkeProtocolError, match="did not send SIGNATURE_HASH_ALGORITHMS"):
        choose_scheme(ed, None)


def test_verify_failures_are_worded(dispatcher, rsa_key):
    scheme = get_scheme("rsa/pss-sha256")
    with dispatcher.open_signer(scheme, KeyBytes(_pem(rsa_key))) as signer:
        data = build_auth(14, scheme, signer, OCTETS)
    spki = _spki(rsa_key)
    with pytest.raises(IkeProtocolError,
                       match=r"signed with RSA-PSS/SHA-256; we only accept ECDSA/SHA-384"):
        verify_auth(14, data, OCTETS, spki, dispatcher, accepted=["ecdsa-sha384"])
    with pytest.raises(IkeProtocolError, match="does not verify with the public key"):
        verify_auth(14, data, OCTETS + b"x", spki, dispatcher)
    with pytest.raises(IkeProtocolError, match="holds an ECDSA secp256r1 key"):
        verify_auth(14, data, OCTETS, _spki(ec.generate_private_key(ec.SECP256R1())),
                    dispatcher)
    unknown = bytes.fromhex("0b") + bytes.fromhex("300906072a8648ce380403") + b"sig"  # DSA
    with pytest.raises(IkeProtocolError, match="AlgorithmIdentifier 300906072a8648ce380403"):
        verify_auth(14, unknown, OCTETS, spki, dispatcher)
    with pytest.raises(IkeProtocolError, match="too short"):
        verify_auth(14, b"\x40\x30", OCTETS, spki, dispatcher)
    with pytest.raises(IkeProtocolError, match="method 3"):
        verify_auth(3, b"x", OCTETS, spki, dispatcher)
