"""IKE SA rekeying with CREATE_CHILD_SA (RFC 7296 1.3.2, 2.18): a new IKE SA with new SPIs,
SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), the CHILD_SAs move over, and the rekey
initiator deletes the old IKE SA. The peer that starts the rekey is the new SA's initiator."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ocfpy.crypto import catalogue
from ocfpy.crypto.catalogue import TransformType
from ocfpy.crypto.errors import InvalidPublicValue
from ocfpy.ike import rekey
from ocfpy.ike.codec.payloads import KePayload, NoncePayload, SaPayload
from ocfpy.ike.constants import ExchangeType, NotifyType, PayloadType, notify_name
from ocfpy.ike.errors import IkeProtocolError
from ocfpy.ike.proposals import accepts, explain_mismatch, from_raw, select, to_raw
from ocfpy.ike.tasks.base import Status, Task
from ocfpy.ike.tasks.ike_init import NONCE_SIZE

if TYPE_CHECKING:
    from ocfpy.crypto.catalogue import Transform
    from ocfpy.ike.codec.message import Message
    from ocfpy.ike.sa import IkeSa

log = logging.getLogger(__name__)


class IkeRekey(Task):
    exchange = ExchangeType.CREATE_CHILD_SA
    __slots__ = ("group", "ke", "ni", "nr", "spi", "chosen", "retries", "shared")

    def __init__(self, group: Transform | None = None, retries: int = 0):
        self.group = group
        self.ke = None
        self.ni = b""
        self.nr = b""
        self.spi = b""
        self.chosen = None
        self.retries = retries
        self.shared = b""

    # -- initiator -----------------------------------------------------------------------
    def build_i(self, sa: IkeSa, msg: Message) -> None:
        group = self.group or sa.ke_transform
        self.ke = sa.dispatcher.open(group)
        self.ni = sa.ctx.random(NONCE_SIZE)
        self.spi = sa.ctx.spis.ike()
        props = [to_raw(p, i + 1, self.spi) for i, p in enumerate(sa.ike_proposals)]
        msg.payloads += [SaPayload(props), NoncePayload(self.ni),
                         KePayload(group.group, self.ke.public_value())]  # type: ignore[arg-type]

    def process_i(self, sa: IkeSa, msg: Message) -> Status:
        try:
            return self._process_i(sa, msg)
        finally:
            if self.ke is not None:
                self.ke.close()
                self.ke = None

    def _process_i(self, sa: IkeSa, msg: Message) -> Status:
        invalid_ke = msg.notify(NotifyType.INVALID_KE_PAYLOAD)
        if invalid_ke is not None and len(invalid_ke.data) >= 2 and self.retries < 2:
            wanted = catalogue.by_ike_id(TransformType.KE, int.from_bytes(invalid_ke.data[:2], "big"))
            ours = {t for p in sa.ike_proposals for t in p.of(TransformType.KE)}
            if wanted in ours:
                sa.tasks.queue_task(IkeRekey(wanted, self.retries + 1))
                return Status.SUCCESS
        for n in msg.notifies():
            if n.notify_type < 16384:
                return self._failed(sa, n.notify_type, f"IKE SA rekey refused by the peer: "
                                    f"{notify_name(n.notify_type)}")
        sa_p, nonce, ke_p = (msg.get(PayloadType.SA), msg.get(PayloadType.NONCE),
                             msg.get(PayloadType.KE))
        if sa_p is None or nonce is None or ke_p is None or len(sa_p.proposals) != 1:
            return self._failed(sa, NotifyType.INVALID_SYNTAX,
                                "IKE SA rekey answer lacks SA, Nonce or KE")
        chosen = from_raw(sa_p.proposals[0])
        if chosen.protocol != 1 or len(chosen.spi) != 8 or chosen.unknown or \
                not accepts(chosen, sa.ike_proposals) or \
                chosen.first(TransformType.KE) is not self.ke.transform or \
                ke_p.group != self.ke.transform.group:  # type: ignore[union-attr]
            return self._failed(sa, NotifyType.NO_PROPOSAL_CHOSEN,
                                f"IKE SA rekey: the peer chose {chosen}, not one we offered")
        try:
            shared = self.ke.shared_secret(ke_p.data)  # type: ignore[union-attr]
        except InvalidPublicValue as exc:
            return self._failed(sa, NotifyType.INVALID_SYNTAX,
                                f"IKE SA rekey: the peer's KE value is invalid: {exc}")
        from ocfpy.ike.tasks.delete import IkeDelete

        peer = sa.peer_rekey
        ours = rekey.replacement(sa, True, self.spi, chosen.spi, chosen, shared, self.ni,
                                 nonce.data, move_children=peer is None)
        if peer is not None:
            # both ends rekeyed this IKE SA at once (RFC 7296 2.8.1): the new SA made with the
            # lowest of the four nonces is redundant and its creator deletes it; the winner
            # deletes the old SA
            peer_sa, peer_nonce = peer
            if min(self.ni, nonce.data) < peer_nonce:
                sa.ctx.out.count("rekey_collisions_lost")
                rekey.adopt(sa, peer_sa)
                ours.tasks.queue_task(IkeDelete("rekey collision: redundant"))
                ours.tasks.initiate(ours, sa.last_in)  # its timer is armed: the table has it
                return Status.SUCCESS
            sa.ctx.out.count("rekey_collisions_won")
            rekey.adopt(sa, ours)
        sa.tasks.queue.clear()  # what was queued on the old SA is moot; the new one carries on
        sa.tasks.queue_task(IkeDelete("rekeyed"))
        return Status.SUCCESS

    def abort(self, sa: IkeSa) -> None:
        # our SPI for the new SA was never entered in the table: nothing to give back there
        if self.ke is not None:
            self.ke.close()
            self.ke = None

    def _failed(self, sa: IkeSa, notify: int, text: str) -> Status:
        """The old SA stays usable; a failed rekey is reported, not fatal (RFC 7296 2.21).
        If the peer's own rekey of it succeeded meanwhile, that new SA takes over."""
        if sa.peer_rekey is not None:
            rekey.adopt(sa, sa.peer_rekey[0])
            return Status.SUCCESS
        sa.ctx.out.record_failure(sa.name, notify, text)
        return Status.SUCCESS

    # -- responder -----------------------------------------------------------------------
    def process_r(self, sa: IkeSa, msg: Message) -> None:
        sa_p, nonce, ke_p = (msg.get(PayloadType.SA), msg.get(PayloadType.NONCE),
                             msg.get(PayloadType.KE))
        if sa.replaced_by is not None:
            raise IkeProtocolError(NotifyType.TEMPORARY_FAILURE,
                                   "this IKE SA is already rekeyed (RFC 7296 2.25)")
        if ke_p is None:
            raise IkeProtocolError(NotifyType.INVALID_SYNTAX, "IKE SA rekey without KE payload")
        offered = [p for p in (from_raw(r) for r in sa_p.proposals)
                   if p.protocol == 1 and len(p.spi) == 8]
        ours = sa.ike_proposals
        chosen = select(offered, ours)
        if chosen is None:
            raise IkeProtocolError(NotifyType.NO_PROPOSAL_CHOSEN,
                                   "IKE SA rekey: " + explain_mismatch(offered, ours))
        peer_prop = next(p for p in offered if p.number == chosen.number)
        sent = catalogue.by_ike_id(TransformType.KE, ke_p.group)
        if sent is not None and sent in peer_prop.of(TransformType.KE) and \
                any(sent in p.of(TransformType.KE) for p in ours):
            chosen.transforms[TransformType.KE] = [sent]
        group = chosen.first(TransformType.KE)
        if ke_p.group != group.group:  # type: ignore[union-attr]
            raise IkeProtocolError(NotifyType.INVALID_KE_PAYLOAD,
                                   f"IKE SA rekey: we selected {group}, the peer sent group "
                                   f"{ke_p.group}", group.group.to_bytes(2, "big"))  # type: ignore[union-attr]
        self.ke = sa.dispatcher.open(group)
        try:
            self.shared = self.ke.shared_secret(ke_p.data)
        except InvalidPublicValue as exc:
            raise IkeProtocolError(NotifyType.INVALID_SYNTAX, f"invalid KE value: {exc}") from None
        self.ni = nonce.data
        self.chosen = chosen

    def build_r(self, sa: IkeSa, msg: Message) -> None:
        self.nr = sa.ctx.random(NONCE_SIZE)
        self.spi = sa.ctx.spis.ike()
        msg.payloads += [SaPayload([to_raw(self.chosen, self.chosen.number, self.spi)]),  # type: ignore[arg-type]
                         NoncePayload(self.nr),
                         KePayload(self.ke.transform.group, self.ke.public_value())]  # type: ignore[union-attr]
        # our own rekey of this SA in flight: a collision, settled when our answer arrives
        collision = sa.tasks.out is not None and any(isinstance(t, IkeRekey)
                                                     for t in sa.tasks.active)
        new = rekey.replacement(sa, False, self.chosen.spi, self.spi, self.chosen,  # type: ignore[union-attr]
                                self.shared, self.ni, self.nr, move_children=not collision)
        if collision:
            sa.peer_rekey = (new, min(self.ni, self.nr))
        self.ke.close()  # type: ignore[union-attr]
        self.ke = None


class CreateChildSa(Task):
    """Responder for CREATE_CHILD_SA: an IKE SA rekey when the SA payload is for IKE,
    otherwise a new or rekeyed CHILD_SA."""

    exchange = ExchangeType.CREATE_CHILD_SA
    __slots__ = ("inner",)

    def __init__(self) -> None:
        self.inner: Task | None = None

    def process_r(self, sa: IkeSa, msg: Message) -> None:
        from ocfpy.ike.tasks.child_create import ChildCreate

        sa_p = msg.get(PayloadType.SA)
        if sa_p is not None and sa_p.proposals and all(p.protocol == 1 for p in sa_p.proposals):
            self.inner = IkeRekey()
        else:
            self.inner = ChildCreate(in_ike_auth=False)
        self.inner.process_r(sa, msg)

    def build_r(self, sa: IkeSa, msg: Message) -> None:
        if self.inner is not None:
            self.inner.build_r(sa, msg)

    def abort(self, sa: IkeSa) -> None:
        if self.inner is not None:
            self.inner.abort(sa)
