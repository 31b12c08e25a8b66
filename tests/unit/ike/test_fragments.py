"""IKE fragmentation (RFC 7383) with the SA's real SK protection (SkCrypto on the OpenSSL
driver): splitting, the SKF bytes, reassembly with loss, reordering, duplicates, forged
fragments (dropped before reassembly), re-fragmentation, and hostile floods within bounds."""

from __future__ import annotations

import os
import struct

import pytest

from ocfpy.crypto.catalogue import get
from ocfpy.ike.codec.buffer import Buffer
from ocfpy.ike.codec.header import Header, pull_header
from ocfpy.ike.codec.sk import SkCrypto
from ocfpy.ike.constants import ExchangeType, PayloadType
from ocfpy.ike.errors import DecodeError
from ocfpy.ike.fragments import (
    FragmentPayload,
    Reassembler,
    chunk_capacity,
    datagram_size,
    open_with,
    parse_fragment_message,
    pull_skf,
    should_fragment,
    split,
)

INNER = os.urandom(5000)  # e.g. IDi, CERT x3, AUTH, SA, TSi, TSr
FIRST = PayloadType.IDi


def _pair(dispatcher, encr="aes256gcm16", integ=None):
    e = get(encr)
    i = get(integ) if integ else None
    k1, k2 = os.urandom(e.keymat_size), os.urandom(e.keymat_size)
    a1, a2 = (os.urandom(i.key_size), os.urandom(i.key_size)) if i else (b"", b"")
    sender = SkCrypto(dispatcher, e, i, (k1, a1), (k2, a2), dispatcher.random)
    receiver = SkCrypto(dispatcher, e, i, (k2, a2), (k1, a1), dispatcher.random)
    return sender, receiver


def _header(mid=1) -> Header:
    return Header(b"I" * 8, b"R" * 8, 0, 0x20, ExchangeType.IKE_AUTH, 0x08, mid, 0)


def _fragments(sender, size=1280, mid=1, inner=INNER):
    return split(_header(mid), FIRST, inner, sender, chunk_capacity(sender, size))


def _feed(r: Reassembler, receiver, raw: bytes, now=0.0):
    h = pull_header(raw)
    return r.add(raw, h.message_id, parse_fragment_message(raw, h), open_with(receiver), now)


@pytest.fixture(params=[("aes256gcm16", None), ("aes256", "sha256")], ids=["gcm", "cbc-hmac"])
def pair(request, dispatcher):
    return _pair(dispatcher, *request.param)


def test_capacity_is_exact(dispatcher):
    gcm, _ = _pair(dispatcher)
    # 1280 - IPv6 40 - UDP 8 - IKE 28 - SKF 8 - IV 8 - ICV 16 = 1172, minus the pad length octet
    assert chunk_capacity(gcm, 1280) == 1171
    assert chunk_capacity(gcm, 1280, ipv6=False, nat_t=True) == 1171 + 20 - 4
    cbc, _ = _pair(dispatcher, "aes256", "sha256")
    # 1280 - 40 - 8 - 28 - 8 - IV 16 - ICV 16 = 1164 -> 1152 whole blocks -> 1151 + pad octet
    assert chunk_capacity(cbc, 1280) == 1151
    with pytest.raises(ValueError):
        chunk_capacity(gcm, 150)


def test_split_bytes_and_sizes(pair):
    sender, _ = pair
    frags = _fragments(sender)
    assert len(frags) == 5  # 5000 bytes in 1171/1151-byte chunks
    for n, raw in enumerate(frags, start=1):
        assert datagram_size(len(raw)) <= 1280
        h = pull_header(raw)
        assert (h.next_payload, h.message_id, h.exchange) == (53, 1, ExchangeType.IKE_AUTH)
        nxt, flags, length, number, total = struct.unpack_from("!BBHHH", raw, 28)
        # RFC 7383 2.5: Next Payload is the first inner payload in fragment 1 only
        assert (nxt, flags, length, number, total) == (FIRST if n == 1 else 0, 0,
                                                         len(raw) - 28, n, 5)


def test_in_order_and_reordered(pair):
    sender, receiver = pair
    frags = _fragments(sender)
    for order in (frags, frags[::-1], frags[2:] + frags[:2]):
        r = Reassembler()  # one per message here: the same message ID is reused
        results = [_feed(r, receiver, raw) for raw in order]
        assert results[:-1] == [None] * 4
        assert results[-1].inner == INNER and results[-1].first_inner == FIRST
        assert r.pending is None and r.held_bytes == 0
        assert r.counters["kept"] == 5 and r.counters["completed"] == 1


def test_loss_then_retransmission_of_all_fragments(pair):
    sender, receiver = pair
    frags = _fragments(sender)
    r = Reassembler()
    for raw in frags[:2] + frags[3:]:
        assert _feed(r, receiver, raw) is None
    assert r.pending == (1, 4, 5)
    # the initiator retransmits every fragment (RFC 7383 2.6.1): duplicates are dropped
    results = [_feed(r, receiver, raw) for raw in frags]
    assert [x for x in results if x is not None][0].inner == INNER
    # 1 and 2 were held already; 4 and 5 come after the message is complete and must not
    # start a new reassembly
    assert r.counters["duplicate"] == 4 and r.counters["kept"] == 5
    assert r.pending is None and r.held_bytes == 0 and r.last_completed == 1


