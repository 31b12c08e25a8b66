"""The engine pump: after anything calls into the sans-I/O engine, deliver its events, send its
datagrams and re-arm the one ``loop.call_at`` from ``engine.get_timer()`` (aioquic's
asyncio/protocol.py shape). The order inside one flush is the make-before-break rule the
dataplane bridge relies on: events before datagrams (see ``service``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ocfpy.ike.events import Addr, Event
from ocfpy.iked.context import DaemonContext

log = logging.getLogger("ocfpy.iked.daemon")


class EnginePump:
    def __init__(self, ctx: DaemonContext, on_event: Callable[[Event], None],
                 send: Callable[[bytes, Addr, Addr], None]):
        """``on_event``: what the daemon does with one engine event; ``send``: one datagram
        out (iked/udp.py)."""
        self.ctx = ctx
        self.on_event = on_event
        self.send = send
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def service(self) -> None:
        """Flush the engine's output, deliver its events, re-arm its timer."""
        ctx = self.ctx
        loop = ctx.loop
        assert loop is not None
        for _ in range(4):  # events may make more output (and the other way round)
            # Events first: a CREATE_CHILD_SA (or IKE_AUTH) response must not leave before
            # the inbound SA it lets the peer use is installed (make-before-break, docs/ike.md
            # *Rekeying*; charon's child_create installs in build_r too), so the initiator's
            # first ESP packet (a trap's held packets go out the moment its SA is up) never
            # finds the responder without the SA
            handled = 0
            while (event := ctx.engine.next_event()) is not None:
                handled += 1
                self.on_event(event)
            now = loop.time()
            out = ctx.engine.datagrams_to_send(now)
            for data, local, remote in out:
                self.send(data, local, remote)
            if not out and not handled:
                break
        self.arm_timer()

    def arm_timer(self) -> None:
        when = self.ctx.engine.get_timer()
        if when == self._timer_at:
            return
        self.cancel_timer()
        if when is not None:
            self._timer = self.ctx.loop.call_at(when, self.on_timer)  # type: ignore[union-attr]
            self._timer_at = when

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.ctx.engine.handle_timer(self.ctx.loop.time())  # type: ignore[union-attr]
        except Exception:
            self.ctx.stats["engine_errors"] += 1
            log.exception("engine timer failed")
        self.service()
