"""Which CHILD_SA a new one takes over from when it is not a rekey: a make-before-break
re-establishment (a reload's, engine._reestablish; a peer's reauthentication with
make_before_break) brings up the same child with the same selectors from the same peer under
a new IKE SA while the old IKE SA and its CHILD_SAs still run.

RFC 7296 2.8 leaves the order in which a dataplane takes up a replacing SA to the
implementation; the rule ocfpy applies to a rekey (docs/ike.md *Rekeying*) holds here too:
the responder of the exchange that created the new CHILD_SA does not send on it until the
peer is known to have it, i.e. until a packet authenticated under the new inbound SA has
arrived (IkeEngine.child_sa_inbound) or the old SA is deleted (IkeSa.close /
IkeSa.retire_child), whichever comes first; the old inbound SA keeps accepting for
``rekey_grace`` after its deletion. RFC 4301 4.4.1 (SPD order): both CHILD_SAs have the same
selectors, so the dataplanes resolve the tie in favour of the newest active one."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ocfpy.esp.spec import TrafficSelector
    from ocfpy.ike.sa import ChildSa, IkeSa
    from ocfpy.ike.sa_table import SaTable


def predecessor(table: SaTable, sa: IkeSa, child_name: str,
                local_ts: list[TrafficSelector],
                remote_ts: list[TrafficSelector]) -> ChildSa | None:
    """The CHILD_SA of another live IKE SA of the same connection and peer that a new
    CHILD_SA ``child_name`` of ``sa`` with these selectors re-establishes (the newest one
    sent on), or None. Only SAs that passed IKE_AUTH are looked at: nothing an unauthenticated
    peer sends gets here (add_child runs after the AUTH payload or the SK checksum passed)."""
    found = None
    for other in table.named(sa.name):  # not every SA: a lookup per CHILD_SA set up
        if other is sa or other.is_closed or other.remote[0] != sa.remote[0]:
            continue
        for c in other.children:
            if c.cfg.name == child_name and not c.redundant and c.outbound_active and \
                    c.spec.local_ts == local_ts and c.spec.remote_ts == remote_ts:
                if found is None or c.unique_id > found.unique_id:
                    found = c
    return found


def successors(table: SaTable, unique_id: int,
               exclude: IkeSa) -> list[tuple[IkeSa, ChildSa]]:
    """The CHILD_SAs (with their IKE SAs) that replace CHILD_SA ``unique_id`` of ``exclude``
    from another IKE SA of the same connection (a re-establishment's), oldest first."""
    return [(other, c) for other in table.named(exclude.name)
            if other is not exclude and not other.is_closed
            for c in other.children if c.replaces == unique_id and not c.redundant]
