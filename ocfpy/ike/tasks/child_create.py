"""CHILD_SA creation (RFC 7296 1.2 in IKE_AUTH, 1.3.1 in CREATE_CHILD_SA): ESP proposals,
traffic selectors with narrowing (2.9), KEYMAT (2.17), and the ChildSaSpec for the dataplane.

A CHILD_SA failure inside IKE_AUTH does not fail the IKE SA (2.21.3): the responder answers with
the error notify instead of SA/TSi/TSr, and both sides report NegotiationFailed for the child."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ...catalogue import TransformType
from .. import selectors
from ..codec.payloads import NoncePayload, NotifyPayload, SaPayload, TsPayload
from ..constants import ExchangeType, NotifyType, PayloadType, notify_name
from ..errors import IkeProtocolError
from ..proposals import accepts, explain_mismatch, from_raw, select, to_raw
from .base import Status, Task
from .ike_init import NONCE_SIZE

if TYPE_CHECKING:
    from ..codec.message import Message
    from ..config import ChildConfig
    from ..sa import IkeSa

log = logging.getLogger(__name__)


class ChildCreate(Task):
    __slots__ = ("cfg", "exchange", "spi_in", "chosen", "ts_i", "ts_r", "error", "ni", "nr",
                 "explanation", "transport")

    def __init__(self, cfg: ChildConfig | None = None, *, in_ike_auth: bool = True):
        self.cfg = cfg
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
        self.spi_in = sa.engine.allocate_child_spi()
        props = sa.esp_proposals(cfg)
        msg.payloads.append(SaPayload([to_raw(p, i + 1, self.spi_in) for i, p in enumerate(props)]))
        if not self.in_ike_auth:
            self.ni = sa.random(NONCE_SIZE)
            msg.payloads.append(NoncePayload(self.ni))
        self.ts_i = selectors.parse(cfg.local_ts, sa.local[0])
        self.ts_r = selectors.parse(cfg.remote_ts, sa.remote[0])
        msg.payloads.append(TsPayload([selectors.to_raw(t) for t in self.ts_i], True))
        msg.payloads.append(TsPayload([selectors.to_raw(t) for t in self.ts_r], False))
        if cfg.mode == "transport":
            msg.payloads.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))

    def process_i(self, sa: IkeSa, msg: Message) -> Status:
        cfg = self.cfg
        assert cfg is not None
        if not sa.is_established:
            sa.engine.release_child_spi(self.spi_in)
            return Status.SUCCESS  # the IKE SA failed; it reported that
        for n in msg.notifies():
            if n.notify_type < 16384:
                sa.engine.release_child_spi(self.spi_in)
                return sa.child_failed(cfg.name, n.notify_type,
                                       _peer_child_error(sa, cfg, n.notify_type))
        sa_p, tsi, tsr = (msg.get(PayloadType.SA), msg.get(PayloadType.TSi),
                          msg.get(PayloadType.TSr))
        if sa_p is None or tsi is None or tsr is None:
            sa.engine.release_child_spi(self.spi_in)
            return sa.child_failed(cfg.name, NotifyType.INVALID_SYNTAX,
                                   "the responder's answer lacks SA, TSi or TSr for the CHILD_SA")
        if not self.in_ike_auth:
            nonce = msg.get(PayloadType.NONCE)
            if nonce is None:
                return sa.child_failed(cfg.name, NotifyType.INVALID_SYNTAX, "no Nonce in answer")
            self.nr = nonce.data
        chosen = from_raw(sa_p.proposals[0]) if len(sa_p.proposals) == 1 else None
        ours = sa.esp_proposals(cfg)
        if chosen is None or chosen.unknown or len(chosen.spi) != 4 or \
                not accepts(chosen, ours, ignore_ke=True):
            sa.engine.release_child_spi(self.spi_in)
            return sa.child_failed(cfg.name, NotifyType.NO_PROPOSAL_CHOSEN,
                                   f"the responder chose ESP proposal {chosen}, which we did not offer")
        ts_i = [selectors.from_raw(r) for r in tsi.selectors]
        ts_r = [selectors.from_raw(r) for r in tsr.selectors]
        if not ts_i or not ts_r or not all(selectors.within(t, self.ts_i) for t in ts_i) or \
                not all(selectors.within(t, self.ts_r) for t in ts_r):
            sa.engine.release_child_spi(self.spi_in)
            return sa.child_failed(cfg.name, NotifyType.TS_UNACCEPTABLE,
                                   "the responder's traffic selectors are not within ours")
        transport = msg.notify(NotifyType.USE_TRANSPORT_MODE) is not None and \
            cfg.mode == "transport"
        sa.add_child(cfg, chosen, self.spi_in, chosen.spi, ts_i, ts_r,
                     self.ni or sa.ni, self.nr or sa.nr, transport)
        return Status.SUCCESS

    # -- responder -----------------------------------------------------------------------
    def process_r(self, sa: IkeSa, msg: Message) -> None:
        if not self.in_ike_auth:
            nonce = msg.get(PayloadType.NONCE)
            if msg.get(PayloadType.KE) is not None or msg.notify(NotifyType.REKEY_SA):
                # rekeying and PFS are later work: refuse cleanly, the IKE SA stays
                raise IkeProtocolError(NotifyType.NO_ADDITIONAL_SAS,
                                       "CHILD_SA rekeying / PFS is not implemented yet")
            self.ni = nonce.data
        sa_p, tsi, tsr = (msg.get(PayloadType.SA), msg.get(PayloadType.TSi),
                          msg.get(PayloadType.TSr))
        if sa_p is None and tsi is None and tsr is None:
            return  # IKE_AUTH without a CHILD_SA (RFC 6023 childless)
        if sa_p is None or tsi is None or tsr is None:
            self._refuse(sa, NotifyType.INVALID_SYNTAX, "SA, TSi and TSr must come together")
            return
        offered_i = [selectors.from_raw(r) for r in tsi.selectors]
        offered_r = [selectors.from_raw(r) for r in tsr.selectors]
        match = None
        for cfg in sa.conn.children.values():
            ts_i = selectors.narrow(offered_i, selectors.parse(cfg.remote_ts, sa.remote[0]))
            ts_r = selectors.narrow(offered_r, selectors.parse(cfg.local_ts, sa.local[0]))
            if ts_i and ts_r:
                match = (cfg, ts_i, ts_r)
                break
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
        ours = sa.esp_proposals(cfg)
        chosen = select(offered, ours, ignore_ke=True)
        if chosen is None:
            self._refuse(sa, NotifyType.NO_PROPOSAL_CHOSEN,
                         explain_mismatch(offered, ours, what=f"ESP (child {cfg.name})",
                                          ignore_ke=True, backend=sa.dispatcher.backend,
                                          dropped=sa.dropped_esp))
            return
        chosen.transforms.pop(TransformType.KE, None)
        self.chosen = chosen
        # transport mode only when both ask for it (RFC 7296 1.3.1); otherwise tunnel
        self.transport = (msg.notify(NotifyType.USE_TRANSPORT_MODE) is not None
                          and cfg.mode == "transport")

    def _refuse(self, sa: IkeSa, notify: int, explanation: str) -> None:
        self.error = notify
        self.explanation = explanation
        name = self.cfg.name if self.cfg is not None else "(no child matched)"
        sa.child_failed(name, notify, explanation)

    def build_r(self, sa: IkeSa, msg: Message) -> None:
        if self.error is not None:
            msg.payloads.append(NotifyPayload(self.error))
            return
        if self.chosen is None:
            return
        self.spi_in = sa.engine.allocate_child_spi()
        msg.payloads.append(SaPayload([to_raw(self.chosen, self.chosen.number, self.spi_in)]))
        if not self.in_ike_auth:
            self.nr = sa.random(NONCE_SIZE)
            msg.payloads.append(NoncePayload(self.nr))
        msg.payloads.append(TsPayload([selectors.to_raw(t) for t in self.ts_i], True))
        msg.payloads.append(TsPayload([selectors.to_raw(t) for t in self.ts_r], False))
        if self.transport:
            msg.payloads.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
        assert self.cfg is not None
        sa.add_child(self.cfg, self.chosen, self.spi_in, self.chosen.spi, self.ts_i, self.ts_r,
                     self.ni or sa.ni, self.nr or sa.nr, self.transport)


def _peer_child_error(sa: IkeSa, cfg: ChildConfig, notify: int) -> str:
    if notify == NotifyType.NO_PROPOSAL_CHOSEN:
        return (f"the responder accepts none of our ESP proposals for child {cfg.name} "
                f"({'; '.join(str(p) for p in sa.esp_proposals(cfg))})")
    if notify == NotifyType.TS_UNACCEPTABLE:
        return (f"the responder refused our traffic selectors for child {cfg.name} "
                f"(local_ts {cfg.local_ts}, remote_ts {cfg.remote_ts}): its selectors do not "
                "overlap them")
    return f"the responder refused child {cfg.name}: {notify_name(notify)}"
