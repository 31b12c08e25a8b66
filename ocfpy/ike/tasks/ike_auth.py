"""IKE_AUTH (RFC 7296 1.2, 2.15): identities, and authentication by pre-shared key or by a
signature with a certificate (RFC 7296 3.6-3.8, RFC 7427), chosen per side: what we send
follows ``local.auth``, what we accept follows ``remote.auth``, so PSK one way and a
certificate the other works (swanctl allows it).

Payload order, RFC 7296 1.2: IDi, [CERT+], [CERTREQ], [IDr], AUTH from the initiator; IDr,
[CERT+], AUTH from the responder. The CERTs are our end-entity certificate then the
intermediates up to (not including) the root, chosen by the CA hashes of the peer's CERTREQ."""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization

from ocfpy.ike import certs as ikecerts
from ocfpy.ike import pubkey
from ocfpy.ike.codec.payloads import AuthPayload, CertPayload, IdPayload, NotifyPayload
from ocfpy.ike.constants import (
    AuthMethod,
    ExchangeType,
    IdType,
    NotifyType,
    PayloadType,
    notify_name,
)
from ocfpy.ike.errors import IkeProtocolError
from ocfpy.ike.identity import Identity
from ocfpy.ike.keys import psk_auth, signed_octets
from ocfpy.ike.tasks.base import Status, Task

if TYPE_CHECKING:
    from ocfpy.ike.codec.message import Message
    from ocfpy.ike.sa import IkeSa

log = logging.getLogger(__name__)

X509 = ikecerts.CERT_ENCODING_X509_SIGNATURE


def _octets(sa: IkeSa, initiator_side: bool, id_body: bytes) -> bytes:
    """What the side given signs (RFC 7296 2.15): the initiator its message 1 + Nr +
    prf(SK_pi, IDi'), the responder its message 2 + Ni + prf(SK_pr, IDr')."""
    k = sa.keys
    if initiator_side:
        return signed_octets(sa.init_request, sa.nr, k.sk_pi, id_body, sa.dispatcher, sa.prf)
    return signed_octets(sa.init_response, sa.ni, k.sk_pr, id_body, sa.dispatcher, sa.prf)


def _auth_data(sa: IkeSa, psk: bytes, initiator_side: bool, id_body: bytes) -> bytes:
    """PSK AUTH for the side given: prf(prf(PSK, "Key Pad for IKEv2"), octets)."""
    return psk_auth(sa.dispatcher, sa.prf, psk, _octets(sa, initiator_side, id_body),
                    sa.ctx.credentials.psk_pad(sa.prf, psk))


def _fail(reason: str) -> IkeProtocolError:
    return IkeProtocolError(NotifyType.AUTHENTICATION_FAILED, reason)


# -- what we send ----------------------------------------------------------------------------------
def _our_cert(sa: IkeSa) -> pubkey.LocalCert:
    """The certificate to authenticate with: among the connection's (``local.certs``), one
    that holds our configured identity, preferring one under a CA the peer asked for."""
    store = sa.ctx.credentials.certs
    cands = store.local_for(sa.conn.local.certs)
    if not cands:
        raise _fail("auth = \"pubkey\" but we have no certificate with a private key"
                    + (f" among certs = {sa.conn.local.certs}" if sa.conn.local.certs else
                       " (x509/ and private/ beside the configuration)"))
    if sa.conn.local.id is not None:
        me = Identity.parse(sa.conn.local.id)
        fitting = [c for c in cands if store.holds_identity(c, me.id_type, me.data)]
        if not fitting:
            raise _fail(f"our identity {me} is in none of our certificates ("
                        + "; ".join(f"{c.path}: {ikecerts.dn(c.certificate.subject)}, SANs: "
                                    f"{', '.join(ikecerts.subject_alt_names(c.certificate)) or 'none'}"
                                    for c in cands) + ")")
        cands = fitting
    chosen = ikecerts.choose_chain([c.chain for c in cands], sa.auth.peer_certreq)
    return next(c for c in cands if c.chain is chosen)


def _local_identity(sa: IkeSa, cred: pubkey.LocalCert | None) -> Identity:
    """The configured ID; without one, with a certificate its subject DN (ID_DER_ASN1_DN,
    strongSwan's default), else our IP address."""
    if cred is not None and sa.conn.local.id is None:
        return Identity(IdType.DER_ASN1_DN,
                        cred.certificate.subject.public_bytes(serialization.Encoding.DER))
    return sa.configured_local_id()


