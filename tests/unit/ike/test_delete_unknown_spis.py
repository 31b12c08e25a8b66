"""A Delete naming SPIs that are not ours (docs/security.md, finding R2). RFC 7296 3.11: a
Delete may list many SPIs, and 1.4.1 lets the receiver ignore those it does not know. Before
the fix each unknown SPI was one INFO log line: one 10 KB INFORMATIONAL from the peer (2,400
SPIs) made 2,400 lines, at the rate the peer sends them. Now: one line per message with the
count and the first few SPIs, and a counter. Known SPIs in the same Delete still go."""

from __future__ import annotations

import logging

from ocfpy.ike import codec
from ocfpy.ike.codec.message import Message, encode
from ocfpy.ike.codec.payloads import DeletePayload
from ocfpy.ike.constants import ExchangeType, PayloadType
from ocfpy.ike.events import ChildSaClosed


def only_sa(engine):
    (sa,) = engine.sas
    return sa


def test_a_delete_of_many_unknown_spis_logs_once(initiator_and_responder, caplog):
    pair = initiator_and_responder(esp=["aes128gcm16"])
    pair.establish()
    sa_i, sa_r = only_sa(pair.i), only_sa(pair.r)
    ours = sa_r.children[0].spi_out  # the SPI the peer receives on: what its Delete names
    our_in = sa_r.children[0].spi_in  # what our answer's Delete names (RFC 7296 1.4.1)
    spis = [(0xA0000000 + k).to_bytes(4, "big") for k in range(2400)] + [ours]
    msg = Message(sa_i.spi_i, sa_i.spi_r, ExchangeType.INFORMATIONAL, sa_r.tasks.peer_mid, False,
                  True, [DeletePayload(3, spis)])
    data = encode(msg, sa_i.crypto)
    assert len(data) < 10000  # within the default max_packet
    caplog.set_level(logging.DEBUG, logger="ocfpy")
    caplog.clear()
    pair.r.receive_datagram(data, ("10.0.0.1", 500), ("10.0.0.2", 500), pair.now)
    lines = [r for r in caplog.records if "unknown" in r.getMessage()]
    assert len(lines) == 1, len(lines)
    assert "2400" in lines[0].getMessage()
    assert pair.r.stats["deletes_unknown_spi"] == 2400
    # the known SPI was deleted and answered (RFC 7296 1.4.1)
    (answer, _, _), = pair.r.datagrams_to_send(pair.now)
    reply = codec.decode(answer)
    reply.decrypt(sa_i.crypto)
    assert reply.get(PayloadType.DELETE).spis == [our_in]
    assert not sa_r.children
    pair.collect()
    assert pair.of_type("r", ChildSaClosed)
