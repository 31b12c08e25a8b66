"""IKE errors. A task or the codec raises IkeProtocolError(notify); one boundary (IkeSa /
IkeEngine.receive_datagram) turns it into the right Notify or a counted drop."""

from __future__ import annotations

from ocfpy.crypto.errors import OcfError
from ocfpy.ike.constants import NotifyType, notify_name


class IkeError(OcfError):
    """Base of IKE errors."""


class IkeProtocolError(IkeError):
    """The peer broke the protocol. ``notify`` is what we answer with (if we answer at all);
    ``data`` is its notification data (e.g. the accepted group for INVALID_KE_PAYLOAD)."""

    def __init__(self, notify: int, reason: str, data: bytes = b""):
        self.notify = notify
        self.reason = reason
        self.data = data
        super().__init__(f"{notify_name(notify)}: {reason}")


class DecodeError(IkeProtocolError):
    """A message that does not parse (INVALID_SYNTAX unless said otherwise)."""

    def __init__(self, reason: str, notify: int = NotifyType.INVALID_SYNTAX, data: bytes = b""):
        super().__init__(notify, reason, data)


class IkeUsageError(IkeError):
    """We misused the API (unknown connection, wrong state): a bug or a bad command, not the peer."""
