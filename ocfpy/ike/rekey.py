"""Building the IKE SA that replaces another (RFC 7296 1.3.2, 2.18), and handing CHILD_SAs
from an old IKE SA to its successor. The IkeRekey task decides when; this module only builds.
(A rekeyed CHILD_SA is made like any other, by ChildCreate through IkeSa.add_child.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ocfpy.ike import keys as kdf
from ocfpy.ike.codec.sk import SkCrypto
from ocfpy.ike.events import IkeSaEstablished

if TYPE_CHECKING:
    from ocfpy.ike.proposals import Proposal
    from ocfpy.ike.sa import IkeSa


def replacement(old: IkeSa, initiator: bool, spi_i: bytes, spi_r: bytes, chosen: Proposal,
                shared: bytes, ni: bytes, nr: bytes, *, move_children: bool = True) -> IkeSa:
    """The established IKE SA that replaces ``old``, in the table and announced. Unless a
    rekey collision is still to be settled (``move_children=False``), the CHILD_SAs move to it.
    ``initiator``: we initiated the rekey, so we are the new SA's original initiator (2.18)."""
    from ocfpy.ike.sa import IkeSa  # sa imports the tasks, whose IkeRekey imports this module

    ctx = old.ctx
    new = IkeSa(ctx, ctx.table.new_id(), old.conn, initiator, old.local, old.remote, old.last_in)
    new.spi_i, new.spi_r = spi_i, spi_r
    new.set_proposal(chosen)
    # SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), with the old SA's PRF (2.18)
    with ctx.dispatcher.open(old.prf, old.keys.sk_d) as prf:  # type: ignore[attr-defined, union-attr]
        seed = prf.prf(shared + ni + nr)
    new.keys = k = kdf.ike_keys(ctx.dispatcher, new.prf, new.encr, new.integ, seed, ni, nr,  # type: ignore[arg-type]
                                spi_i, spi_r)
    out, inb = ((k.sk_ei, k.sk_ai), (k.sk_er, k.sk_ar)) if initiator else \
        ((k.sk_er, k.sk_ar), (k.sk_ei, k.sk_ai))
    new.crypto = SkCrypto(ctx.dispatcher, new.encr, new.integ, out, inb, ctx.random)  # type: ignore[arg-type]
    new.local_id, new.remote_id = old.local_id, old.remote_id
    new.auth = old.auth  # how the peers authenticated, for sa list
    new.nat_local, new.nat_remote = old.nat_local, old.nat_remote
    new.transition("rekeyed")
    new.established_at = old.last_in
    new.rekey_at = new.rekey_deadline(new.conn.rekey_time, old.last_in)
    if move_children:
        adopt(old, new)
    ctx.table.add(new)
    ctx.out.count("ike_rekeyed")
    ctx.out.emit(IkeSaEstablished(new.id, new.name))
    return new


def adopt(old: IkeSa, new: IkeSa) -> None:
    """``new`` replaces ``old``: the CHILD_SAs move over (no ChildSaClosed: the dataplane keeps
    them, SPIs and sequence numbers unchanged), ``old`` stops rekeying, and both SAs' timers
    are looked at again (the children's rekey deadlines now count for ``new``).

    Queued CHILD_SA work moves with the children: the Delete of a CHILD_SA just rekeyed
    tells a responder to switch to the new one (RFC 7296 2.8) and ends the old inbound SA;
    left on ``old`` it would die with it. ``new`` starts it from its timer
    (IkeSa.next_deadline), after the message that creates ``new`` has left."""
    from ocfpy.ike.tasks.child_rekey import ChildRekey
    from ocfpy.ike.tasks.delete import ChildDelete

    new.children += old.children
    old.children = []
    moving = [t for t in old.tasks.queue if isinstance(t, (ChildDelete, ChildRekey))]
    if moving:
        old.tasks.queue = [t for t in old.tasks.queue if t not in moving]
        new.tasks.queue += moving
    old.replaced_by = new.id
    old.rekey_at = None
    old.ctx.table.touch(old)
    old.ctx.table.touch(new)
