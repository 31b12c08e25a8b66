"""A task is one concern of an exchange (strongSwan's task_t): the initiator builds then
processes, the responder processes then builds. Several tasks share one message."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ocfpy.ike.codec.message import Message
    from ocfpy.ike.sa import IkeSa


class Status(Enum):
    SUCCESS = "success"  # done
    NEED_MORE = "need_more"  # run this exchange again (COOKIE, INVALID_KE_PAYLOAD)
    FAILED = "failed"  # the task failed; it has told the SA why
    WAIT = "wait"  # an unprotected answer was noted, not acted on: keep waiting (RFC 7296 2.21.1)


class Task:
    exchange: int = 0
    __slots__ = ()

    # initiator
    def build_i(self, sa: IkeSa, msg: Message) -> None:
        pass

    def process_i(self, sa: IkeSa, msg: Message) -> Status:
        return Status.SUCCESS

    # responder: process_r raises IkeProtocolError to answer with that notify alone
    def process_r(self, sa: IkeSa, msg: Message) -> None:
        pass

    def build_r(self, sa: IkeSa, msg: Message) -> None:
        pass

    # both sides
    def abort(self, sa: IkeSa) -> None:
        """The exchange ends without this task completing (no answer, the IKE SA closed, a
        request refused): give back what build_i / process_r took (SPIs, KE sessions).
        Safe to call more than once, and after a task that completed."""
