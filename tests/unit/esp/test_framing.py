"""The ESP framing around the AEAD call (ocfpy/esp/framing.py): the compiled helper and its
pure-Python twin give the same bytes, drops and exceptions for the same inputs, and each is
right on its own: RFC vectors decapsulate through it, scapy reads what it seals, and every
trailer rule of RFC 4303 s. 2.4 is enforced after the tag verified.

The AEAD is the real session of the ESP unit tests' dispatcher (the OpenSSL driver)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.ipsec import ESP, SecurityAssociation

from ocfpy.esp import framing, packet
from ocfpy.esp.packet import Drop, EspCrypto

VECTORS = Path(__file__).parent / "vectors"
DROPS = packet._DROPS
AEADS = [("aes128gcm16", 20), ("aes256gcm16", 36), ("aes128gcm8", 20), ("aes256gcm12", 36),
         ("chacha20poly1305", 36)]

IMPLS = {"python": (framing.seal_frames_py, framing.open_frames_py)}
if framing.COMPILED:
    IMPLS["compiled"] = (framing._C.seal_frames, framing._C.open_frames)


@pytest.fixture(params=["compiled", "python"])
def impl(request):
    """(seal_frames, open_frames) of one implementation; the compiled one when built."""
    if request.param not in IMPLS:
        pytest.skip("the compiled helper ocfpy.esp._framing is not loaded (not built, or "
                    "OCFPY_PURE_PYTHON=1)")
    return IMPLS[request.param]


@pytest.fixture(params=["compiled", "python"])
def esp_path(request, monkeypatch):
    """EspCrypto itself running on one implementation."""
    if request.param not in IMPLS:
        pytest.skip("the compiled helper ocfpy.esp._framing is not loaded (not built, or "
                    "OCFPY_PURE_PYTHON=1)")
    seal, open_ = IMPLS[request.param]
    monkeypatch.setattr(packet, "seal_frames", seal)
    monkeypatch.setattr(packet, "open_frames", open_)
    return request.param


def _sa(dispatcher, encr="aes128gcm16", klen=20, esn=False, spi=0x0BADCAFE):
    return EspCrypto(dispatcher, spi, encr, None, bytes(range(klen)), esn=esn)


def _payloads(rng: random.Random, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        size = rng.choice([0, 1, 2, 3, 4, 5, 19, 20, 63, 64, 1399, 1400, 9000])
        first = rng.choice([0x45, 0x60, 0x00, 0xFF])
        out.append(bytes([first]) + rng.randbytes(size - 1) if size else b"")
    return out


@pytest.mark.skipif(not framing.COMPILED, reason="the compiled helper is not loaded")
@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("encr,klen", AEADS, ids=[a for a, _ in AEADS])
def test_compiled_and_python_agree_byte_for_byte(dispatcher, encr, klen, esn):
    sa = _sa(dispatcher, encr, klen, esn)
    rng = random.Random(f"{encr}{esn}")
    c_seal, c_open = IMPLS["compiled"]
    for first in (1, 0xFFFFFFF0, (7 << 32) | 5, (1 << 64) - 40):
        for align in (4, 1, 16, 256):
            for nh in (framing.NH_FROM_VERSION, 4, 41, 59, 0, 255):
                payloads = _payloads(rng, 24)
                args = (sa._spi_bytes, first, payloads, nh, align, esn)
                wires = c_seal(sa.cipher.seal_batch, *args)
                assert wires == framing.seal_frames_py(sa.cipher.seal_batch, *args)
                items = [(w, first + i) for i, w in enumerate(wires)]
                items += [(w[:rng.randrange(len(w))], first) for w in wires[:8]]  # cut short
                for w in wires[8:12]:  # a flipped byte: the tag fails
                    bad = bytearray(w)
                    bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
                    items.append((bytes(bad), first))
                items.append((wires[0], first + 1))  # a wrong sequence number
                got = c_open(sa.cipher.open_batch, items, esn, sa.icv_size, align, DROPS)
                assert got == framing.open_frames_py(sa.cipher.open_batch, items, esn,
                                                     sa.icv_size, align, DROPS)
                for p, res in zip(payloads, got[:24], strict=True):
                    want_nh = nh if nh != framing.NH_FROM_VERSION else \
                        4 if p and p[0] >> 4 == 4 else 41
                    assert res == (p, want_nh)


def test_layout_header_iv_trailer_and_aad(dispatcher, impl):
    """RFC 4303 s. 2 / 2.4: SPI, seq low, IV = the 64-bit number, padding 1, 2, 3, ...;
    the AAD carries the high half with ESN (RFC 4106 s. 5), which never travels."""
    seal, _ = impl
    for esn in (False, True):
        sa = _sa(dispatcher, esn=esn)
        seq = (3 << 32) | 9 if esn else 9
        (wire,) = seal(sa.cipher.seal_batch, sa._spi_bytes, seq, [b"\x45" + b"p" * 20], -1,
                       4, esn)
        assert wire[:4] == sa._spi_bytes and wire[4:8] == (9).to_bytes(4, "big")
        iv = wire[8:16]
        assert iv == seq.to_bytes(8, "big")
        aad = sa._spi_bytes + (seq.to_bytes(8, "big") if esn else (9).to_bytes(4, "big"))
        plain = sa.cipher.open(iv, wire[16:], aad)
        assert plain == b"\x45" + b"p" * 20 + b"\x01" + bytes((1, 4))  # 21 + 1 + 2 = 24


def test_mcgrew_vectors_open_through_the_framing(dispatcher, impl):
    """draft-mcgrew-gcm-test-01: each published ESP packet opens to its plaintext's payload."""
    _, open_ = impl
    cases = json.loads((VECTORS / "draft_mcgrew_gcm_esp.json").read_text())["cases"]
    n = 0
    for case in (c for c in cases if c["mode"] == "gcm"):
        key = bytes.fromhex(case["key"] + case["salt"])
        sa = EspCrypto(dispatcher, int(case["spi"], 16), f"aes{len(key) * 8 - 32}gcm16", None,
                       key, esn=case["esn"])
        plain = bytes.fromhex(case["plaintext"])
        pad = plain[-2]
        (res,) = open_(sa.cipher.open_batch, [(bytes.fromhex(case["esp_wire"]),
                                               int(case["seq"], 16))],
                       case["esn"], 16, sa.align, DROPS)
        assert res == (plain[:len(plain) - 2 - pad], plain[-1])
        n += 1
    assert n == 16


