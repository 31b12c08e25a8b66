"""Rekeying (RFC 7296 1.3.2, 1.3.3, 2.8, 2.18) between two engines in memory."""

from __future__ import annotations

import pytest

from ocfpy.ike.events import ChildSaClosed, ChildSaEstablished


@pytest.mark.parametrize("who", ["i", "r"])
@pytest.mark.parametrize("esp", ["aes128gcm16", "aes256-sha256-modp2048"], ids=["nopfs", "pfs"])
def test_child_rekey(initiator_and_responder, who, esp):
    pair = initiator_and_responder(esp=[esp])
    pair.establish()
    old_i = pair.of_type("i", ChildSaEstablished)[0].spec
    old_r = pair.of_type("r", ChildSaEstablished)[0].spec
    engine, old = (pair.i, old_i) if who == "i" else (pair.r, old_r)
    engine.rekey_child(old.unique_id, pair.now)
    pair.run()
    new_i = pair.of_type("i", ChildSaEstablished)[1].spec
    new_r = pair.of_type("r", ChildSaEstablished)[1].spec
    assert new_i.outbound == new_r.inbound and new_i.inbound == new_r.outbound
    assert new_i.outbound.spi not in (old_i.outbound.spi, old_i.inbound.spi)
    assert new_i.outbound.encryption_key != old_i.outbound.encryption_key
    assert new_i.local_ts == old_i.local_ts and new_i.name == old_i.name
    # the old one is gone on both sides, the new one stays
    assert [e.unique_id for e in pair.of_type("i", ChildSaClosed)] == [old_i.unique_id]
    assert [e.unique_id for e in pair.of_type("r", ChildSaClosed)] == [old_r.unique_id]
    assert [c["unique_id"] for c in pair.i.sa_list()[0]["children"]] == [new_i.unique_id]
    assert [c["unique_id"] for c in pair.r.sa_list()[0]["children"]] == [new_r.unique_id]
    # CREATE_CHILD_SA + INFORMATIONAL(Delete): four more messages
    assert len(pair.wire) == 8
    if esp.endswith("modp2048"):
        assert len(pair.wire[4][1]) > 256 + 100  # the request carried a 2048-bit KE value


def test_rekey_of_an_unknown_child_is_refused(initiator_and_responder):
    from ocfpy.ike.errors import IkeUsageError

    pair = initiator_and_responder()
    pair.establish()
    with pytest.raises(IkeUsageError):
        pair.i.rekey_child(999, pair.now)