def _our_payloads(sa: IkeSa, cred: pubkey.LocalCert | None) -> list[CertPayload]:
    if cred is None:
        return []
    sa.auth.local_subject = ikecerts.dn(cred.certificate.subject)
    return [CertPayload(X509, der) for der in cred.chain.cert_payloads()]


def _our_auth(sa: IkeSa, cred: pubkey.LocalCert | None, initiator_side: bool,
              id_body: bytes, peer: Identity | None) -> AuthPayload:
    if cred is None:
        psk = sa.ctx.credentials.psk_for(sa.local_id, peer)
        if psk is None:
            # sending nothing useful; fail now with a clear reason rather than after a round trip
            raise _fail(f"no pre-shared key configured for {sa.local_id} <-> "
                        f"{peer or sa.conn.remote.id or '%any'}")
        sa.auth.local_method = AuthMethod.SHARED_KEY_MIC
        return AuthPayload(AuthMethod.SHARED_KEY_MIC, _auth_data(sa, psk, initiator_side, id_body))
    method, scheme, data, driver = pubkey.sign(sa.ctx.credentials.certs, cred,
                                               sa.auth.peer_hashes, sa.dispatcher,
                                               _octets(sa, initiator_side, id_body))
    sa.auth.local_method, sa.auth.local_scheme, sa.auth.signer = method, scheme, driver
    return AuthPayload(method, data)


# -- what we accept --------------------------------------------------------------------------------
def _check_peer(sa: IkeSa, msg: Message, id_p: IdPayload, auth: AuthPayload, peer: Identity,
                peer_is_initiator: bool) -> None:
    """Authenticate the peer as ``remote.auth`` says; AUTHENTICATION_FAILED with the reason."""
    label = "IDi" if peer_is_initiator else "IDr"
    remote = sa.conn.remote
    if remote.auth == "psk":
        if auth.method != AuthMethod.SHARED_KEY_MIC:
            raise _fail(f"{peer} authenticates with {pubkey.method_text(auth.method)}; this "
                        "connection expects a pre-shared key (remote auth = \"psk\")")
        psk = sa.ctx.credentials.psk_for(sa.local_id, peer)
        if psk is None:
            raise _fail(f"no pre-shared key configured for {sa.local_id} <-> {peer}")
        if not hmac.compare_digest(_auth_data(sa, psk, peer_is_initiator, id_p.body), auth.data):
            raise _fail(f"{peer}'s AUTH payload does not verify with our pre-shared key for "
                        f"{sa.local_id} <-> {peer}: the keys differ")
        sa.auth.remote_method = AuthMethod.SHARED_KEY_MIC
        return
    certs = [p.data for p in msg.all(PayloadType.CERT) if p.encoding == X509]
    v, scheme = pubkey.verify_peer(
        sa.ctx.credentials.certs, certs, auth.method, auth.data,
        _octets(sa, peer_is_initiator, id_p.body), cacerts=remote.cacerts,
        signatures=remote.signatures, peer_id=(id_p.id_type, id_p.data), id_label=label,
        now=sa.ctx.credentials.now(), dispatcher=sa.dispatcher,
        max_certs=sa.ctx.options.max_peer_certs,
        max_verifications=sa.ctx.options.max_chain_verifications)
    sa.auth.remote_method, sa.auth.remote_scheme = auth.method, scheme
    sa.auth.peer_subject = ikecerts.dn(v.chain[0].subject)
    sa.auth.revocation = v.revocation