def test_rfc7634_vector_opens_through_the_framing(dispatcher, impl):
    _, open_ = impl
    case = json.loads((VECTORS / "rfc7634_chacha20poly1305.json").read_text())["cases"][0]
    sa = EspCrypto(dispatcher, int(case["spi"], 16), "chacha20poly1305", None,
                   bytes.fromhex(case["keymat"]))
    wire = bytes.fromhex(case["esp_wire"])
    (res,) = open_(sa.cipher.open_batch, [(wire, int.from_bytes(wire[4:8], "big"))], False, 16,
                   sa.align, DROPS)
    plain = bytes.fromhex(case["plaintext"])
    assert res == (plain[:84], 4)


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
def test_scapy_reads_what_the_framing_seals(dispatcher, esp_path, esn):
    key = os.urandom(20)
    theirs = SecurityAssociation(ESP, spi=0x1234, crypt_algo="AES-GCM", crypt_key=key,
                                 tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"),
                                 esn_en=esn, esn=2 if esn else 0)
    ours = EspCrypto(dispatcher, 0x1234, "aes128gcm16", None, key, esn=esn)
    inner = [bytes(IP(src="10.1.0.1", dst="10.2.0.1") / ICMP() / os.urandom(n))
             for n in (0, 1, 2, 3, 100, 1372)]
    first = (2 << 32) | 40 if esn else 40
    wires = ours.encapsulate_batch(first, inner)
    for i, (w, p) in enumerate(zip(wires, inner, strict=True)):
        pkt = IP(bytes(IP(src="192.0.2.1", dst="192.0.2.2") / ESP(w)))
        assert pkt[ESP].seq == 40 + i
        assert bytes(theirs.decrypt(pkt)) == p
        # and scapy's packets open through ours
        back = theirs.encrypt(IP(p), seq_num=100 + i)
        seq = (2 << 32) | (100 + i) if esn else 100 + i
        assert ours.decapsulate_batch([(bytes(back[ESP]), seq)]) == [(p, 4)]


