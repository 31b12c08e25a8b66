"""Stateless COOKIEs (RFC 7296 2.6): above a number of half-open SAs, an IKE_SA_INIT must echo
``version | prf(secret, Ni | IPi | SPIi)`` before the responder keeps any state for it."""

from __future__ import annotations

import hmac
import ipaddress

from ocfpy.ike.codec.message import Message
from ocfpy.ike.codec.payloads import NotifyPayload
from ocfpy.ike.constants import NotifyType, PayloadType
from ocfpy.ike.events import Addr

COOKIE_VERSION = b"\x01"


class Cookies:
    __slots__ = ("_prf",)

    def __init__(self, dispatcher, secret: bytes):
        self._prf = dispatcher.open("prfsha256", secret)

    def make(self, msg: Message, remote: Addr) -> bytes:
        ni = msg.get(PayloadType.NONCE).data
        ip = ipaddress.ip_address(remote[0]).packed
        return COOKIE_VERSION + self._prf.prf(ni + ip + msg.spi_i)

    def valid(self, msg: Message, remote: Addr) -> bool:
        """The request starts with the COOKIE we would give it (2.6: it must come first)."""
        first = msg.payloads[0] if msg.payloads else None
        if not isinstance(first, NotifyPayload) or first.notify_type != NotifyType.COOKIE:
            return False
        return hmac.compare_digest(first.data, self.make(msg, remote))
