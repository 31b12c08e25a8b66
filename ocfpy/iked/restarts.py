"""dpd_action / close_action: what the daemon does when a peer is found dead (RFC 7296 2.4,
dead peer detection) or closes an IKE SA or a CHILD_SA with its Delete (RFC 7296 1.4.1):
"start" re-initiates the children (charon's meaning; keyingtries bounds each attempt), "trap"
installs their traps so the next packet brings them back, "none" does nothing.

Restarts of one connection back off: the first is at once; one that follows an earlier
restart of the connection within RESTART_STABLE seconds waits 1, 2, 4 ... s, at most
RESTART_BACKOFF_MAX (a peer that deletes whatever we set up must not be flooded).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from ocfpy.ike.errors import IkeUsageError
from ocfpy.iked import logsetup
from ocfpy.iked.context import DaemonContext
from ocfpy.iked.traps import Traps

log = logging.getLogger("ocfpy.iked.daemon")

RESTART_STABLE = 60.0
RESTART_BACKOFF_MAX = 60.0


class Restarts:
    def __init__(self, ctx: DaemonContext, traps: Traps, child_is_up: Callable[[str], bool]):
        self.ctx = ctx
        self.traps = traps
        self.child_is_up = child_is_up
        self._history: dict[str, tuple[int, float]] = {}  # conn -> (restarts in a row, when)

    def restart_children(self, conn_name: str, action: str, why: str,
                         only: str | None = None) -> None:
        """Re-establish the children of ``conn_name`` whose ``action`` (dpd_action or
        close_action) is "start", as charon does; keyingtries then bounds each attempt."""
        ctx = self.ctx
        conn = ctx.config.connections.get(conn_name)
        if conn is None or ctx.stopping():
            return  # removed by a reload, or we are the ones stopping
        for c in conn.children.values():  # swanctl's "trap": the next packet brings it back
            if getattr(c, action, "none") == "trap" and (only is None or c.name == only):
                log.log(logsetup.AUDIT, "%s: %s, %s = trap", conn_name, why, action)
                self.traps.install(conn_name, c.name, action)
        children = [c.name for c in conn.children.values()
                    if getattr(c, action, "none") == "start" and (only is None or c.name == only)]
        if not children:
            return
        loop = ctx.loop
        assert loop is not None
        now = loop.time()
        count, last = self._history.get(conn_name, (0, float("-inf")))
        count = count + 1 if now - last < RESTART_STABLE else 1
        delay = 0.0 if count == 1 else min(2.0 ** (count - 2), RESTART_BACKOFF_MAX)
        self._history[conn_name] = (count, now)
        log.log(logsetup.AUDIT, "%s: %s, %s = start: re-establishing %s in %gs", conn_name, why,
                action, ", ".join(children), delay)
        ctx.publish("restart", name=conn_name, children=children, action=action,
                    delay=delay, reason=why)
        loop.call_later(delay, self._restart, conn_name, children)

    def _restart(self, conn_name: str, children: list[str]) -> None:
        ctx = self.ctx
        if ctx.stopping() or conn_name not in ctx.config.connections:
            return
        for child in children:
            try:
                ctx.engine.initiate(conn_name, ctx.loop.time(), child=child)  # type: ignore[union-attr]
            except IkeUsageError as exc:
                log.error("restart of %s/%s: %s", conn_name, child, exc)
        ctx.service()

    def child_closed_by_peer(self, ike_id: int, name: str) -> None:
        """The peer deleted one CHILD_SA; its IKE SA lives on. Not a close when it was a rekey
        (a CHILD_SA of the same name is still up) or when the IKE SA went too (handled there)."""
        if self.child_is_up(name):
            return
        sa = None
        with contextlib.suppress(Exception):
            sa = self.ctx.engine.sas.by_id(ike_id)
        if sa is None or not sa.is_established:
            return
        conn_name, _, child = name.partition("/")
        self.restart_children(conn_name, "close_action", "the peer closed " + name, only=child)