def test_forged_fragments_are_dropped_before_reassembly(pair, dispatcher):
    sender, receiver = pair
    frags = _fragments(sender)
    r = Reassembler()
    _feed(r, receiver, frags[0])
    held = r.held_bytes
    tampered = bytearray(frags[1])
    tampered[60] ^= 1
    assert _feed(r, receiver, bytes(tampered)) is None
    # an attacker without the keys, claiming a larger split to force a restart
    kind = ("aes256gcm16", None) if sender.aead else ("aes256", "sha256")
    attacker, _ = _pair(dispatcher, *kind)
    evil = split(_header(), FIRST, os.urandom(9000), attacker, chunk_capacity(attacker, 1280))
    for raw in evil:
        assert _feed(r, receiver, raw) is None
    assert r.counters["forged"] == 1 + len(evil)
    assert r.pending == (1, 1, 5) and r.held_bytes == held  # nothing kept, nothing lost
    for raw in frags[1:]:
        result = _feed(r, receiver, raw)
    assert result.inner == INNER


def test_refragmentation_with_a_smaller_size(pair):
    sender, receiver = pair
    big = _fragments(sender, size=1500)
    small = _fragments(sender, size=1000)
    assert len(small) > len(big)
    r = Reassembler()
    _feed(r, receiver, big[0])
    _feed(r, receiver, small[0])  # RFC 7383 2.6.2: a larger Total Fragments starts over
    assert r.counters["restarted"] == 1 and r.pending == (1, 1, len(small))
    assert _feed(r, receiver, big[1]) is None  # a late fragment of the older split
    assert r.counters["stale_total"] == 1
    for raw in small[1:]:
        result = _feed(r, receiver, raw)
    assert result.inner == INNER


def test_bounds_on_count_bytes_and_time(pair):
    sender, receiver = pair
    frags = _fragments(sender)
    r = Reassembler(max_fragments=4)  # this message needs 5
    assert _feed(r, receiver, frags[0]) is None and r.counters["too_many"] == 1
    assert r.pending is None
    r = Reassembler(max_bytes=3000)
    for raw in frags:
        assert _feed(r, receiver, raw) is None
    assert r.counters["too_big"] >= 1 and r.held_bytes <= 3000
    r = Reassembler(timeout=30.0)
    _feed(r, receiver, frags[0], now=100.0)
    assert not r.expire(129.0) and r.pending is not None
    _feed(r, receiver, frags[1], now=131.0)  # too late: the first one was dropped
    assert r.counters["expired"] == 1 and r.pending == (1, 1, 5)
    assert r.expire(200.0) and r.pending is None
    # a new message (the next ID) after one completed
    r = Reassembler()
    for raw in frags:
        _feed(r, receiver, raw)
    nxt = _fragments(sender, mid=2)
    assert [_feed(r, receiver, raw) for raw in nxt][-1].message_id == 2


def test_a_hostile_flood_holds_no_memory(dispatcher):
    sender, receiver = _pair(dispatcher)
    calls = []

    def opener(raw, skf):
        calls.append(skf.number)
        return open_with(receiver)(raw, skf)

    r = Reassembler()
    hdr = _header()
    for n in range(2000):
        body = os.urandom(64)
        total = 1 + n % 100  # many claim more fragments than allowed: refused unopened
        skf = FragmentPayload(FIRST, 1 + n % total, total, body, 28)
        raw = b"\x00" * 36 + body
        assert r.add(raw, hdr.message_id, skf, opener, now=float(n)) is None
    assert r.pending is None and r.held_bytes == 0
    assert r.counters["forged"] == len(calls)  # every one opened was refused
    assert r.counters["too_many"] == 2000 - len(calls) > 0
    assert r.counters["kept"] == 0


def test_skf_codec_rejects_bad_numbers():
    for number, total in ((0, 1), (1, 0), (3, 2)):
        with pytest.raises(DecodeError):
            pull_skf(Buffer(struct.pack("!HH", number, total) + b"x"), 0)
    p = pull_skf(Buffer(struct.pack("!HH", 2, 3) + b"body"), 0)
    assert (p.number, p.total, p.body, p.first_inner) == (2, 3, b"body", 0)


def test_fragmentation_policy():
    assert not should_fragment("yes", True, 1000)
    assert should_fragment("yes", True, 1300)
    assert not should_fragment("yes", False, 5000)  # RFC 7383 2.3: only if negotiated
    assert not should_fragment("no", True, 5000)
    assert should_fragment("force", True, 100)
    assert not should_fragment("force", False, 100)
    assert should_fragment("yes", True, 1240, ipv6=True) and not should_fragment(
        "yes", True, 1240, ipv6=False)
    with pytest.raises(ValueError):
        should_fragment("accept", True, 100)
