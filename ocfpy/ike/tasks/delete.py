"""INFORMATIONAL exchanges (RFC 7296 1.4): deleting IKE and CHILD SAs, both ways, and the
responder side of every INFORMATIONAL request (Delete, liveness checks, notifies)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ocfpy.ike.codec.payloads import DeletePayload
from ocfpy.ike.constants import ExchangeType, PayloadType, ProtocolId, notify_name
from ocfpy.ike.tasks.base import Status, Task

if TYPE_CHECKING:
    from ocfpy.ike.codec.message import Message
    from ocfpy.ike.sa import IkeSa

log = logging.getLogger(__name__)


class IkeDelete(Task):
    """Initiator: Delete our IKE SA (and with it every CHILD_SA, RFC 7296 1.4.1)."""

    exchange = ExchangeType.INFORMATIONAL
    __slots__ = ("reason",)

    def __init__(self, reason: str = "deleted by us"):
        self.reason = reason

    def build_i(self, sa: IkeSa, msg: Message) -> None:
        msg.payloads.append(DeletePayload(ProtocolId.IKE))
        sa.start_deleting()

    def process_i(self, sa: IkeSa, msg: Message) -> Status:
        sa.close(self.reason)
        return Status.SUCCESS


class ChildDelete(Task):
    """Initiator: Delete one CHILD_SA; the peer answers with its half (RFC 7296 1.4.1)."""

    exchange = ExchangeType.INFORMATIONAL
    __slots__ = ("unique_id", "reason")

    def __init__(self, unique_id: int, reason: str = "deleted by us"):
        self.unique_id = unique_id
        self.reason = reason

    def build_i(self, sa: IkeSa, msg: Message) -> None:
        child = sa.child_by_id(self.unique_id)
        if child is not None:
            msg.payloads.append(DeletePayload(ProtocolId.ESP, [child.spi_in]))

    def process_i(self, sa: IkeSa, msg: Message) -> Status:
        child = sa.child_by_id(self.unique_id)
        if child is not None:
            sa.retire_child(child, self.reason)
        return Status.SUCCESS


class Informational(Task):
    """Responder for every INFORMATIONAL request. An empty one is a liveness check (DPD)."""

    exchange = ExchangeType.INFORMATIONAL
    __slots__ = ("delete_ike", "deleted_spis")

    def __init__(self) -> None:
        self.delete_ike = False
        self.deleted_spis: list[bytes] = []

    def process_r(self, sa: IkeSa, msg: Message) -> None:
        for p in msg.payloads:
            if p.TYPE == PayloadType.DELETE:
                if p.protocol == ProtocolId.IKE:
                    self.delete_ike = True
                elif p.protocol == ProtocolId.ESP:
                    unknown: list[bytes] = []
                    for spi in p.spis:
                        child = sa.child_by_outbound_spi(spi)
                        if child is None:
                            unknown.append(spi)  # RFC 7296 1.4.1: ignored
                            continue
                        self.deleted_spis.append(child.spi_in)
                        # a rekeyed SA's Delete: switch to its successor first (sa.py)
                        sa.retire_child(child, "deleted by peer")
                    if unknown:
                        # one line per Delete, however many SPIs it lists (3.11: up to a
                        # message's worth), and a counter (docs/security.md, finding R2)
                        sa.ctx.out.stats["deletes_unknown_spi"] += len(unknown)
                        log.info("%s: peer deletes %d unknown ESP SPI(s): %s%s", sa.name,
                                 len(unknown), " ".join(s.hex() for s in unknown[:4]),
                                 " ..." if len(unknown) > 4 else "")
            elif p.TYPE == PayloadType.NOTIFY and p.notify_type < 16384:
                log.warning("%s: peer reports %s", sa.name, notify_name(p.notify_type))

    def build_r(self, sa: IkeSa, msg: Message) -> None:
        if self.deleted_spis:
            msg.payloads.append(DeletePayload(ProtocolId.ESP, self.deleted_spis))
        if self.delete_ike:
            sa.close_after_response("deleted by peer")


class Dpd(Task):
    """Initiator: an empty INFORMATIONAL request; retransmission failure means the peer is dead."""

    exchange = ExchangeType.INFORMATIONAL
    __slots__ = ()
