"""ESP wire format against published vectors and against scapy, an independent implementation.

Vectors (copied from /work/shared/vectors, unchanged):
- vectors/draft_mcgrew_gcm_esp.json: draft-mcgrew-gcm-test-01, AES-GCM ESP with and without ESN
- vectors/rfc7634_chacha20poly1305.json: RFC 7634 Appendix A, ChaCha20-Poly1305 ESP
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation

from ocfpy.crypto.errors import AuthenticationError, InvalidInput, InvalidKey
from ocfpy.esp import framing, packet
from ocfpy.esp.packet import Drop, EspCrypto, EspDropped, parse_header

VECTORS = Path(__file__).parent / "vectors"


@pytest.fixture(autouse=True, params=["compiled", "python"])
def framing_path(request, monkeypatch):
    """Every test here runs on the compiled AEAD framing (when built) and on its pure-Python
    twin (ocfpy/esp/framing.py): the same tests, the same bytes."""
    if request.param == "python":
        monkeypatch.setattr(packet, "seal_frames", framing.seal_frames_py)
        monkeypatch.setattr(packet, "open_frames", framing.open_frames_py)
    elif not framing.COMPILED:
        pytest.skip("the compiled helper ocfpy.esp._framing is not loaded")
    return request.param


def _cases(name: str) -> list[dict]:
    return json.loads((VECTORS / name).read_text())["cases"]


MCGREW = [c for c in _cases("draft_mcgrew_gcm_esp.json") if c["mode"] == "gcm"]


@pytest.mark.parametrize("case", MCGREW, ids=[c["ref"] + (" esn" if c["esn"] else "")
                                              for c in MCGREW])
def test_draft_mcgrew_gcm_vectors(dispatcher, case):
    """Our decapsulation of the draft's packet gives its plaintext, and our encapsulation of
    that plaintext (same IV) gives its packet byte for byte."""
    key = bytes.fromhex(case["key"] + case["salt"])
    spi = int(case["spi"], 16)
    seq = int(case["seq"], 16)
    encr = f"aes{len(key) * 8 - 32}gcm16"
    wire = bytes.fromhex(case["esp_wire"])
    plain = bytes.fromhex(case["plaintext"])
    sa = EspCrypto(dispatcher, spi, encr, None, key, esn=case["esn"])
    payload, nh = sa.decapsulate(wire, seq)
    assert payload + sa.trailer(len(payload), nh) == plain  # the draft pads 1, 2, 3 too
    # The draft's IVs are arbitrary; ours is the sequence number. Seal with the draft's IV
    # through the same session to check AAD and layout.
    aad = bytes.fromhex(case["aad"])
    sealed = sa.cipher.seal(bytes.fromhex(case["iv"]), plain, aad)
    assert wire[:8] + bytes.fromhex(case["iv"]) + sealed == wire


def test_rfc7634_appendix_a(dispatcher):
    case = _cases("rfc7634_chacha20poly1305.json")[0]
    sa = EspCrypto(dispatcher, int(case["spi"], 16), "chacha20poly1305", None,
                   bytes.fromhex(case["keymat"]))
    payload, nh = sa.decapsulate(bytes.fromhex(case["esp_wire"]))
    assert nh == 4 and len(payload) == 84 and payload[0] == 0x45
    assert payload + sa.trailer(len(payload), nh) == bytes.fromhex(case["plaintext"])


# -- scapy, both ways -------------------------------------------------------------------------
SUITES = [
    # (ours: encryption, integrity; scapy: crypt_algo, auth_algo; key sizes)
    ("aes128gcm16", None, "AES-GCM", None, 20, 0),
    ("aes256gcm16", None, "AES-GCM", None, 36, 0),
    ("chacha20poly1305", None, "CHACHA20-POLY1305", None, 36, 0),
    ("aes128", "sha256", "AES-CBC", "SHA2-256-128", 16, 32),
    ("aes256", "sha512", "AES-CBC", "SHA2-512-256", 32, 64),
    ("aes128", "sha1", "AES-CBC", "HMAC-SHA1-96", 16, 20),
]
OUTER = ("192.0.2.1", "192.0.2.2")


def _inner(size: int = 100):
    return IP(src="10.1.0.1", dst="10.2.0.1") / ICMP(id=7, seq=1) / os.urandom(size)


@pytest.mark.parametrize("encap", [False, True], ids=["raw", "udp4500"])
@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("suite", SUITES, ids=[f"{s[0]}-{s[1]}" for s in SUITES])
def test_scapy_interop(dispatcher, suite, esn, encap):
    encr, integ, s_encr, s_auth, klen, ilen = suite
    ekey, ikey = os.urandom(klen), os.urandom(ilen)
    spi = 0x0BADCAFE
    seq_hi = 7 if esn else 0
    nat = UDP(sport=4500, dport=4500) if encap else None
    theirs = SecurityAssociation(
        ESP, spi=spi, crypt_algo=s_encr, crypt_key=ekey, auth_algo=s_auth,
        auth_key=ikey or None, tunnel_header=IP(src=OUTER[0], dst=OUTER[1]),
        nat_t_header=nat, esn_en=esn, esn=seq_hi)
    ours = EspCrypto(dispatcher, spi, encr, integ, ekey, ikey, esn=esn)

    for size in (0, 1, 13, 100, 1400):
        inner = _inner(size)
        # scapy -> ours
        outer = theirs.encrypt(inner, seq_num=size + 1)
        assert (UDP in outer) == encap
        esp_bytes = bytes(outer[UDP].payload) if encap else bytes(outer[ESP])
        payload, nh = ours.decapsulate(esp_bytes, (seq_hi << 32) | (size + 1))
        assert nh == 4 and payload == bytes(inner)
        # ours -> scapy
        seq = (seq_hi << 32) | (size + 2)
        wire = ours.encapsulate(seq, bytes(inner), 4)
        assert parse_header(wire) == (spi, size + 2)
        assert len(wire) == len(bytes(inner)) + ours.overhead(len(bytes(inner)))
        packet = IP(src=OUTER[0], dst=OUTER[1]) / (nat / ESP(wire) if encap else ESP(wire))
        packet = IP(bytes(packet))
        decrypted = theirs.decrypt(packet)
        assert bytes(decrypted) == bytes(inner)


def test_esn_high_bits_are_authenticated_but_not_sent(dispatcher):
    for encr, integ, klen, ilen in (("aes128gcm16", None, 20, 0), ("aes128", "sha256", 16, 32)):
        sa = EspCrypto(dispatcher, 1, encr, integ, os.urandom(klen), os.urandom(ilen), esn=True)
        wire = sa.encapsulate((5 << 32) | 9, b"x" * 20, 4)
        assert wire[4:8] == (9).to_bytes(4, "big")  # only the low half on the wire
        assert sa.decapsulate(wire, (5 << 32) | 9) == (b"x" * 20, 4)
        with pytest.raises(AuthenticationError):
            sa.decapsulate(wire, (6 << 32) | 9)  # wrong inferred high half: ICV fails


@pytest.mark.parametrize("encr,integ,klen,ilen", [("aes128gcm16", None, 20, 0),
                                                  ("aes256", "sha256", 32, 32)])
def test_malformed_packets_are_classified(dispatcher, encr, integ, klen, ilen):
    sa = EspCrypto(dispatcher, 0x42, encr, integ, os.urandom(klen), os.urandom(ilen))
    good = sa.encapsulate(1, b"a" * 40, 4)
    flipped = bytearray(good)
    flipped[20] ^= 1
    items = [(good, 1), (good[:12], 1), (good[:-1], 1), (bytes(flipped), 1), (b"", 0)]
    out = sa.decapsulate_batch(items)
    assert out[0] == (b"a" * 40, 4)
    assert out[1] is Drop.TRUNCATED and out[4] is Drop.TRUNCATED
    assert out[2] in (Drop.TRUNCATED, Drop.AUTH)  # GCM has no block alignment to catch it
    assert out[3] is Drop.AUTH


def test_bad_padding_is_detected(dispatcher):
    """A correctly authenticated packet whose pad bytes are not 1, 2, 3... is dropped."""
    sa = EspCrypto(dispatcher, 0x42, "aes128gcm16", None, os.urandom(20))
    seq = 3
    hdr = (0x42).to_bytes(4, "big") + seq.to_bytes(4, "big")
    iv = seq.to_bytes(8, "big")
    bad_pad = b"P" * 12 + b"\x01\x09" + b"\x02\x04"  # pad 2 bytes: 01 09 instead of 01 02
    wire = hdr + iv + sa.cipher.seal(iv, bad_pad, hdr)
    with pytest.raises(EspDropped) as err:
        sa.decapsulate(wire, seq)
    assert err.value.reason is Drop.BAD_PADDING
    too_long = b"P" * 2 + b"\x09\x04"  # pad length 9 > what is there
    wire = hdr + iv + sa.cipher.seal(iv, too_long, hdr)
    assert sa.decapsulate_batch([(wire, seq)]) == [Drop.BAD_PADDING]


def test_construction_errors_say_what_is_wrong(dispatcher):
    with pytest.raises(InvalidKey, match="20 bytes"):
        EspCrypto(dispatcher, 1, "aes128gcm16", None, b"k" * 16)
    with pytest.raises(InvalidInput, match="needs an integrity"):
        EspCrypto(dispatcher, 1, "aes128", None, b"k" * 16)
    with pytest.raises(InvalidInput, match="AEAD"):
        EspCrypto(dispatcher, 1, "aes128gcm16", "sha256", b"k" * 20, b"i" * 32)
