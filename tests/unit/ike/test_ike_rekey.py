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


@pytest.mark.parametrize("who", ["i", "r"])
def test_ike_rekey_moves_the_children(initiator_and_responder, who):
    from ocfpy.ike.events import IkeSaClosed, IkeSaEstablished

    pair = initiator_and_responder(["aes256-sha256-modp2048", "aes128gcm16-prfsha256-x25519"])
    pair.establish()
    (old_i,), (old_r,) = pair.i.sa_list(), pair.r.sa_list()
    engine = pair.i if who == "i" else pair.r
    engine.rekey_ike((old_i if who == "i" else old_r)["id"], pair.now)
    pair.run()
    (new_i,), (new_r,) = pair.i.sa_list(), pair.r.sa_list()
    assert new_i["id"] != old_i["id"] and new_r["id"] != old_r["id"]
    assert (new_i["spi_i"], new_i["spi_r"]) == (new_r["spi_i"], new_r["spi_r"])
    assert new_i["spi_i"] not in (old_i["spi_i"], old_i["spi_r"])
    # the peer that started the rekey is the new SA's initiator (RFC 7296 2.18)
    assert new_i["initiator"] is (who == "i") and new_r["initiator"] is (who == "r")
    assert [c["unique_id"] for c in new_i["children"]] == [c["unique_id"] for c in old_i["children"]]
    for side, old in (("i", old_i), ("r", old_r)):
        (closed,) = pair.of_type(side, IkeSaClosed)
        assert closed.ike_id == old["id"] and closed.reason.startswith("rekeyed")
        assert not pair.of_type(side, ChildSaClosed)
        assert len(pair.of_type(side, IkeSaEstablished)) == 2
    # the new SA works: rekey its child, then delete it all from the other side
    child = pair.of_type("i", ChildSaEstablished)[0].spec.unique_id
    pair.i.rekey_child(child, pair.now)
    pair.run()
    assert len(pair.of_type("r", ChildSaEstablished)) == 2
    pair.r.terminate(new_r["id"], pair.now)
    pair.run()
    assert pair.i.sa_list() == [] == pair.r.sa_list()
    assert pair.i.stats["internal_errors"] == 0 == pair.r.stats["internal_errors"]


def test_ike_rekey_with_another_group_after_invalid_ke(initiator_and_responder):
    from ocfpy.ike.proposals import parse_ike

    pair = initiator_and_responder(["aes128gcm16-prfsha256-x25519-ecp256"])
    pair.establish()
    assert pair.i.sa_list()[0]["algorithms"]["ke"] == "x25519"
    # the responder stops accepting x25519 (as after a config reload)
    (conn,) = pair.r.config.connections.values()
    pair.r.connections._ike_cache[id(conn)] = ([parse_ike("aes128gcm16-prfsha256-ecp256")], [])
    pair.i.rekey_ike(pair.i.sa_list()[0]["id"], pair.now)
    pair.run()
    assert pair.r.stats["ike_rekeyed"] == 1 == pair.i.stats["ike_rekeyed"]
    assert pair.i.sa_list()[0]["algorithms"]["ke"] == "ecp256"
    # CREATE_CHILD_SA refused with INVALID_KE_PAYLOAD, retried, then the old SA deleted
    assert len(pair.wire) == 4 + 6


def test_rekeys_on_their_own_after_rekey_time(initiator_and_responder):
    """An hour of traffic-free time on the hand clock: the IKE initiator rekeys the CHILD_SA
    (ChildConfig.rekey_time, 3600 s less up to 10%) and the IKE SA (Connection.rekey_time)."""
    from ocfpy.ike.events import IkeSaClosed

    pair = initiator_and_responder(i_kw={"rekey_time": 7200.0})
    pair.establish()
    pair.advance(3240.0 - 1)  # 3600 - 10%: nothing may happen before this
    assert len(pair.wire) == 4
    pair.advance(361.0)
    assert len(pair.of_type("r", ChildSaEstablished)) == 2
    assert len(pair.of_type("i", ChildSaClosed)) == 1
    pair.advance(7200.0 - 3600.0)
    (closed,) = pair.of_type("r", IkeSaClosed)
    assert closed.reason.startswith("rekeyed")
    assert pair.i.stats["ike_rekeyed"] == 1 and len(pair.i.sa_list()) == 1
    assert len(pair.i.sa_list()[0]["children"]) == 1


