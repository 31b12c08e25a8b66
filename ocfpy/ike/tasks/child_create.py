"""CHILD_SA creation (RFC 7296 1.2 in IKE_AUTH, 1.3.1 in CREATE_CHILD_SA): ESP proposals,
traffic selectors with narrowing (2.9), KEYMAT (2.17), and the ChildSaSpec for the dataplane.

A CHILD_SA failure inside IKE_AUTH does not fail the IKE SA (2.21.3): the responder answers with
the error notify instead of SA/TSi/TSr, and both sides report NegotiationFailed for the child."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ocfpy.crypto.catalogue import TransformType
from ocfpy.crypto.errors import InvalidPublicValue
from ocfpy.ike import selectors
from ocfpy.ike.codec.payloads import KePayload, NoncePayload, NotifyPayload, SaPayload, TsPayload
from ocfpy.ike.constants import ExchangeType, NotifyType, PayloadType, notify_name
from ocfpy.ike.errors import IkeProtocolError
from ocfpy.ike.proposals import (
    KE_NONE,
    accepts,
    explain_mismatch,
    from_raw,
    pfs_group,
    select,
    to_raw,
    with_optional_pfs,
    with_peer_pfs,
)
from ocfpy.ike.tasks.base import Status, Task
from ocfpy.ike.tasks.ike_init import NONCE_SIZE

if TYPE_CHECKING:
    from ocfpy.ike.codec.message import Message
    from ocfpy.ike.config import ChildConfig
    from ocfpy.ike.sa import ChildSa, IkeSa

log = logging.getLogger(__name__)


class ChildCreate(Task):
    __slots__ = ("cfg", "exchange", "spi_in", "chosen", "ts_i", "ts_r", "error", "ni", "nr",
                 "explanation", "transport", "rekey", "ke", "shared", "error_data", "created",
                 "offered")

    def __init__(self, cfg: ChildConfig | None = None, *, in_ike_auth: bool = True,
                 rekey: ChildSa | None = None):
        self.cfg = cfg if rekey is None else rekey.cfg
        self.rekey = rekey  # the CHILD_SA this one replaces (RFC 7296 1.3.3)
        self.ke = None  # PFS: our key exchange session in CREATE_CHILD_SA
        self.shared = b""
        self.error_data = b""
        self.created: ChildSa | None = None  # what process_i made
        self.offered: list | None = None  # the ESP proposals build_i sent
        self.exchange = ExchangeType.IKE_AUTH if in_ike_auth else ExchangeType.CREATE_CHILD_SA
        self.spi_in = b""
        self.chosen = None
        self.ts_i: list = []
        self.ts_r: list = []
        self.error: int | None = None
        self.explanation = ""
        self.ni = b""
        self.nr = b""
        self.transport = False

    @property
    def in_ike_auth(self) -> bool:
        return self.exchange == ExchangeType.IKE_AUTH

    # -- initiator -----------------------------------------------------------------------
    def build_i(self, sa: IkeSa, msg: Message) -> None:
        cfg = self.cfg
        assert cfg is not None
        props, dropped = sa.ctx.connections.esp_proposals(cfg, not self.in_ike_auth)
        if not props:
            # nothing the crypto backend can serve: no CHILD_SA (IKE_AUTH goes on childless)
            self.error = NotifyType.NO_PROPOSAL_CHOSEN
            backend = sa.dispatcher.backend
            sa.child_failed(cfg.name, None, f"none of its ESP proposals ({cfg.esp_proposals}) "
                            f"can be served by {f'the forced backend {backend!r}' if backend else 'any active driver'}"
                            f" (cannot serve: {', '.join(dropped)})")
            return
        if not self.in_ike_auth:
            # optional PFS with the IKE SA's group where the child names none (with_optional_pfs)
            props = with_optional_pfs(props, sa.ke_transform)
        self.offered = props
        self.spi_in = sa.ctx.spis.child()
        if self.rekey is not None:
            msg.payloads.append(NotifyPayload(NotifyType.REKEY_SA, b"", 3, self.rekey.spi_in))
        msg.payloads.append(SaPayload([to_raw(p, i + 1, self.spi_in) for i, p in enumerate(props)]))
        if not self.in_ike_auth:
            self.ni = sa.ctx.random(NONCE_SIZE)
            msg.payloads.append(NoncePayload(self.ni))
            # KEi for the first proposal's first group: the one we expect the responder to
            # take (RFC 7296 1.3.1); unused if it picks NONE (1.3: "other than NONE")
            group = pfs_group(props[0]) if props else None
            if group is not None:  # PFS (RFC 7296 1.3.1)
                self.ke = sa.dispatcher.open(group)
                msg.payloads.append(KePayload(group.group, self.ke.public_value()))  # type: ignore[arg-type]
        if self.rekey is not None:  # the same selectors as the SA it replaces
            self.ts_i = list(self.rekey.spec.local_ts)
            self.ts_r = list(self.rekey.spec.remote_ts)
        else:
            self.ts_i = selectors.parse(cfg.local_ts, sa.local[0])
            self.ts_r = selectors.parse(cfg.remote_ts, sa.remote[0])
        msg.payloads.append(TsPayload([selectors.to_raw(t) for t in self.ts_i], True))
        msg.payloads.append(TsPayload([selectors.to_raw(t) for t in self.ts_r], False))
        if cfg.mode == "transport":
            msg.payloads.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))

    def process_i(self, sa: IkeSa, msg: Message) -> Status:
        try:
            return self._process_i(sa, msg)
        finally:
            # on every way out: a CHILD_SA that was not made gives its SPI back, and the PFS
            # key exchange is done with either way
            self.abort(sa)

    def _process_i(self, sa: IkeSa, msg: Message) -> Status:
        cfg = self.cfg
        assert cfg is not None
        if self.error is not None:
            return Status.FAILED  # never proposed (reported in build_i)
        if not sa.is_established:
            return Status.FAILED  # the IKE SA failed; it reported that
        for n in msg.notifies():
            if n.notify_type < 16384:
                return sa.child_failed(cfg.name, n.notify_type,
                                       _peer_child_error(sa, cfg, n.notify_type))
        sa_p, tsi, tsr = (msg.get(PayloadType.SA), msg.get(PayloadType.TSi),
                          msg.get(PayloadType.TSr))
        if sa_p is None or tsi is None or tsr is None:
            return sa.child_failed(cfg.name, NotifyType.INVALID_SYNTAX,
                                   "the responder's answer lacks SA, TSi or TSr for the CHILD_SA")
        if not self.in_ike_auth:
            nonce = msg.get(PayloadType.NONCE)
            if nonce is None:
                return sa.child_failed(cfg.name, NotifyType.INVALID_SYNTAX, "no Nonce in answer")
            self.nr = nonce.data
        chosen = from_raw(sa_p.proposals[0]) if len(sa_p.proposals) == 1 else None
        ours = self.offered if self.offered is not None else \
            sa.esp_proposals(cfg, with_ke=not self.in_ike_auth)
        if chosen is None or chosen.unknown or len(chosen.spi) != 4 or \
                not accepts(chosen, ours, ignore_ke=self.in_ike_auth):
            return sa.child_failed(cfg.name, NotifyType.NO_PROPOSAL_CHOSEN,
                                   f"the responder chose ESP proposal {chosen}, which we did not offer")
        ts_i = [selectors.from_raw(r) for r in tsi.selectors]
        ts_r = [selectors.from_raw(r) for r in tsr.selectors]
        if not ts_i or not ts_r or not all(selectors.within(t, self.ts_i) for t in ts_i) or \
                not all(selectors.within(t, self.ts_r) for t in ts_r):
            return sa.child_failed(cfg.name, NotifyType.TS_UNACCEPTABLE,
                                   "the responder's traffic selectors are not within ours")
        transport = msg.notify(NotifyType.USE_TRANSPORT_MODE) is not None and \
            cfg.mode == "transport"
        group = pfs_group(chosen)
        ke_p = msg.get(PayloadType.KE)
        if not self.in_ike_auth and group is None and ke_p is not None:
            return sa.child_failed(cfg.name, NotifyType.INVALID_KE_PAYLOAD,
                                   "the responder sent a KE payload but chose no PFS group")
        # No group chosen although we sent KEi: accepts() has checked that we offered NONE
        # in that proposal, and our KEi is simply unused (RFC 7296 1.3). The keys then come
        # from SK_d and the nonces alone (2.17).
        if not self.in_ike_auth and group is not None:
            if self.ke is None or ke_p is None or \
                    group is not self.ke.transform or ke_p.group != group.group:
                return sa.child_failed(cfg.name, NotifyType.INVALID_KE_PAYLOAD,
                                       f"the responder's PFS group {group} does not match ours "
                                       f"({self.ke.transform if self.ke else 'none'})")
            try:
                self.shared = self.ke.shared_secret(ke_p.data)
            except InvalidPublicValue as exc:
                return sa.child_failed(cfg.name, NotifyType.INVALID_SYNTAX,
                                       f"the responder's KE value is invalid: {exc}")
        self.created = sa.add_child(cfg, chosen, self.spi_in, chosen.spi, ts_i, ts_r,
                                    self.ni or sa.ni, self.nr or sa.nr, transport, True,
                                    self.shared, self.rekey)
        return Status.SUCCESS

    def abort(self, sa: IkeSa) -> None:
        if self.spi_in and self.created is None:
            sa.ctx.spis.release_child(self.spi_in)
            self.spi_in = b""  # released once: the allocator may hand it to another SA now
        self._close_ke()

    def _close_ke(self) -> None:
        if self.ke is not None:
            self.ke.close()
            self.ke = None

    # -- responder -----------------------------------------------------------------------
    def process_r(self, sa: IkeSa, msg: Message) -> None:
        if not self.in_ike_auth:
            self.ni = msg.get(PayloadType.NONCE).data
            rekey = msg.notify(NotifyType.REKEY_SA)
            if rekey is not None:
                # the notify names the SA by the SPI the peer receives on: our outbound one
                old = sa.child_by_outbound_spi(rekey.spi) if rekey.protocol == 3 else None
                if old is None:
                    raise IkeProtocolError(NotifyType.CHILD_SA_NOT_FOUND,
                                           f"rekey of unknown CHILD_SA {rekey.spi.hex()}",
                                           )
                if old.rekeyed:
                    # we replaced it already; our Delete for it is on its way (RFC 7296 2.25)
                    raise IkeProtocolError(NotifyType.TEMPORARY_FAILURE,
                                           f"CHILD_SA {rekey.spi.hex()} is already rekeyed")
                self.rekey = old
                self.cfg = old.cfg
            _check_child_limit(sa, rekey=self.rekey is not None)
        sa_p, tsi, tsr = (msg.get(PayloadType.SA), msg.get(PayloadType.TSi),
                          msg.get(PayloadType.TSr))
        if sa_p is None and tsi is None and tsr is None:
            return  # IKE_AUTH without a CHILD_SA (RFC 6023 childless)
        if sa_p is None or tsi is None or tsr is None:
            self._refuse(sa, NotifyType.INVALID_SYNTAX, "SA, TSi and TSr must come together")
            return
        offered_i = [selectors.from_raw(r) for r in tsi.selectors]
        offered_r = [selectors.from_raw(r) for r in tsr.selectors]
        bad = [t for t in offered_i + offered_r
               if t.start > t.end or t.start_port > t.end_port]
        if bad:
            # RFC 7296 3.13.1 ranges run start..end; a reversed one selects nothing and
            # cannot be printed as networks (finding 7: formatting it raised)
            self._refuse(sa, NotifyType.TS_UNACCEPTABLE,
                         "the initiator sent reversed traffic selectors: " + ", ".join(
                             f"{t.start}-{t.end} ports {t.start_port}-{t.end_port}"
                             for t in bad[:4]))
            return
        # strongSwan's child_cfg priority: a child whose selectors equal the offer beats one
        # that takes the offer unchanged, which beats one that has to narrow it
        match = None
        best = -1
        candidates = [self.rekey.cfg] if self.rekey is not None else sa.conn.children.values()
        for cfg in candidates:
            conf_i = selectors.parse(cfg.remote_ts, sa.remote[0])
            conf_r = selectors.parse(cfg.local_ts, sa.local[0])
            ts_i = selectors.narrow(offered_i, conf_i)
            ts_r = selectors.narrow(offered_r, conf_r)
            if not (ts_i and ts_r):
                continue
            score = 2 * (conf_i == offered_i) + 2 * (conf_r == offered_r) + \
                (ts_i == offered_i) + (ts_r == offered_r)
            if score > best:
                match, best = (cfg, ts_i, ts_r), score
        if match is None:
            ours = "; ".join(f"{c.name}: {c.remote_ts} <-> {c.local_ts}"
                             for c in sa.conn.children.values()) or "no children configured"
            self._refuse(sa, NotifyType.TS_UNACCEPTABLE,
                         f"the initiator's traffic selectors TSi={[str(t) for t in offered_i]} "
                         f"TSr={[str(t) for t in offered_r]} overlap none of ours ({ours})")
            return
        cfg, self.ts_i, self.ts_r = match
        self.cfg = cfg
        offered = [from_raw(p) for p in sa_p.proposals]
        offered = [p for p in offered if p.protocol == 3 and len(p.spi) == 4]
        ike_auth = self.in_ike_auth
        ours = sa.esp_proposals(cfg, with_ke=not ike_auth)
        if not ike_auth:
            # an initiator that insists on PFS for a child we configured without it: accept
            # the groups we accept for IKE (with_peer_pfs; libreswan's default pfs=yes)
            ours = with_peer_pfs(ours, _ike_groups(sa))
        chosen = select(offered, ours, ignore_ke=ike_auth)
        if chosen is None:
            self._refuse(sa, NotifyType.NO_PROPOSAL_CHOSEN,
                         explain_mismatch(offered, ours, what=f"ESP (child {cfg.name})",
                                          ignore_ke=ike_auth, backend=sa.dispatcher.backend,
                                          dropped=sa.ctx.connections.esp_proposals(
                                              cfg, not ike_auth)[1]))
            return
        if ike_auth:
            chosen.transforms.pop(TransformType.KE, None)
        elif not self._pfs_r(sa, msg, chosen, cfg):
            return
        self.chosen = chosen
        # transport mode only when both ask for it (RFC 7296 1.3.1); otherwise tunnel
        self.transport = (msg.notify(NotifyType.USE_TRANSPORT_MODE) is not None
                          and cfg.mode == "transport")

    def _pfs_r(self, sa: IkeSa, msg: Message, chosen, cfg: ChildConfig) -> bool:
        """CREATE_CHILD_SA with a KE group: check the KE payload, compute g^ir."""
        group = pfs_group(chosen)
        ke_p = msg.get(PayloadType.KE)
        if group is None:
            # NONE chosen from an optional-PFS offer: the initiator's KEi (for the group it
            # listed first) is ignored, RFC 7296 1.3 asks for INVALID_KE_PAYLOAD only for a
            # group "other than NONE". A KE payload with no KE transform offered at all is
            # still refused.
            if ke_p is not None and chosen.first(TransformType.KE) != KE_NONE:
                self._refuse(sa, NotifyType.NO_PROPOSAL_CHOSEN,
                             "the initiator sent a KE payload (PFS) but chose no group")
                return False
            return True
        if ke_p is None or ke_p.group != group.group:
            self._refuse(sa, NotifyType.INVALID_KE_PAYLOAD,
                         f"PFS for child {cfg.name}: we selected {group}, the initiator sent "
                         f"{'no KE payload' if ke_p is None else f'group {ke_p.group}'}")
            self.error_data = group.group.to_bytes(2, "big")  # type: ignore[union-attr]
            return False
        self.ke = sa.dispatcher.open(group)
        try:
            self.shared = self.ke.shared_secret(ke_p.data)
        except InvalidPublicValue as exc:
            self._refuse(sa, NotifyType.INVALID_SYNTAX, f"the initiator's KE value: {exc}")
            return False
        return True

    def _refuse(self, sa: IkeSa, notify: int, explanation: str) -> None:
        self.error = notify
        self.explanation = explanation
        self._close_ke()  # _pfs_r may have opened it before the KE value proved invalid
        name = self.cfg.name if self.cfg is not None else "(no child matched)"
        sa.child_failed(name, notify, explanation)

    def build_r(self, sa: IkeSa, msg: Message) -> None:
        if self.error is not None:
            msg.payloads.append(NotifyPayload(self.error, self.error_data))
            return
        if self.chosen is None:
            return
        self.spi_in = sa.ctx.spis.child()
        msg.payloads.append(SaPayload([to_raw(self.chosen, self.chosen.number, self.spi_in)]))
        if not self.in_ike_auth:
            self.nr = sa.ctx.random(NONCE_SIZE)
            msg.payloads.append(NoncePayload(self.nr))
            if self.ke is not None:
                msg.payloads.append(KePayload(self.ke.transform.group, self.ke.public_value()))
        msg.payloads.append(TsPayload([selectors.to_raw(t) for t in self.ts_i], True))
        msg.payloads.append(TsPayload([selectors.to_raw(t) for t in self.ts_r], False))
        if self.transport:
            msg.payloads.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
        assert self.cfg is not None
        self.created = sa.add_child(self.cfg, self.chosen, self.spi_in, self.chosen.spi,
                                    self.ts_i, self.ts_r, self.ni or sa.ni, self.nr or sa.nr,
                                    self.transport, False, self.shared, self.rekey)
        self._close_ke()
        if self.rekey is not None:  # for collision detection in our own rekey (RFC 7296 2.8.1)
            self.rekey.peer_rekey_nonce = min(self.ni, self.nr)


def _check_child_limit(sa: IkeSa, *, rekey: bool) -> None:
    """Every CHILD_SA takes dataplane state shared by all peers (a counter slot of the
    userspace dataplane, XFRM states, crypto sessions), so one peer's CREATE_CHILD_SAs are
    bounded (`max_child_sas`, docs/security.md finding R1): a new CHILD_SA while that many are
    live (not replaced by a rekey), or a rekey while twice that many exist (old SAs whose
    Delete the peer has not sent: RFC 7296 2.8 leaves it to the rekey's initiator, and a peer
    may never send it), is refused with NO_ADDITIONAL_SAS (RFC 7296 3.10.1: "unwilling to
    accept any more Child SAs on this IKE SA"). The IKE SA stays up."""
    limit = sa.ctx.options.max_child_sas
    children = sa.children
    replaced = {c.replaces for c in children if c.replaces is not None}
    live = sum(1 for c in children if not c.rekeyed and c.unique_id not in replaced)
    if (len(children) >= 2 * limit) if rekey else (live >= limit):
        sa.ctx.out.count("child_sas_refused_limit")
        raise IkeProtocolError(NotifyType.NO_ADDITIONAL_SAS,
                               f"{'rekey refused: ' if rekey else ''}{len(children)} CHILD_SAs "
                               f"on this IKE SA ({live} live), max_child_sas is {limit}")


def _ike_groups(sa: IkeSa) -> list:
    """The key exchange methods we accept for this IKE SA (its connection's IKE proposals,
    as far as the crypto backend serves them), in our preference order."""
    groups: list = []
    for p in sa.ike_proposals:
        groups += [t for t in p.of(TransformType.KE) if t not in groups]
    return groups


def _peer_child_error(sa: IkeSa, cfg: ChildConfig, notify: int) -> str:
    if notify == NotifyType.NO_PROPOSAL_CHOSEN:
        return (f"the responder accepts none of our ESP proposals for child {cfg.name} "
                f"({'; '.join(str(p) for p in sa.esp_proposals(cfg))})")
    if notify == NotifyType.TS_UNACCEPTABLE:
        return (f"the responder refused our traffic selectors for child {cfg.name} "
                f"(local_ts {cfg.local_ts}, remote_ts {cfg.remote_ts}): its selectors do not "
                "overlap them")
    return f"the responder refused child {cfg.name}: {notify_name(notify)}"
