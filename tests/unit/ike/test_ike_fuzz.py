"""Fuzzing with mutated valid messages (OpenBSD iked's regress/parser fuzzing, with hypothesis).

The decoder raises nothing but DecodeError; the engine never raises out of receive_datagram and
never hits an internal error: every bad datagram is dropped and counted (or answered)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocfpy.ike import codec
from ocfpy.ike.errors import DecodeError

from .conftest import Pair
from .test_ike_codec import _init_raw


@st.composite
def mutations(draw, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "byte", "cut", "insert", "len"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:  # keep the header length consistent so the payload parser gets the bytes
            if len(data) >= 28:
                data[24:28] = len(data).to_bytes(4, "big")
    return bytes(data)


INIT = _init_raw()


@settings(max_examples=400, deadline=None)
@given(mutations(INIT))
def test_decoder_raises_only_decode_error(data):
    try:
        msg = codec.decode(data)
        msg.check_plain()
    except DecodeError:
        pass


@pytest.fixture(scope="module")
def recorded(dispatcher):
    """The four messages of a real establishment, to mutate."""
    from .conftest import I_ADDR, R_ADDR, make_config

    i_cfg = make_config(I_ADDR, R_ADDR, "moon.example.org", "sun.example.org")
    r_cfg = make_config(R_ADDR, I_ADDR, "sun.example.org", "moon.example.org")
    pair = Pair(i_cfg, r_cfg, dispatcher)
    pair.establish()
    return [w[1] for w in pair.wire], (i_cfg, r_cfg)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_engine_never_raises_on_mutated_messages(dispatcher, recorded, data):
    msgs, (i_cfg, r_cfg) = recorded
    pair = Pair(i_cfg, r_cfg, dispatcher)
    pair.i.initiate("home", pair.now)
    pair.deliver(pair.i, pair.r)
    pair.deliver(pair.r, pair.i)  # both now hold SAs in the middle of a handshake
    which = data.draw(st.integers(0, len(msgs) - 1))
    bad = data.draw(mutations(msgs[which]))
    for engine in (pair.i, pair.r):
        engine.receive_datagram(bad, ("10.0.0.2", 500), ("10.0.0.1", 500), pair.now)
        engine.receive_datagram(bad, ("10.0.0.1", 500), ("10.0.0.2", 500), pair.now)
        assert engine.stats["internal_errors"] == 0
        engine.handle_timer(pair.now + 1000)
        assert engine.stats["internal_errors"] == 0


def test_garbage_is_counted_not_raised(dispatcher, recorded):
    _, (i_cfg, r_cfg) = recorded
    pair = Pair(i_cfg, r_cfg, dispatcher)
    for junk in (b"", b"\x00", b"\xff" * 27, INIT[:-3], b"\x01" * 500):
        pair.r.receive_datagram(junk, ("10.0.0.2", 500), ("10.0.0.1", 500), pair.now)
    assert pair.r.stats["dropped_malformed"] == 5 and pair.r.stats["internal_errors"] == 0
    assert pair.r.datagrams_to_send(pair.now) == []


def _seal_inner(sa, exchange: int, mid: int, first: int, inner: bytes) -> bytes:
    """An encrypted request from ``sa`` carrying arbitrary inner bytes (valid SK, bad inside)."""
    from ocfpy.ike.codec.header import Header, push_header
    from ocfpy.ike.constants import HeaderFlag

    crypto = sa.crypto
    pt = crypto.padded(inner)
    sk_len = crypto.sk_length(len(pt))
    flags = HeaderFlag.INITIATOR if sa.initiator else HeaderFlag.NONE
    h = Header(sa.spi_i, sa.spi_r, 46, 0x20, exchange, int(flags), mid, 28 + sk_len)
    return crypto.seal(push_header(h) + bytes((first, 0)) + sk_len.to_bytes(2, "big"), pt)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_authenticated_but_malformed_inner_payloads(dispatcher, recorded, data):
    """Past the integrity check the parser still meets garbage: answered with INVALID_SYNTAX
    (or the right notify), never an internal error."""
    from ocfpy.ike.codec.payloads import pull_payloads  # noqa: F401 - documents the target
    from ocfpy.ike.constants import ExchangeType

    msgs, (i_cfg, r_cfg) = recorded
    pair = Pair(i_cfg, r_cfg, dispatcher)
    pair.i.initiate("home", pair.now)
    pair.deliver(pair.i, pair.r)
    pair.deliver(pair.r, pair.i)
    pair.i.datagrams_to_send(pair.now)  # the genuine AUTH request never leaves
    (sa,) = pair.i.sas
    first = data.draw(st.sampled_from([35, 36, 39, 33, 44, 45, 41, 42, 47, 0, 46, 200]))
    inner = data.draw(st.binary(max_size=120))
    raw = _seal_inner(sa, ExchangeType.IKE_AUTH, 1, first, inner)
    pair.r.receive_datagram(raw, ("10.0.0.2", 500), ("10.0.0.1", 500), pair.now)
    assert pair.r.stats["internal_errors"] == 0
    assert pair.r.stats["dropped_integrity"] == 0  # it really got past the ICV
    out = pair.r.datagrams_to_send(pair.now)
    assert len(out) <= 1


def test_authenticated_requests_in_the_wrong_state_are_refused(dispatcher, recorded):
    """A second IKE_AUTH on an established SA, or an INFORMATIONAL before IKE_AUTH: answered
    INVALID_SYNTAX, no internal error, and the established SA survives."""
    from ocfpy.ike.codec import Writer, decode
    from ocfpy.ike.codec.payloads import AuthPayload, IdPayload, push_payloads
    from ocfpy.ike.constants import ExchangeType, NotifyType

    _, (i_cfg, r_cfg) = recorded
    pair = Pair(i_cfg, r_cfg, dispatcher)
    pair.establish()
    (sa_i,) = pair.i.sas
    (sa_r,) = pair.r.sas
    w = Writer()
    first = push_payloads(w, [IdPayload(2, b"moon.example.org"), AuthPayload(2, b"x" * 32)])
    raw = _seal_inner(sa_i, ExchangeType.IKE_AUTH, 2, first, w.getvalue())
    pair.r.receive_datagram(raw, ("10.0.0.2", 500), ("10.0.0.1", 500), pair.now)
    (out,) = pair.r.datagrams_to_send(pair.now)
    resp = decode(out[0])
    resp.decrypt(sa_i.crypto)
    assert resp.notify(NotifyType.INVALID_SYNTAX) is not None
    assert pair.r.stats["internal_errors"] == 0 and pair.r.stats["dropped_wrong_state"] == 1
    assert pair.r.sa_list()[0]["state"] == "established"
    # and the responder may not send the initiator an IKE_AUTH request either
    raw = _seal_inner(sa_r, ExchangeType.IKE_AUTH, 0, first, w.getvalue())
    pair.i.receive_datagram(raw, ("10.0.0.1", 500), ("10.0.0.2", 500), pair.now)
    assert pair.i.stats["internal_errors"] == 0 and pair.i.sa_list()[0]["state"] == "established"
