"""The dataplane bridge: CHILD_SA events from the engine become dataplane calls, and the
dataplane's lifetime events go back to the engine.

Make-before-break (RFC 7296 2.8, docs/ike.md *Rekeying*), in the order the engine's events
arrive (the pump delivers them before the datagram that tells the peer):

- ``ChildSaEstablished`` with ``outbound``: a new CHILD_SA, both directions at once.
- ``ChildSaEstablished`` without ``outbound``: a rekey, or a re-establishment from a new
  IKE SA (ike/succession.py); the new inbound SA accepts now, its outbound SA waits
  (``install(spec, outbound=False, replaces=old)``);
- ``ChildSaOutbound``: the peer can decrypt the new SA: ``activate`` switches sending to it
  (the engine says so on the Delete of the old SA, or, userspace dataplane, on the first
  packet authenticated under the new inbound SA: the dataplane's "inbound" event);
- ``ChildSaClosed`` with ``grace``: the old SA's inbound side takes what is still in flight for
  ``grace`` seconds, then ``remove``; without ``grace``: ``remove`` at once.

The bridge also knows which CHILD_SAs are installed, by unique id and by "conn/child" name,
for logs, `sa list` and the trap and restart rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ocfpy.ike.events import ChildSaClosed, ChildSaEstablished, ChildSaOutbound
from ocfpy.iked import logsetup
from ocfpy.iked.context import DaemonContext

log = logging.getLogger("ocfpy.iked.daemon")


class DataplaneBridge:
    def __init__(self, ctx: DaemonContext):
        self.ctx = ctx
        self.names: dict[int, str] = {}  # CHILD_SA unique id -> "conn/child", for logs
        self.up_at: dict[int, float] = {}  # CHILD_SA unique id -> loop time installed
        # rekeyed CHILD_SAs whose inbound SA still accepts (grace period): unique id -> timer
        self.retiring: dict[int, asyncio.TimerHandle] = {}

    def is_up(self, name: str) -> bool:
        """A CHILD_SA named "conn/child" is installed."""
        return name in self.names.values()

    def installed_as(self, name: str) -> int | None:
        """The unique id of the installed CHILD_SA named "conn/child": the one a new CHILD_SA
        of that name rekeys (RFC 7296 2.8: the old one's Delete follows)."""
        return next((uid for uid, n in self.names.items() if n == name), None)

    # -- engine -> dataplane -------------------------------------------------------------------
    def install(self, ev: ChildSaEstablished) -> None:
        ctx = self.ctx
        spec = ev.spec
        self.names[spec.unique_id] = spec.name
        self.up_at[spec.unique_id] = ctx.now()
        started = time.perf_counter()
        try:
            # a rekey's or re-establishment's responder (outbound False): inbound now,
            # outbound ready but unused until ChildSaOutbound
            ctx.dataplane.install(spec, outbound=ev.outbound, replaces=ev.replaces)
            self._timed("install", started)
            ctx.stats["children_installed"] += 1
            # charon's notation: name[IKE_SA id], name{CHILD_SA id}
            log.log(logsetup.AUDIT, "CHILD_SA %s{%d} established (IKE_SA #%d), SPIs %08x_i "
                    "%08x_o", spec.name, spec.unique_id, ev.ike_id, spec.inbound.spi,
                    spec.outbound.spi)
        except Exception as exc:
            ctx.stats["install_failures"] += 1
            log.error("dataplane %s could not install CHILD_SA %s #%d: %s", ctx.dataplane.name,
                      spec.name, spec.unique_id, exc)

    def activate(self, ev: ChildSaOutbound) -> None:
        """The peer can decrypt the new CHILD_SA: send on it from now on (one step)."""
        ctx = self.ctx
        started = time.perf_counter()
        try:
            ctx.dataplane.activate(ev.unique_id)
            self._timed("switch", started)
            ctx.stats["children_switched"] += 1
            log.info("CHILD_SA %s{%d}: outbound traffic switched to it",
                     self.names.get(ev.unique_id, "?"), ev.unique_id)
        except Exception as exc:
            ctx.stats["switch_failures"] += 1
            log.error("dataplane %s could not switch to CHILD_SA #%d: %s",
                      ctx.dataplane.name, ev.unique_id, exc)

    def remove(self, ev: ChildSaClosed) -> None:
        # Say why: a peer that deletes a CHILD_SA right after creating it (charon when its
        # kernel interface refuses the SA) leaves no other trace here.
        self.up_at.pop(ev.unique_id, None)
        log.log(logsetup.AUDIT, "CHILD_SA %s{%d} (IKE_SA #%d) closed: %s",
                self.names.pop(ev.unique_id, "?"), ev.unique_id, ev.ike_id, ev.reason)
        if ev.grace > 0 and self.ctx.loop is not None:
            # a rekeyed CHILD_SA: its successor carries the outbound traffic already; the old
            # inbound SA takes what is still in flight for ev.grace seconds (docs/ike.md)
            self.retiring[ev.unique_id] = self.ctx.loop.call_later(
                ev.grace, self.remove_now, ev.unique_id)
            return
        self.remove_now(ev.unique_id)

    def remove_now(self, unique_id: int) -> None:
        ctx = self.ctx
        self.retiring.pop(unique_id, None)
        self._collect_drops(unique_id)
        try:
            ctx.dataplane.remove(unique_id)
        except Exception as exc:
            log.error("dataplane %s could not remove CHILD_SA #%d: %s", ctx.dataplane.name,
                      unique_id, exc)

    def cancel_retiring(self) -> None:
        """At shutdown: the dataplane's close() removes every CHILD_SA anyway."""
        for handle in self.retiring.values():
            handle.cancel()
        self.retiring.clear()

    # -- dataplane -> engine -------------------------------------------------------------------
    def on_lifetime(self, event: Any) -> None:
        """A CHILD_SA lifetime limit (SaEvent soft/hard), or the first packet authenticated
        under an SA whose outbound side waits (SaEvent inbound). May come from another
        thread."""
        ctx = self.ctx
        if ctx.elsewhere(self.on_lifetime, event):
            return
        if event.kind == "inbound":
            ctx.stats["dataplane_inbound"] += 1
            ctx.engine.child_sa_inbound(event.unique_id,
                                        ctx.loop.time())  # type: ignore[union-attr]
            ctx.service()
            return
        ctx.stats[f"dataplane_{event.kind}"] += 1
        log.info("CHILD_SA #%d hit its %s lifetime (%s)", event.unique_id, event.kind,
                 event.reason)
        ctx.publish("child-expire", name=self.names.get(event.unique_id),
                    unique_id=event.unique_id, kind=event.kind, reason=event.reason)
        ctx.engine.child_sa_expired(event.unique_id, event.kind,
                                    ctx.loop.time())  # type: ignore[union-attr]
        ctx.service()

    # -- counters ------------------------------------------------------------------------------
    def _timed(self, what: str, started: float) -> None:
        """The longest dataplane install / switch so far, in microseconds (`sa stats`)."""
        us = int((time.perf_counter() - started) * 1e6)
        key = f"{what}_us_max"
        self.ctx.stats[key] = max(self.ctx.stats[key], us)

    def _collect_drops(self, unique_id: int) -> None:
        """Before a CHILD_SA goes: add its replay drops to the daemon's running total, so
        that `sa stats` still shows drops of SAs rekeyed away."""
        with contextlib.suppress(Exception):
            self.ctx.stats["sa_replay_drops"] += self.ctx.dataplane.counters(unique_id).replay_drops