def test_simultaneous_child_rekey_leaves_one_child(initiator_and_responder):
    """Both ends rekey the same CHILD_SA at once (RFC 7296 2.8.1): the SA made with the lowest
    nonce is deleted by its creator, the old one by the other side; one child is left."""
    pair = initiator_and_responder()
    pair.establish()
    old_i = pair.of_type("i", ChildSaEstablished)[0].spec
    old_r = pair.of_type("r", ChildSaEstablished)[0].spec
    pair.i.rekey_child(old_i.unique_id, pair.now)
    pair.r.rekey_child(old_r.unique_id, pair.now)
    pair.run()
    (ci,), (cr,) = pair.i.sa_list()[0]["children"], pair.r.sa_list()[0]["children"]
    assert ci["spi_out"] == cr["spi_in"] and ci["spi_in"] == cr["spi_out"]
    assert int(ci["spi_in"], 16) not in (old_i.inbound.spi, old_i.outbound.spi)
    lost = pair.i.stats["rekey_collisions_lost"] + pair.r.stats["rekey_collisions_lost"]
    won = pair.i.stats["rekey_collisions_won"] + pair.r.stats["rekey_collisions_won"]
    assert (lost, won) == (1, 1)
    assert pair.i.stats["internal_errors"] == 0 == pair.r.stats["internal_errors"]
    # each side saw two new children and closed two (the old one and the redundant one)
    for side in "ir":
        assert len(pair.of_type(side, ChildSaEstablished)) == 3
        assert len(pair.of_type(side, ChildSaClosed)) == 2


def test_simultaneous_ike_rekey_leaves_one_ike_sa(initiator_and_responder):
    from ocfpy.ike.events import IkeSaClosed

    pair = initiator_and_responder()
    pair.establish()
    (old_i,), (old_r,) = pair.i.sa_list(), pair.r.sa_list()
    pair.i.rekey_ike(old_i["id"], pair.now)
    pair.r.rekey_ike(old_r["id"], pair.now)
    pair.run()
    (new_i,), (new_r,) = pair.i.sa_list(), pair.r.sa_list()
    assert (new_i["spi_i"], new_i["spi_r"]) == (new_r["spi_i"], new_r["spi_r"])
    assert new_i["id"] != old_i["id"] and len(new_i["children"]) == 1 == len(new_r["children"])
    lost = pair.i.stats["rekey_collisions_lost"] + pair.r.stats["rekey_collisions_lost"]
    won = pair.i.stats["rekey_collisions_won"] + pair.r.stats["rekey_collisions_won"]
    assert (lost, won) == (1, 1)
    for side in "ir":
        assert not pair.of_type(side, ChildSaClosed)
        assert len(pair.of_type(side, IkeSaClosed)) == 2  # the old one and the redundant one
    assert pair.i.stats["internal_errors"] == 0 == pair.r.stats["internal_errors"]
    # the survivor works
    pair.i.rekey_child(new_i["children"][0]["unique_id"], pair.now)
    pair.run()
    assert len(pair.of_type("r", ChildSaEstablished)) == 2


def test_dataplane_lifetimes_rekey_at_soft_and_delete_at_hard(initiator_and_responder):
    """SaEvent soft -> the CHILD_SA is rekeyed; hard -> the peer gets a Delete for it."""
    pair = initiator_and_responder()
    pair.establish()
    old_i = pair.of_type("i", ChildSaEstablished)[0].spec
    pair.i.child_sa_expired(old_i.unique_id, "soft", pair.now)
    pair.run()
    new_i = pair.of_type("i", ChildSaEstablished)[1].spec
    assert new_i.outbound.spi != old_i.outbound.spi
    assert [e.unique_id for e in pair.of_type("i", ChildSaClosed)] == [old_i.unique_id]

    pair.i.child_sa_expired(new_i.unique_id, "hard", pair.now)
    pair.run()
    assert [e.unique_id for e in pair.of_type("i", ChildSaClosed)] == [old_i.unique_id,
                                                                     new_i.unique_id]
    assert pair.i.sa_list()[0]["children"] == [] and pair.r.sa_list()[0]["children"] == []
    # an event for a CHILD_SA that is already gone (it raced a rekey) changes nothing
    pair.i.child_sa_expired(old_i.unique_id, "soft", pair.now)
    pair.run()
    assert len(pair.of_type("i", ChildSaEstablished)) == 2