class IkeAuth(Task):
    exchange = ExchangeType.IKE_AUTH
    __slots__ = ()

    # -- initiator -----------------------------------------------------------------------
    def build_i(self, sa: IkeSa, msg: Message) -> None:
        cred = _our_cert(sa) if sa.conn.local.auth == "pubkey" else None
        sa.local_id = _local_identity(sa, cred)
        idi = IdPayload(sa.local_id.id_type, sa.local_id.data, True)
        msg.payloads.append(idi)
        msg.payloads += _our_payloads(sa, cred)
        if sa.conn.remote.auth == "pubkey":
            anchors = sa.ctx.credentials.certs.anchors_for(sa.conn.remote.cacerts)
            if anchors:
                msg.payloads.append(CertPayload(X509, ikecerts.certreq_data(anchors),
                                                request=True))
        if sa.conn.remote.id is not None:
            rid = Identity.parse(sa.conn.remote.id)
            msg.payloads.append(IdPayload(rid.id_type, rid.data, False))
        msg.payloads.append(_our_auth(sa, cred, True, idi.body, sa.configured_remote_id()))
        msg.payloads.append(NotifyPayload(NotifyType.INITIAL_CONTACT))

    def process_i(self, sa: IkeSa, msg: Message) -> Status:
        for n in msg.notifies():
            if n.notify_type == NotifyType.AUTHENTICATION_FAILED:
                how = ("that both sides use the same pre-shared key"
                       if sa.conn.local.auth == "psk" else
                       "that the responder trusts the CA of our certificate "
                       f"'{sa.auth.local_subject}' and that it is not expired or revoked")
                return sa.fail(n.notify_type, "the responder rejected our authentication "
                               f"(AUTHENTICATION_FAILED): check {how}, and that our identity "
                               f"{sa.local_id} is the one it expects (its log says which)")
            if n.notify_type < 16384 and n.notify_type not in _CHILD_ERRORS:
                return sa.fail(n.notify_type, f"the responder answered IKE_AUTH with "
                               f"{notify_name(n.notify_type)}")
        idr, auth = msg.get(PayloadType.IDr), msg.get(PayloadType.AUTH)
        if idr is None or auth is None:
            refusal = next((n.notify_type for n in msg.notifies()
                            if n.notify_type in _CHILD_ERRORS), None)
            if refusal is not None:
                # RFC 7296 2.21.2: a responder may refuse the whole IKE_AUTH over the CHILD_SA
                # (OpenIKED answers a CHILD_SA it cannot install with N(NO_PROPOSAL_CHOSEN)
                # alone). Its notify is the answer, not a syntax error of ours.
                return sa.fail(refusal, _child_refusal(sa, refusal))
            return sa.fail(NotifyType.INVALID_SYNTAX, "IKE_AUTH response lacks IDr or AUTH")
        peer = Identity(idr.id_type, idr.data)
        want = sa.configured_remote_id()
        if want is not None and not want.matches(peer):
            return sa.fail(NotifyType.AUTHENTICATION_FAILED,
                           f"the responder identified as {peer}, we expect {want}")
        try:
            _check_peer(sa, msg, idr, auth, peer, False)
        except IkeProtocolError as exc:
            return sa.fail(exc.notify, exc.reason)
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
        sa.auth.peer_certreq = ikecerts.requested_cas(
            [b"".join(sa.auth.peer_certreq)]
            + [p.data for p in msg.all(PayloadType.CERTREQ) if p.encoding == X509],
            sa.ctx.credentials.certs.ca_hashes())
        cred = _our_cert(sa) if sa.conn.local.auth == "pubkey" else None
        sa.local_id = _local_identity(sa, cred)
        _check_peer(sa, msg, idi, auth, peer, True)
        sa.remote_id = peer

    def build_r(self, sa: IkeSa, msg: Message) -> None:
        cred = _our_cert(sa) if sa.conn.local.auth == "pubkey" else None
        idr = IdPayload(sa.local_id.id_type, sa.local_id.data, False)  # type: ignore[union-attr]
        msg.payloads.append(idr)
        msg.payloads += _our_payloads(sa, cred)
        msg.payloads.append(_our_auth(sa, cred, False, idr.body, sa.remote_id))
        sa.established()


_CHILD_ERRORS = {NotifyType.NO_PROPOSAL_CHOSEN, NotifyType.TS_UNACCEPTABLE,
                 NotifyType.SINGLE_PAIR_REQUIRED, NotifyType.INTERNAL_ADDRESS_FAILURE,
                 NotifyType.FAILED_CP_REQUIRED, NotifyType.INVALID_SELECTORS,
                 NotifyType.NO_ADDITIONAL_SAS}


def _child_refusal(sa: IkeSa, notify: int) -> str:
    """Why the responder refused IKE_AUTH with a CHILD_SA error and no IDr/AUTH: the option
    of ours it names (our ESP proposals, or our traffic selectors), so that `sa why` says
    what to change."""
    head = (f"the responder answered IKE_AUTH with {notify_name(notify)} alone (no IDr, no "
            "AUTH: RFC 7296 2.21.2), refusing the IKE_SA over its first CHILD_SA")
    children = list(sa.conn.children.values())
    if notify == NotifyType.NO_PROPOSAL_CHOSEN:
        offered = "; ".join(f"child {c.name}: {', '.join(str(p) for p in sa.esp_proposals(c))}"
                            for c in children)
        return f"{head}: it accepts none of our ESP proposals ({offered})"
    if notify == NotifyType.TS_UNACCEPTABLE:
        ts = "; ".join(f"child {c.name}: local_ts {c.local_ts}, remote_ts {c.remote_ts}"
                       for c in children)
        return f"{head}: it refused our traffic selectors ({ts})"
    return head