def test_trailer_rules_after_the_tag(dispatcher, impl):
    """Plaintexts sealed with the SA's key (so the tag passes) whose trailer breaks RFC 4303
    s. 2.4: pad bytes not 1, 2, 3, ..., a pad length beyond the plaintext; the limits (255 pad
    bytes, none at all) still pass."""
    _, open_ = impl
    sa = _sa(dispatcher)
    hdr = sa._spi_bytes + (7).to_bytes(4, "big")
    iv = (7).to_bytes(8, "big")

    def wire(plain: bytes) -> bytes:
        return hdr + iv + sa.cipher.seal(iv, plain, hdr)

    cases = [
        (b"P" * 12 + b"\x01\x09" + b"\x02\x04", Drop.BAD_PADDING),  # 01 09, not 01 02
        (b"P" * 2 + b"\x09\x04", Drop.BAD_PADDING),  # pad length 9 > what is there
        (b"\x00\x00\x03\x04", Drop.BAD_PADDING),  # pad length 3, 2 bytes before it
        (b"\x01\x02\x02\x04", (b"", 4)),  # all padding, an empty payload
        (b"\x00" * 2 + b"\x00\x04", (b"\x00\x00", 4)),  # no padding at all
        (b"\x45\x00\x00" + bytes(range(1, 255)) + b"\x00" + bytes((255, 4)), Drop.BAD_PADDING),
        (b"\x45\x00\x00" + bytes(range(1, 256)) + bytes((255, 41)), (b"\x45\x00\x00", 41)),
        (b"\x01\x02" + b"\x00\x3b", (b"\x01\x02", 59)),  # next header is the caller's to judge
        (b"\x00\x00\xff\x04", Drop.BAD_PADDING),  # pad length 255 > 2
    ]
    items = [(wire(p), 7) for p, _ in cases]
    good = wire(b"\x00\x00\x00\x04")
    items.append((good[:-1] + bytes((good[-1] ^ 1,)), 7))  # tag broken
    items.append((hdr + iv + b"\x00" * 19, 7))  # one short of header + IV + 4 + ICV: truncated
    items.append((hdr + iv + b"\x00" * 21, 7))  # ciphertext not 4-aligned: truncated
    got = open_(sa.cipher.open_batch, items, False, 16, 4, DROPS)
    assert got == [want for _, want in cases] + [Drop.AUTH, Drop.TRUNCATED, Drop.TRUNCATED]


def test_refusals_are_the_same_exceptions(dispatcher, impl):
    """Bad arguments from our own code are refused with the same exception class by both."""
    seal, open_ = impl
    sa = _sa(dispatcher)
    sb, ob = sa.cipher.seal_batch, sa.cipher.open_batch
    spi = sa._spi_bytes
    with pytest.raises(OverflowError):
        seal(sb, spi, (1 << 64) - 1, [b"a", b"b"], -1, 4, False)  # beyond 64 bits
    with pytest.raises(OverflowError):
        seal(sb, spi, -1, [b"a"], -1, 4, False)
    with pytest.raises(TypeError):
        seal(sb, spi, 1, [bytearray(b"a")], -1, 4, False)
    with pytest.raises(ValueError):
        seal(sb, b"abc", 1, [b"a"], -1, 4, False)
    with pytest.raises(ValueError):
        seal(sb, spi, 1, [b"a"], -1, 0, False)
    with pytest.raises(ValueError):
        seal(sb, spi, 1, [b"a"], 256, 4, False)
    with pytest.raises(ValueError, match="results"):
        seal(lambda items: [], spi, 1, [b"a"], -1, 4, False)
    assert seal(sb, spi, (1 << 64) - 1, [b"a"], -1, 4, False)  # the last number is fine
    assert seal(sb, spi, 1, [], -1, 4, False) == []
    with pytest.raises(TypeError):
        open_(ob, [(b"x" * 40,)], False, 16, 4, DROPS)
    with pytest.raises(TypeError):
        open_(ob, [(memoryview(b"x" * 40), 1)], False, 16, 4, DROPS)
    with pytest.raises(OverflowError):
        open_(ob, [(b"x" * 40, 1 << 64)], False, 16, 4, DROPS)
    with pytest.raises(ValueError):
        open_(ob, [(b"x" * 40, 1)], False, 16, 4, DROPS[:2])
    assert open_(ob, [], False, 16, 4, DROPS) == []


def test_the_dispatcher_still_counts_every_packet(dispatcher, esp_path):
    """The framing calls the session's batch methods: ops, bytes and auth failures are counted
    by the session as before (one batch per call)."""
    sa = _sa(dispatcher)
    before = (sa.cipher.ops, sa.cipher.batches, sa.cipher.auth_failures)
    wires = sa.encapsulate_batch(1, [b"\x45" + bytes(99)] * 5)
    forged = wires[0][:20] + bytes((wires[0][20] ^ 1,)) + wires[0][21:]
    res = sa.decapsulate_batch([(w, 1 + i) for i, w in enumerate(wires)] + [(forged, 1)])
    assert res[:5] == [(b"\x45" + bytes(99), 4)] * 5 and res[5] is Drop.AUTH
    assert (sa.cipher.ops - before[0], sa.cipher.batches - before[1],
            sa.cipher.auth_failures - before[2]) == (11, 2, 1)


def test_pure_python_switch(monkeypatch):
    """OCFPY_PURE_PYTHON=1 makes a fresh import choose the Python twin."""
    import importlib

    monkeypatch.setenv("OCFPY_PURE_PYTHON", "1")
    fresh = importlib.reload(framing)
    try:
        assert not fresh.COMPILED and fresh.seal_frames is fresh.seal_frames_py
    finally:
        monkeypatch.delenv("OCFPY_PURE_PYTHON")
        importlib.reload(framing)
