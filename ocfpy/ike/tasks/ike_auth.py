"""IKE_AUTH (RFC 7296 1.2, 2.15): identities and PSK authentication."""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING

from ocfpy.ike.codec.payloads import AuthPayload, IdPayload, NotifyPayload
from ocfpy.ike.constants import AuthMethod, ExchangeType, NotifyType, PayloadType, notify_name
from ocfpy.ike.errors import IkeProtocolError
from ocfpy.ike.identity import Identity
from ocfpy.ike.keys import psk_auth, signed_octets
from ocfpy.ike.tasks.base import Status, Task

if TYPE_CHECKING:
    from ocfpy.ike.codec.message import Message
    from ocfpy.ike.sa import IkeSa

log = logging.getLogger(__name__)


def _auth_data(sa: IkeSa, psk: bytes, initiator_side: bool, id_body: bytes) -> bytes:
    """AUTH for the side given: initiator signs message 1 + Nr + prf(SK_pi, IDi)."""
    k = sa.keys
    if initiator_side:
        octets = signed_octets(sa.init_request, sa.nr, k.sk_pi, id_body, sa.dispatcher, sa.prf)
    else:
        octets = signed_octets(sa.init_response, sa.ni, k.sk_pr, id_body, sa.dispatcher, sa.prf)
    return psk_auth(sa.dispatcher, sa.prf, psk, octets, sa.ctx.credentials.psk_pad(sa.prf, psk))


class IkeAuth(Task):
    exchange = ExchangeType.IKE_AUTH
    __slots__ = ()

    # -- initiator -----------------------------------------------------------------------
    def build_i(self, sa: IkeSa, msg: Message) -> None:
        sa.local_id = sa.configured_local_id()
        idi = IdPayload(sa.local_id.id_type, sa.local_id.data, True)
        msg.payloads.append(idi)
        if sa.conn.remote.id is not None:
            rid = Identity.parse(sa.conn.remote.id)
            msg.payloads.append(IdPayload(rid.id_type, rid.data, False))
        psk = sa.ctx.credentials.psk_for(sa.local_id, sa.configured_remote_id())
        if psk is None:
            # sending nothing useful; fail now with a clear reason rather than after a round trip
            raise IkeProtocolError(NotifyType.AUTHENTICATION_FAILED,
                                   f"no pre-shared key configured for {sa.local_id} <-> "
                                   f"{sa.conn.remote.id or '%any'}")
        msg.payloads.append(AuthPayload(AuthMethod.SHARED_KEY_MIC,
                                        _auth_data(sa, psk, True, idi.body)))
        msg.payloads.append(NotifyPayload(NotifyType.INITIAL_CONTACT))

    def process_i(self, sa: IkeSa, msg: Message) -> Status:
        for n in msg.notifies():
            if n.notify_type == NotifyType.AUTHENTICATION_FAILED:
                return sa.fail(n.notify_type, "the responder rejected our authentication "
                               "(AUTHENTICATION_FAILED): check that both sides use the same "
                               "pre-shared key and that our identity "
                               f"{sa.local_id} is the one it expects")
            if n.notify_type < 16384 and n.notify_type not in _CHILD_ERRORS:
                return sa.fail(n.notify_type, f"the responder answered IKE_AUTH with "
                               f"{notify_name(n.notify_type)}")
        idr, auth = msg.get(PayloadType.IDr), msg.get(PayloadType.AUTH)
        if idr is None or auth is None:
            return sa.fail(NotifyType.INVALID_SYNTAX, "IKE_AUTH response lacks IDr or AUTH")
        peer = Identity(idr.id_type, idr.data)
        want = sa.configured_remote_id()
        if want is not None and not want.matches(peer):
            return sa.fail(NotifyType.AUTHENTICATION_FAILED,
                           f"the responder identified as {peer}, we expect {want}")
        if auth.method != AuthMethod.SHARED_KEY_MIC:
            return sa.fail(NotifyType.AUTHENTICATION_FAILED,
                           f"the responder authenticates with method {auth.method}; "
                           "we only accept a pre-shared key (2)")
        psk = sa.ctx.credentials.psk_for(sa.local_id, peer)
        if psk is None or not hmac.compare_digest(_auth_data(sa, psk, False, idr.body), auth.data):
            return sa.fail(NotifyType.AUTHENTICATION_FAILED,
                           f"the responder's AUTH payload does not verify with our pre-shared key "
                           f"for {sa.local_id} <-> {peer}: the keys differ")
        sa.remote_id = peer
        sa.established()
        return Status.SUCCESS

    # -- responder -----------------------------------------------------------------------
    def process_r(self, sa: IkeSa, msg: Message) -> None:
        idi, auth = msg.get(PayloadType.IDi), msg.get(PayloadType.AUTH)
        if auth is None:
            raise IkeProtocolError(NotifyType.AUTHENTICATION_FAILED,
                                   "the initiator sent no AUTH payload (EAP is not supported)")
        peer = Identity(idi.id_type, idi.data)
        idr = msg.get(PayloadType.IDr)
        wanted_local = Identity(idr.id_type, idr.data) if idr is not None else None
        sa.choose_connection_by_ids(peer, wanted_local)
        if auth.method != AuthMethod.SHARED_KEY_MIC:
            raise IkeProtocolError(NotifyType.AUTHENTICATION_FAILED,
                                   f"{peer} authenticates with method {auth.method}; "
                                   "we only accept a pre-shared key (2)")
        sa.local_id = sa.configured_local_id()
        psk = sa.ctx.credentials.psk_for(sa.local_id, peer)
        if psk is None:
            raise IkeProtocolError(NotifyType.AUTHENTICATION_FAILED,
                                   f"no pre-shared key configured for {sa.local_id} <-> {peer}")
        if not hmac.compare_digest(_auth_data(sa, psk, True, idi.body), auth.data):
            raise IkeProtocolError(NotifyType.AUTHENTICATION_FAILED,
                                   f"{peer}'s AUTH payload does not verify with our pre-shared "
                                   "key: the keys differ")
        sa.remote_id = peer

    def build_r(self, sa: IkeSa, msg: Message) -> None:
        idr = IdPayload(sa.local_id.id_type, sa.local_id.data, False)
        psk = sa.ctx.credentials.psk_for(sa.local_id, sa.remote_id)
        msg.payloads.append(idr)
        msg.payloads.append(AuthPayload(AuthMethod.SHARED_KEY_MIC,
                                        _auth_data(sa, psk, False, idr.body)))  # type: ignore[arg-type]
        sa.established()


_CHILD_ERRORS = {NotifyType.NO_PROPOSAL_CHOSEN, NotifyType.TS_UNACCEPTABLE,
                 NotifyType.SINGLE_PAIR_REQUIRED, NotifyType.INTERNAL_ADDRESS_FAILURE,
                 NotifyType.FAILED_CP_REQUIRED, NotifyType.INVALID_SELECTORS,
                 NotifyType.NO_ADDITIONAL_SAS}
