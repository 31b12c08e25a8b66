"""CHILD_SA rekeying as initiator (RFC 7296 1.3.3), composed of a child_create task the way
strongSwan's child_rekey.c wraps child_create.c: the inner task sends N(REKEY_SA) with the old
SA's selectors; this one decides what to delete once the new SA is up, settling a collision
with the peer's rekey of the same SA by the lowest nonce (2.8.1). The responder side is
ChildCreate.process_r, which recognises N(REKEY_SA)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ocfpy.ike.constants import ExchangeType
from ocfpy.ike.tasks.base import Status, Task
from ocfpy.ike.tasks.child_create import ChildCreate
from ocfpy.ike.tasks.delete import ChildDelete

if TYPE_CHECKING:
    from ocfpy.ike.codec.message import Message
    from ocfpy.ike.sa import ChildSa, IkeSa


class ChildRekey(Task):
    exchange = ExchangeType.CREATE_CHILD_SA
    __slots__ = ("old", "create")

    def __init__(self, old: ChildSa):
        self.old = old
        self.create = ChildCreate(in_ike_auth=False, rekey=old)

    def build_i(self, sa: IkeSa, msg: Message) -> None:
        self.create.build_i(sa, msg)

    def abort(self, sa: IkeSa) -> None:
        self.create.abort(sa)

    def process_i(self, sa: IkeSa, msg: Message) -> Status:
        status = self.create.process_i(sa, msg)
        new = self.create.created
        if new is None:
            return status  # the rekey failed; the old SA stays (reported by child_create)
        old = self.old
        old.rekeyed = True
        # The responder installed the new inbound SA before it answered, so we can send on
        # the new SA now, one step, and the Delete of the old one follows (RFC 7296 2.8):
        # that Delete is what lets the responder switch too.
        if old.peer_rekey_nonce is None:
            sa.activate_outbound(new)
            sa.tasks.queue_task(ChildDelete(old.unique_id, "rekeyed"))
        elif min(self.create.ni, self.create.nr) < old.peer_rekey_nonce:
            # both rekeyed it: ours has the lowest nonce, so ours is the redundant one; we
            # never send on it, and switch to the peer's when the peer deletes the old SA
            sa.ctx.out.count("rekey_collisions_lost")
            new.redundant = True
            sa.tasks.queue_task(ChildDelete(new.unique_id, "rekey collision: redundant"))
        else:
            sa.ctx.out.count("rekey_collisions_won")
            sa.activate_outbound(new)
            sa.tasks.queue_task(ChildDelete(old.unique_id, "rekeyed"))
        return status
