"""Trap policies (start_action / dpd_action / close_action = "trap", swanctl's meaning): a
child's selectors installed in the dataplane without an SA, so that the first packet of a
matching flow (an acquire) starts the negotiation, and the reload rules that keep them in step
with the config.

The dataplane holds the packets and rate-limits acquires per trap (``trap_queue``,
``trap_hold``, ``trap_acquire_interval`` in [daemon]: the bounds on what a sender can make it
hold); the table here has one entry per configured child at most.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable

from ocfpy.esp.dataplane.base import Acquire, TrapSpec
from ocfpy.ike.errors import IkeUsageError
from ocfpy.iked import logsetup
from ocfpy.iked.context import DaemonContext

log = logging.getLogger("ocfpy.iked.daemon")


class Traps:
    def __init__(self, ctx: DaemonContext, child_is_up: Callable[[str], bool]):
        """``child_is_up("conn/child")``: its CHILD_SA is installed (the dataplane bridge)."""
        self.ctx = ctx
        self.child_is_up = child_is_up
        #: trap policies installed: "conn/child" -> (spec, what installed it: start_action,
        #: dpd_action or close_action, since when (wall clock))
        self.installed: dict[str, tuple[TrapSpec, str, float]] = {}
        self.acquires: Counter[str] = Counter()  # per trap key: acquires acted on

    def spec(self, conn_name: str, child_name: str) -> TrapSpec:
        """The child's selectors as a trap. "dynamic" stands for the connection's own
        addresses (charon resolves it the same way for its traps); a connection without a
        single local and remote address cannot be trapped: there is nobody to start to."""
        from ocfpy.esp.spec import Mode
        from ocfpy.ike import selectors

        config = self.ctx.config
        conn = config.connections[conn_name]
        child = conn.children[child_name]
        local = _single_addresses(conn.local_addrs)
        remote = _single_addresses(conn.remote_addrs)
        if not remote:
            raise IkeUsageError("a trap needs a remote address to start to: set remote_addrs")
        if "dynamic" in child.local_ts and not local:
            raise IkeUsageError("local_ts = dynamic needs local_addrs for a trap")
        opts = config.daemon
        return TrapSpec(
            key=f"{conn_name}/{child_name}",
            local_ts=tuple(selectors.parse(child.local_ts, local[0] if local else "")),
            remote_ts=tuple(selectors.parse(child.remote_ts, remote[0])),
            mode=Mode(child.mode), local=ipaddress.ip_address(local[0]) if local else None,
            remote=ipaddress.ip_address(remote[0]),
            queue=getattr(opts, "trap_queue", 8), queue_timeout=getattr(opts, "trap_hold", 5.0),
            acquire_interval=getattr(opts, "trap_acquire_interval", 1.0))

    def install(self, conn_name: str, child_name: str, why: str) -> bool:
        """Install (or replace) the child's trap; a failure is logged, never fatal (one bad
        connection must not stop the others, as with start_action = start)."""
        key = f"{conn_name}/{child_name}"
        try:
            spec = self.spec(conn_name, child_name)
            self.ctx.dataplane.install_trap(spec)
        except Exception as exc:
            log.error("%s = trap of %s: %s", why, key, exc)
            return False
        old = self.installed.get(key)
        self.installed[key] = (spec, old[1] if old else why, old[2] if old else time.time())
        log.log(logsetup.AUDIT, "trap %s installed (%s): %s === %s", key, why,
                ",".join(map(str, spec.local_ts)), ",".join(map(str, spec.remote_ts)))
        self.ctx.publish("trap", name=key, action=why)
        return True

    def remove(self, key: str) -> None:
        if self.installed.pop(key, None) is None:
            return
        try:
            self.ctx.dataplane.remove_trap(key)
        except Exception as exc:
            log.error("removing the trap of %s: %s", key, exc)
        log.log(logsetup.AUDIT, "trap %s removed", key)
        self.ctx.publish("untrap", name=key)

    def on_acquire(self, acq: Acquire) -> None:
        """A packet hit a trap (the dataplane rate-limits these per trap): negotiate the
        child. The engine reuses an IKE SA of the connection that is up or coming up and
        never starts a second CHILD_SA of the same name on it, so a repeated acquire while
        one negotiation runs starts nothing new. keyingtries bounds the negotiation.
        Selectors: the child's configured ones (a superset of the packet's flow), not
        narrowed to the packet (charon can send the packet's addresses first, RFC 7296 2.9;
        ocfpy's initiator proposes its configured selectors only)."""
        ctx = self.ctx
        if ctx.stopping():
            return
        if ctx.elsewhere(self.on_acquire, acq):
            return
        if acq.key not in self.installed:
            ctx.stats["acquires_ignored"] += 1
            return
        conn_name, _, child = acq.key.partition("/")
        if self.child_is_up(acq.key):
            ctx.stats["acquires_ignored"] += 1  # its CHILD_SA is up: a race with the install
            return
        self.acquires[acq.key] += 1
        flow = f"{acq.src} -> {acq.dst}" + (f" proto {acq.protocol}" if acq.protocol else "")
        log.log(logsetup.AUDIT, "acquire for trap %s (%s): initiating", acq.key, flow)
        ctx.publish("acquire", name=acq.key, src=acq.src, dst=acq.dst, protocol=acq.protocol)
        try:
            ctx.engine.initiate(conn_name, ctx.loop.time(), child=child)  # type: ignore[union-attr]
        except IkeUsageError as exc:
            log.error("acquire for %s: %s", acq.key, exc)
        ctx.service()

    def sync(self, result: dict) -> None:
        """After a reload: traps of removed connections go; a changed connection's traps are
        replaced by the new config's (start_action = trap), others of it removed; an added
        connection's are installed; an unchanged connection's stay as they are."""
        connections = self.ctx.config.connections
        for key in list(self.installed):
            conn_name, _, child = key.partition("/")
            if conn_name in result.get("removed", ()):
                self.remove(key)
            elif conn_name in result.get("changed", ()):
                c = connections[conn_name].children.get(child)
                if c is None or c.start_action != "trap":
                    self.remove(key)
        for conn_name in (*result.get("added", ()), *result.get("changed", ())):
            for c in connections[conn_name].children.values():
                if c.start_action == "trap":
                    self.install(conn_name, c.name, "start_action")

    def state(self, key: str, stats: dict) -> dict | None:
        """A child's trap as `sa list-conns` shows it (swanctl --list-pols): None when none
        is installed. ``stats``: the dataplane's trap_stats()."""
        entry = self.installed.get(key)
        if entry is None:
            return None
        spec, why, since = entry
        return {"installed_by": why, "since": round(since, 3),
                "local_ts": [str(t) for t in spec.local_ts],
                "remote_ts": [str(t) for t in spec.remote_ts], "acquires": self.acquires[key],
                "dataplane": stats.get(key, {})}


def _single_addresses(addrs: list[str]) -> list[str]:
    """The addresses that name one host: no "%any", no prefix, no range."""
    return [a for a in addrs if not a.startswith("%") and "/" not in a and "-" not in a]
