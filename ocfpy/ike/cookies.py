"""Stateless COOKIEs (RFC 7296 2.6): under load, an IKE_SA_INIT must echo
``version | prf(secret[version], Ni | IPi | SPIi)`` before the responder keeps any state for it.

2.6 asks for the secret to be regenerated periodically, with the version telling which secret
made a cookie. Here a new secret is made every ``rotation`` seconds (on the engine's clock);
cookies of the previous version are accepted for ``grace`` seconds after the change, to let
an initiator that was just challenged answer, and never after: a cookie is not a lasting
pass (issue 13 finding 5). Older versions are forgotten."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable

from ocfpy.ike.codec.message import Message
from ocfpy.ike.codec.payloads import NotifyPayload
from ocfpy.ike.constants import NotifyType, PayloadType
from ocfpy.ike.events import Addr


class Cookies:
    __slots__ = ("_dispatcher", "_random", "rotation", "grace", "_current", "_previous",
                 "_since", "_retired_at")

    def __init__(self, dispatcher, random: Callable[[int], bytes], rotation: float = 120.0,
                 grace: float = 10.0):
        self._dispatcher = dispatcher
        self._random = random
        self.rotation = rotation
        self.grace = grace
        self._current = (1, dispatcher.open("prfsha256", random(32)))
        self._previous: tuple[int, object] | None = None
        self._since: float | None = None  # when the current secret came into use
        self._retired_at = 0.0

    @property
    def version(self) -> int:
        return self._current[0]

    def _rotate(self, now: float) -> None:
        if self._since is None:
            self._since = now
        if now < self._since + self.rotation:
            return
        old = self._previous
        if old is not None:
            old[1].close()  # type: ignore[attr-defined]
        self._previous = self._current
        self._retired_at = now
        version = self._current[0] % 255 + 1  # one byte on the wire, 1..255
        self._current = (version, self._dispatcher.open("prfsha256", self._random(32)))
        self._since = now

    @staticmethod
    def _input(msg: Message, remote: Addr) -> bytes:
        nonce = msg.get(PayloadType.NONCE)
        ni = nonce.data if nonce is not None else b""
        return ni + ipaddress.ip_address(remote[0]).packed + msg.spi_i

    def make(self, msg: Message, remote: Addr, now: float) -> bytes:
        self._rotate(now)
        version, prf = self._current
        return bytes((version,)) + prf.prf(self._input(msg, remote))  # type: ignore[attr-defined]

    def valid(self, msg: Message, remote: Addr, now: float) -> bool:
        """The request starts with a COOKIE (2.6: it must come first) made by the current
        secret, or by the previous one within its grace period."""
        self._rotate(now)
        first = msg.payloads[0] if msg.payloads else None
        if not isinstance(first, NotifyPayload) or first.notify_type != NotifyType.COOKIE \
                or not first.data:
            return False
        version = first.data[0]
        if version == self._current[0]:
            prf = self._current[1]
        elif self._previous is not None and version == self._previous[0] and \
                now < self._retired_at + self.grace:
            prf = self._previous[1]
        else:
            return False
        want = bytes((version,)) + prf.prf(self._input(msg, remote))  # type: ignore[attr-defined]
        return hmac.compare_digest(first.data, want)
