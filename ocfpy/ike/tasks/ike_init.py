"""IKE_SA_INIT (RFC 7296 1.2): proposals, key exchange, nonces, NAT detection (2.23), and the
COOKIE (2.6) and INVALID_KE_PAYLOAD (1.2) retries on the initiator side.

For public-key authentication both sides announce SIGNATURE_HASH_ALGORITHMS (RFC 7427 4; the
responder only when the initiator did), and the responder asks for the initiator's
certificate with CERTREQ (RFC 7296 3.7: the SHA-1 hashes of the CA keys it trusts) when the
connection authenticates the peer by certificate. The initiator's CERTREQ goes in IKE_AUTH.

Nothing in an IKE_SA_INIT response is authenticated, so an error notify in one may be a
spoofer's (RFC 7296 2.21.1, issue 13 finding 4). The initiator therefore:
 - notes NO_PROPOSAL_CHOSEN and other errors and keeps retransmitting its request; they are
   acted on only when the retransmissions give up with no valid response having arrived
   (TaskManager.on_timer), and then end the attempt with the noted notify;
 - follows INVALID_KE_PAYLOAD only to a group it offered, once per group, and keeps the KE
   state of each request sent, so a genuine answer to an earlier request still completes;
 - echoes at most MAX_COOKIES COOKIEs; more are noted and ignored.
What was seen is in ``sa why`` while it waits."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ocfpy.crypto import catalogue
from ocfpy.crypto.catalogue import TransformType
from ocfpy.crypto.errors import InvalidPublicValue
from ocfpy.ike import auth_sig
from ocfpy.ike.certs import CERT_ENCODING_X509_SIGNATURE, certreq_data, requested_cas
from ocfpy.ike.codec.payloads import CertPayload, KePayload, NoncePayload, NotifyPayload, SaPayload
from ocfpy.ike.constants import ExchangeType, NotifyType, PayloadType, notify_name
from ocfpy.ike.errors import DecodeError, IkeProtocolError
from ocfpy.ike.proposals import explain_mismatch, from_raw, select, to_raw
from ocfpy.ike.tasks.base import Status, Task

if TYPE_CHECKING:
    from ocfpy.ike.codec.message import Message
    from ocfpy.ike.sa import IkeSa

log = logging.getLogger(__name__)

NONCE_SIZE = 32
MAX_COOKIES = 3  # COOKIE rounds echoed per attempt (a loop bound, RFC 7296 2.6)
MAX_NOTED = 8  # unprotected errors remembered per attempt (``sa why`` names the first ones)


class IkeInit(Task):
    exchange = ExchangeType.IKE_SA_INIT
    __slots__ = ("cookie", "cookies", "chosen_number", "sent", "noted")

    def __init__(self) -> None:
        self.cookie = b""
        self.cookies = 0  # COOKIE rounds done
        self.chosen_number = 1
        # group -> (KE session, request bytes) of each request sent with another group: a
        # valid answer to one of them completes the exchange (a forged INVALID_KE changed
        # our group, not the responder's answer)
        self.sent: dict[int, tuple[object, bytes]] = {}
        self.noted: list[tuple[int, str]] = []  # unprotected errors seen: (notify, text)

    # -- initiator -----------------------------------------------------------------------
    def build_i(self, sa: IkeSa, msg: Message) -> None:
        group = sa.ke_transform
        if sa.ke is None or sa.ke.transform is not group:
            sa.ke = sa.dispatcher.open(group)
        if not sa.ni:
            sa.ni = sa.ctx.random(NONCE_SIZE)
        if self.cookie:  # RFC 7296 2.6: the COOKIE notify comes first
            msg.payloads.append(NotifyPayload(NotifyType.COOKIE, self.cookie))
        props = [to_raw(p, i + 1) for i, p in enumerate(sa.ike_proposals)]
        msg.payloads += [
            SaPayload(props),
            KePayload(group.group, sa.ke.public_value()),  # type: ignore[arg-type]
            NoncePayload(sa.ni),
        ]
        msg.payloads += sa.natd_payloads(msg.spi_i, msg.spi_r)
        if sa.ctx.options.signature_authentication:
            msg.payloads.append(_hash_algorithms())
        if sa.conn.fragmentation != "no":
            msg.payloads.append(NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED))

    def process_i(self, sa: IkeSa, msg: Message) -> Status:
        cookie = msg.notify(NotifyType.COOKIE)
        if cookie is not None and msg.get(PayloadType.SA) is None:
            if self.cookies >= MAX_COOKIES or not 1 <= len(cookie.data) <= 64:
                return self._note(sa, NotifyType.COOKIE, f"a COOKIE after {self.cookies} "
                                  "COOKIE rounds (ignored)")
            self.cookies += 1
            self.cookie = cookie.data
            log.info("%s: responder demands a COOKIE; retrying", sa.name)
            return Status.NEED_MORE
        invalid_ke = msg.notify(NotifyType.INVALID_KE_PAYLOAD)
        if invalid_ke is not None:
            return self._invalid_ke(sa, invalid_ke)
        for n in msg.notifies():
            if n.notify_type < 16384:
                return self._note(sa, n.notify_type, _peer_error_text(sa, n.notify_type, n.data))
        sa_p, ke_p, nonce_p = (msg.get(PayloadType.SA), msg.get(PayloadType.KE),
                               msg.get(PayloadType.NONCE))
        if sa_p is None or ke_p is None or nonce_p is None:
            return self._note(sa, NotifyType.INVALID_SYNTAX,
                              "an IKE_SA_INIT response without SA, KE or Nonce")
        if ke_p.group != sa.ke_transform.group and ke_p.group in self.sent:
            # the responder answered an earlier request of ours (a forged INVALID_KE had us
            # move on): that request's KE and bytes are the ones this answer completes
            ke, raw = self.sent.pop(ke_p.group)
            if sa.ke is not None:
                sa.ke.close()
            sa.ke, sa.init_request = ke, raw
            sa.ke_transform = ke.transform  # type: ignore[attr-defined]
        if len(sa_p.proposals) != 1:
            return sa.fail(NotifyType.NO_PROPOSAL_CHOSEN,
                           f"the responder returned {len(sa_p.proposals)} proposals, not one")
        chosen = from_raw(sa_p.proposals[0])
        if chosen.unknown or not sa.accepts_ike(chosen):
            return sa.fail(NotifyType.NO_PROPOSAL_CHOSEN,
                           f"the responder chose {chosen}, which we did not offer")
        if ke_p.group != sa.ke_transform.group or chosen.first(TransformType.KE) is not sa.ke_transform:
            return sa.fail(NotifyType.INVALID_KE_PAYLOAD,
                           f"the responder answered with group {ke_p.group}, we sent "
                           f"{sa.ke_transform.group}")
        if not msg.spi_r.strip(b"\x00"):
            return sa.fail(NotifyType.INVALID_SYNTAX, "the responder's SPI is zero")
        sa.spi_r = msg.spi_r
        sa.nr = nonce_p.data
        sa.set_proposal(chosen)
        try:
            shared = sa.ke.shared_secret(ke_p.data)  # type: ignore[union-attr]
        except InvalidPublicValue as exc:
            return sa.fail(NotifyType.INVALID_SYNTAX, f"the responder's KE value is invalid: {exc}")
        sa.process_natd(msg)
        _learn_pubkey(sa, msg)
        sa.derive_keys(shared)
        self.abort(sa)  # the KE sessions of requests that were not answered
        return Status.SUCCESS

    def _invalid_ke(self, sa: IkeSa, n: NotifyPayload) -> Status:
        group = int.from_bytes(n.data[:2], "big") if len(n.data) >= 2 else 0
        ours = [t for p in sa.ike_proposals for t in p.of(TransformType.KE)]
        wanted = next((t for t in ours if t.group == group), None)
        if wanted is None or wanted is sa.ke_transform or group in self.sent:
            # not a group we offered, or one we already sent a KE for: following it could
            # only be a spoofer's downgrade or loop (RFC 7296 2.21.1)
            offered = ", ".join(dict.fromkeys(t.keyword for t in ours))
            return self._note(sa, NotifyType.INVALID_KE_PAYLOAD,
                              f"the responder wants key exchange group {group}, which is not "
                              f"in our proposals ({offered}) or was already tried")
        log.info("%s: responder wants %s instead of %s; retrying", sa.name, wanted,
                 sa.ke_transform)
        if sa.ke is not None:
            self.sent[sa.ke_transform.group] = (sa.ke, sa.init_request)  # type: ignore[union-attr]
        sa.ke_transform = wanted
        sa.ke = None
        return Status.NEED_MORE

    def _note(self, sa: IkeSa, notify: int, text: str) -> Status:
        """An unprotected error: remember it, say so in ``sa why``, keep waiting."""
        # a spoofer may send any number: they are counted, the first MAX_NOTED kept and logged
        kept = len(self.noted) < MAX_NOTED
        if kept:
            self.noted.append((notify, text))
        sa.ctx.out.count("init_errors_noted")
        seen = ", ".join(dict.fromkeys(notify_name(n) for n, _ in self.noted))
        sa.ctx.out.why[sa.name] = (f"waiting for a valid IKE_SA_INIT response; unprotected "
                                   f"answers seen so far: {seen} (latest: {text})")
        log.log(logging.INFO if kept else logging.DEBUG,
                "%s: unprotected %s in an IKE_SA_INIT response noted; still waiting for a "
                "valid one (RFC 7296 2.21.1)", sa.name, notify_name(notify))
        return Status.WAIT

    def act_on_noted(self, sa: IkeSa, retransmits: int) -> bool:
        """Every retransmission went out and no valid response came: the noted error stands
        (the first one that is not a surplus COOKIE) and ends the attempt with that notify,
        instead of "did not answer" and a keyingtries retry: the responder (or a spoofer
        that outlasted every retransmission) did answer. True if the SA failed."""
        errors = [(n, t) for n, t in self.noted if n != NotifyType.COOKIE]
        tries = sa.conn.keyingtries
        if not errors and (not self.noted or not tries or sa.attempt < tries):
            # nothing, or only COOKIEs past MAX_COOKIES (perhaps a forger spent the rounds):
            # the engine's keyingtries retry starts a fresh attempt with fresh COOKIE rounds
            return False
        errors = errors or self.noted
        notify, text = errors[0]
        if notify == NotifyType.COOKIE:
            text = "the responder keeps demanding COOKIEs"
        sa.fail(notify, f"{text} (unprotected; no valid response followed in {retransmits} "
                "retransmits)")
        return True

    def abort(self, sa: IkeSa) -> None:
        for ke, _ in self.sent.values():
            ke.close()  # type: ignore[attr-defined]
        self.sent.clear()

    # -- responder -----------------------------------------------------------------------
    def process_r(self, sa: IkeSa, msg: Message) -> None:
        sa_p, ke_p, nonce_p = (msg.get(PayloadType.SA), msg.get(PayloadType.KE),
                               msg.get(PayloadType.NONCE))
        offered = [from_raw(p) for p in sa_p.proposals]
        offered = [p for p in offered if p.protocol == 1]
        ours = sa.ike_proposals
        chosen = select(offered, ours)
        if chosen is None:
            why = explain_mismatch(offered, ours, what="IKE", backend=sa.dispatcher.backend,
                                   dropped=sa.dropped_ike)
            raise IkeProtocolError(NotifyType.NO_PROPOSAL_CHOSEN, why)
        # prefer the group the initiator already sent, if the chosen proposal allows it
        # (strongSwan does the same, saving a round trip)
        peer_prop = next(p for p in offered if p.number == chosen.number)
        sent = catalogue.by_ike_id(TransformType.KE, ke_p.group)
        ours_ke = {t for p in ours for t in p.of(TransformType.KE)}
        if sent is not None and sent in peer_prop.of(TransformType.KE) and sent in ours_ke:
            chosen.transforms[TransformType.KE] = [sent]
        group = chosen.first(TransformType.KE)
        if ke_p.group != group.group:  # type: ignore[union-attr]
            raise IkeProtocolError(
                NotifyType.INVALID_KE_PAYLOAD,
                f"the initiator sent a key exchange for group {ke_p.group}; we selected {group}",
                group.group.to_bytes(2, "big"))  # type: ignore[union-attr]
        self.chosen_number = chosen.number
        sa.set_proposal(chosen)
        sa.ni = nonce_p.data
        sa.nr = sa.ctx.random(NONCE_SIZE)
        sa.ke = sa.dispatcher.open(group)
        try:
            shared = sa.ke.shared_secret(ke_p.data)
        except InvalidPublicValue as exc:
            raise IkeProtocolError(NotifyType.INVALID_SYNTAX,
                                   f"the initiator's KE value is invalid: {exc}") from None
        sa.process_natd(msg)
        _learn_pubkey(sa, msg)
        sa.derive_keys(shared)

    def build_r(self, sa: IkeSa, msg: Message) -> None:
        msg.payloads += [
            SaPayload([to_raw(sa.proposal, self.chosen_number)]),
            KePayload(sa.ke_transform.group, sa.ke.public_value()),  # type: ignore[arg-type, union-attr]
            NoncePayload(sa.nr),
        ]
        msg.payloads += sa.natd_payloads(msg.spi_i, msg.spi_r)
        if sa.auth.peer_hashes is not None:  # RFC 7427 4: only in answer to the initiator's
            msg.payloads.append(_hash_algorithms())
        if sa.tasks.peer_fragments:  # RFC 7383 2.3: only if the initiator announced it
            msg.payloads.append(NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED))
        if sa.conn.remote.auth == "pubkey":
            anchors = sa.ctx.credentials.certs.anchors_for(sa.conn.remote.cacerts)
            if anchors:
                msg.payloads.append(CertPayload(CERT_ENCODING_X509_SIGNATURE,
                                                certreq_data(anchors), request=True))


def _hash_algorithms() -> NotifyPayload:
    """RFC 7427 4: the hashes we can verify signatures with. Sent whatever the connection's
    auth, as strongSwan does: the peer may authenticate by signature even where we use PSK."""
    return NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, auth_sig.encode_hash_algorithms())


def _learn_pubkey(sa: IkeSa, msg: Message) -> None:
    """The peer's SIGNATURE_HASH_ALGORITHMS (a malformed list counts as none: RFC 7427 does
    not make it an error, and the dedicated methods still work) and CERTREQ hashes."""
    n = msg.notify(NotifyType.SIGNATURE_HASH_ALGORITHMS)
    sa.auth.peer_hashes = None
    if n is not None and sa.ctx.options.signature_authentication:
        try:
            sa.auth.peer_hashes = auth_sig.decode_hash_algorithms(n.data)
        except DecodeError:
            log.info("%s: malformed SIGNATURE_HASH_ALGORITHMS ignored", sa.name)
    # RFC 7383 2.3: both must announce; "no" on our side means we never did
    sa.tasks.peer_fragments = (sa.conn.fragmentation != "no" and msg.notify(
        NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None)
    reqs = [p.data for p in msg.all(PayloadType.CERTREQ)
            if p.encoding == CERT_ENCODING_X509_SIGNATURE]
    sa.auth.peer_certreq = (requested_cas(reqs, sa.ctx.credentials.certs.ca_hashes())
                            if reqs else [])


def _peer_error_text(sa: IkeSa, notify: int, data: bytes) -> str:
    if notify == NotifyType.NO_PROPOSAL_CHOSEN:
        offered = "; ".join(str(p) for p in sa.ike_proposals)
        return (f"the responder accepts none of our IKE proposals ({offered}); "
                "compare with its configured proposals (its log says which transform type differs)")
    return f"the responder answered IKE_SA_INIT with {notify_name(notify)}"
