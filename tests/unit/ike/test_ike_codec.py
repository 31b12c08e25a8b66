"""The wire format: round trips of every payload, the RFC 7634 Appendix B IKEv2 message, and
strict rejection of malformed input (INVALID_SYNTAX / UNSUPPORTED_CRITICAL_PAYLOAD / version)."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import pytest

from ocfpy.crypto import catalogue
from ocfpy.ike import codec
from ocfpy.ike.codec import Buffer, BufferReadError, Writer
from ocfpy.ike.codec.payloads import pull_payloads, push_payloads
from ocfpy.ike.codec.sk import IntegrityCheckFailed, SkCrypto
from ocfpy.ike.constants import ExchangeType, NotifyType, PayloadType
from ocfpy.ike.errors import DecodeError

VEC = {c["name"]: c for c in json.loads(
    (Path(__file__).parent / "data" / "rfc7634_chacha20poly1305.json").read_text())["cases"]}
APPENDIX_B = VEC["RFC 7634 Appendix B: IKEv2 example"]


def sample_payloads() -> list:
    from ocfpy.ike.codec.payloads import (
        AuthPayload,
        CertPayload,
        DeletePayload,
        IdPayload,
        KePayload,
        NoncePayload,
        NotifyPayload,
        RawProposal,
        RawSelector,
        RawTransform,
        SaPayload,
        TsPayload,
        VendorIdPayload,
    )

    return [
        SaPayload([RawProposal(1, 1, b"", [RawTransform(1, 20, 128), RawTransform(2, 5),
                                           RawTransform(4, 31)]),
                   RawProposal(2, 3, b"\x01\x02\x03\x04", [RawTransform(1, 12, 256),
                                                           RawTransform(3, 12),
                                                           RawTransform(5, 0)])]),
        KePayload(31, bytes(range(32))),
        NoncePayload(b"n" * 32),
        IdPayload(2, b"moon.example.org", True),
        IdPayload(1, bytes([10, 0, 0, 2]), False),
        AuthPayload(2, b"a" * 32),
        CertPayload(4, b"certdata"),
        CertPayload(4, b"ca-hash", request=True),
        NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, b"h" * 20),
        NotifyPayload(NotifyType.REKEY_SA, b"", 3, b"\x01\x02\x03\x04"),
        DeletePayload(3, [b"\x00\x00\x01\x00", b"\x00\x00\x02\x00"]),
        DeletePayload(1, []),
        TsPayload([RawSelector(7, 0, 0, 65535, ipaddress.ip_address("10.1.0.0"),
                               ipaddress.ip_address("10.1.255.255")),
                   RawSelector(8, 6, 80, 80, ipaddress.ip_address("2001:db8::"),
                               ipaddress.ip_address("2001:db8::ffff"))], True),
        VendorIdPayload(b"ocfpy"),
    ]


def test_buffer_pull_push_pairs():
    w = Writer()
    w.push_uint8(1)
    w.push_uint16(0x0203)
    w.push_uint32(0x04050607)
    w.push_uint64(0x08090A0B0C0D0E0F)
    w.push_bytes(b"xy")
    b = Buffer(w.getvalue())
    assert (b.pull_uint8(), b.pull_uint16(), b.pull_uint32(), b.pull_uint64(),
            b.pull_bytes(2)) == (1, 0x0203, 0x04050607, 0x08090A0B0C0D0E0F, b"xy")
    assert b.eof()
    with pytest.raises(BufferReadError):
        b.pull_uint8()


def test_payload_chain_round_trip():
    payloads = sample_payloads()
    w = Writer()
    first = push_payloads(w, payloads)
    assert first == PayloadType.SA
    back = pull_payloads(Buffer(w.getvalue()), first)
    assert back == payloads


def test_plain_message_round_trip():
    msg = codec.Message(b"i" * 8, bytes(8), ExchangeType.IKE_SA_INIT, 0, False, True,
                        sample_payloads()[:3])
    raw = codec.encode(msg)
    assert raw[17] == 0x20 and raw[18] == 34 and raw[19] == 0x08  # version, exchange, I flag
    assert int.from_bytes(raw[24:28], "big") == len(raw)
    back = codec.decode(raw)
    assert back.payloads == msg.payloads and back.from_initiator and not back.is_response
    back.check_plain()


def _chacha_crypto(dispatcher) -> SkCrypto:
    t = catalogue.get("chacha20poly1305")
    keymat = bytes.fromhex(APPENDIX_B["keymat"])
    return SkCrypto(dispatcher, t, None, (keymat, b""), (keymat, b""), os.urandom)


def test_rfc7634_appendix_b_decrypt(dispatcher):
    """RFC 7634 Appendix B: an INFORMATIONAL message carrying a Notify inside SK."""
    wire = bytes.fromhex(APPENDIX_B["ike_message_wire"])
    msg = codec.decode(wire)
    assert msg.exchange == ExchangeType.INFORMATIONAL and msg.message_id == 9
    msg.decrypt(_chacha_crypto(dispatcher))
    (n,) = msg.payloads
    assert n.notify_type == NotifyType.SET_WINDOW_SIZE and n.data == b"\x00\x00\x00\x0a"


def test_rfc7634_appendix_b_encrypt(dispatcher):
    crypto = _chacha_crypto(dispatcher)
    crypto._iv = int(APPENDIX_B["iv"], 16) - 1  # our IVs are a counter; start where the RFC is
    from ocfpy.ike.codec.payloads import NotifyPayload

    msg = codec.Message(bytes.fromhex(APPENDIX_B["ike_spi_i"]),
                        bytes.fromhex(APPENDIX_B["ike_spi_r"]), ExchangeType.INFORMATIONAL, 9,
                        False, False, [NotifyPayload(NotifyType.SET_WINDOW_SIZE, b"\0\0\0\x0a")])
    assert codec.encode(msg, crypto).hex() == APPENDIX_B["ike_message_wire"]


@pytest.mark.parametrize("encr,integ", [("aes128gcm16", None), ("aes256", "sha256"),
                                        ("aes128", "sha1"), ("aes256gcm8", None)])
def test_sk_round_trip_and_tamper(dispatcher, encr, integ):
    e, i = catalogue.get(encr), catalogue.get(integ) if integ else None
    ke, ka = os.urandom(e.keymat_size), os.urandom(i.key_size if i else 0)
    a = SkCrypto(dispatcher, e, i, (ke, ka), (ke, ka), os.urandom)
    msg = codec.Message(b"i" * 8, b"r" * 8, ExchangeType.IKE_AUTH, 1, False, True,
                        sample_payloads()[3:6])
    raw = codec.encode(msg, a)
    if e.block_size > 1:
        assert (len(raw) - 28 - 4 - e.iv_size - i.icv_size) % e.block_size == 0
    back = codec.decode(raw)
    back.decrypt(a)
    assert back.payloads == msg.payloads
    for pos in (5, 30, len(raw) // 2, len(raw) - 1):
        bad = bytearray(raw)
        bad[pos] ^= 1
        with pytest.raises((IntegrityCheckFailed, DecodeError)):
            codec.decode(bytes(bad)).decrypt(a)


def _init_raw() -> bytes:
    return codec.encode(codec.Message(b"i" * 8, bytes(8), ExchangeType.IKE_SA_INIT, 0, False,
                                      True, sample_payloads()[:3]))


def test_length_mismatch_and_truncation_are_invalid_syntax():
    raw = _init_raw()
    for bad in (raw[:-1], raw + b"\0", raw[:20]):
        with pytest.raises(DecodeError) as e:
            codec.decode(bad)
        assert e.value.notify == NotifyType.INVALID_SYNTAX


def test_higher_major_version():
    raw = bytearray(_init_raw())
    raw[17] = 0x30
    with pytest.raises(DecodeError) as e:
        codec.decode(bytes(raw))
    assert e.value.notify == NotifyType.INVALID_MAJOR_VERSION and e.value.data == b"\x20"


def _with_extra_payload(critical: bool) -> bytes:
    """IKE_SA_INIT with an unknown payload type 200 appended."""
    w = Writer()
    payloads = sample_payloads()[:3]
    first = push_payloads(w, payloads)
    data = bytearray(w.getvalue())
    # point the last payload (Nonce) at type 200
    offs = 0
    for _ in range(len(payloads) - 1):
        offs += int.from_bytes(data[offs + 2:offs + 4], "big")
    data[offs] = 200
    data += bytes((0, 0x80 if critical else 0, 0, 8)) + b"abcd"
    hdr = bytearray(_init_raw()[:28])
    hdr[16] = first
    hdr[24:28] = (28 + len(data)).to_bytes(4, "big")
    return bytes(hdr + data)


def test_unknown_critical_payload():
    with pytest.raises(DecodeError) as e:
        codec.decode(_with_extra_payload(True))
    assert e.value.notify == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD and e.value.data == b"\xc8"


def test_unknown_noncritical_payload_is_skipped():
    msg = codec.decode(_with_extra_payload(False))
    msg.check_plain()  # the rules ignore it
    assert msg.payloads[-1].TYPE == 200 and msg.get(PayloadType.NONCE) is not None


def test_rules_table_rejects_missing_and_repeated_payloads():
    from ocfpy.ike.codec.payloads import NoncePayload

    payloads = sample_payloads()[:3]
    for bad in (payloads[:2], payloads + [NoncePayload(b"x" * 16)]):
        msg = codec.decode(codec.encode(codec.Message(b"i" * 8, bytes(8),
                                                      ExchangeType.IKE_SA_INIT, 0, False, True,
                                                      bad)))
        with pytest.raises(DecodeError, match="Nonce|NONCE|KE"):
            msg.check_plain()


def test_sa_payload_structure_is_checked():
    raw = _init_raw()
    body = 28 + 4  # first proposal substructure
    for offset, value, what in ((body, 1, "last"), (body + 4, 2, "number"),
                                (body + 2, 0, "length"), (body + 8 + 0, 1, "transform last")):
        bad = bytearray(raw)
        if what == "transform last":
            bad[offset] = 1
        elif what == "length":
            bad[offset:offset + 2] = b"\x00\x05"
        else:
            bad[offset] = value
        with pytest.raises(DecodeError, match="SA payload|proposal|transform"):
            codec.decode(bytes(bad))


def test_nonce_size_bounds():
    from ocfpy.ike.codec.payloads import NoncePayload

    for n in (15, 257):
        w = Writer()
        push_payloads(w, [NoncePayload(b"x" * n)])
        with pytest.raises(DecodeError, match="nonce"):
            pull_payloads(Buffer(w.getvalue()), PayloadType.NONCE)
