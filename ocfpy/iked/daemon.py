"""The IKEv2 daemon: a thin asyncio shell around the sans-I/O `IkeEngine`.

It only translates (aioquic's asyncio/protocol.py is the model): datagrams from the UDP 500
and 4500 sockets go into ``engine.receive_datagram``, ``engine.datagrams_to_send`` goes out,
one ``loop.call_at`` is re-armed from ``engine.get_timer()``, and engine events become dataplane
calls. Every decision about IKE is the engine's.

This module is the composition: `IkeDaemon` builds the parts, wires them to each other through
one DaemonContext (iked/context.py), and owns start-up and shut-down. Each part is one idea:

- udp.py        the UDP 500/4500 sockets, RFC 3948 framing, the read loop, the one way out
- pump.py       the engine flush (events, then datagrams) and its one timer
- reactions.py  what each engine event does (logs, `sa monitor`, counters, hand-offs)
- bridge.py     engine events -> dataplane install / switch / remove (make-before-break)
- traps.py      trap policies and acquires
- restarts.py   dpd_action / close_action
- reload.py     SIGHUP / `sa reload`
- commands.py   the control socket's commands (listing.py: `sa list`, `sa list-conns`)
- waiters.py    commands that wait for an engine event
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import Counter
from collections.abc import Callable
from typing import Any

from ocfpy.esp.dataplane.base import Dataplane
from ocfpy.ike.config import IkeConfig
from ocfpy.ike.errors import IkeUsageError
from ocfpy.ike.events import Event
from ocfpy.iked.bridge import DataplaneBridge
from ocfpy.iked.commands import Commands
from ocfpy.iked.context import DaemonContext, DaemonError
from ocfpy.iked.control import CommandError, ControlServer
from ocfpy.iked.pump import EnginePump
from ocfpy.iked.reactions import Reactions, notify_name
from ocfpy.iked.reload import ConfigReload
from ocfpy.iked.restarts import Restarts
from ocfpy.iked.systemd import Notifier, status_line
from ocfpy.iked.traps import Traps
from ocfpy.iked.udp import Endpoint, UdpSockets
from ocfpy.iked.waiters import Waiters

__all__ = ["DaemonError", "Endpoint", "IkeDaemon", "notify_name", "select_dataplane"]

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 1.5  # seconds to wait for Delete responses on SIGTERM


class IkeDaemon:
    def __init__(self, config: IkeConfig, engine: Any, dataplane: Dataplane, *,
                 dispatcher: Any = None, control_path: str | None = None,
                 notifier: Notifier | None = None,
                 reloader: Callable[[], IkeConfig] | None = None):
        """``notifier``: systemd's notify socket (a no-op one when not under systemd).
        ``reloader``: re-reads the config file (the CLI's: its command-line overrides and the
        log setup apply again); it raises ConfigError for a file that must change nothing."""
        self.config = config
        self.engine = engine
        self.dataplane = dataplane
        self.dispatcher = dispatcher
        self.notifier = notifier or Notifier(None)
        self.control_path = control_path or config.daemon.control_socket
        self.metrics: Any = None  # ocfpy.iked.metrics.MetricsServer when [daemon] metrics is set
        self._watchdog: asyncio.Task | None = None
        self.ctx = ctx = DaemonContext(config, engine, dataplane, dispatcher)
        self.udp = UdpSockets(ctx)
        self.bridge = DataplaneBridge(ctx)
        self.traps = Traps(ctx, self.bridge.is_up)
        self.restarts = Restarts(ctx, self.traps, self.bridge.is_up)
        self.waiters = Waiters()
        self.reactions = Reactions(ctx, self.bridge, self.restarts, self.waiters, self.udp.send,
                                   self._notify_status)
        self.pump = EnginePump(ctx, self.reactions, self.udp.send)
        ctx.service = self.pump.service
        self.config_reload = ConfigReload(ctx, self.traps, self.notifier, reloader,
                                      self.status_text)
        self.commands = Commands(ctx, self.udp, self.bridge, self.traps, self.waiters,
                                 self.config_reload.reload)

    # -- what tests, metrics and the CLI read -------------------------------------------------
    @property
    def stats(self) -> Counter[str]:
        return self.ctx.stats

    @property
    def control(self) -> ControlServer | None:
        return self.ctx.control

    @control.setter
    def control(self, server: ControlServer | None) -> None:
        self.ctx.control = server

    @property
    def _loop(self) -> asyncio.AbstractEventLoop | None:
        return self.ctx.loop

    @property
    def endpoints(self) -> list[Endpoint]:
        return self.udp.endpoints

    @property
    def _waiters(self) -> list:
        return self.waiters.pending

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind the sockets, hand 4500 to the dataplane if it wants it, open the control socket.
        Raises DaemonError / ControlError / OSError with the reason; nothing is left open then."""
        ctx = self.ctx
        ctx.loop = loop = asyncio.get_running_loop()
        ctx.stopped = asyncio.Event()
        self.load_certificates()
        self.udp.open()
        try:
            self.dataplane.set_event_handler(self.bridge.on_lifetime)
            self.dataplane.set_acquire_handler(self.traps.on_acquire)
            self.udp.attach()
            ctx.control = ControlServer(self.control_path, self.commands.handlers())
            await ctx.control.start()
            listen = getattr(self.config.daemon, "metrics", None)
            if listen:
                # MetricsError (no prometheus-client, port taken) refuses the start, before
                # READY=1: an operator who asked for metrics must not get a daemon without them
                from ocfpy.iked.metrics import MetricsServer

                self.metrics = await MetricsServer(self.metrics_snapshot, *listen).start()
        except BaseException:
            self.udp.stop_reading()
            self.udp.close()
            if ctx.control is not None:
                await ctx.control.close()
                ctx.control = None
            raise
        if self.dispatcher is not None and hasattr(self.dispatcher, "registry"):
            # drivers that come and go (hot-plug, a failed device whose sessions move on)
            self.dispatcher.registry.subscribe(self._on_driver_event)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            # systemctl reload (ExecReload=kill -HUP) and the classic daemon convention
            loop.add_signal_handler(signal.SIGHUP, self.config_reload.on_sighup)
        self._service()

    def load_certificates(self) -> None:
        """Load the swanctl-style credentials beside the configuration, open each key's
        signer once (a key that cannot sign, or a token that refuses, shows now, not at the
        first IKE_AUTH), and hand them to the engine with the wall clock certificates are
        judged by. Raises DaemonError with file:line: key: reason."""
        from datetime import UTC, datetime

        from ocfpy.iked.configfile import ConfigError, open_cert_store

        try:  # the same call as `ocfpy iked --check`, so the check refuses what start does
            store, warnings = open_cert_store(self.config, now=datetime.now(UTC),
                                              dispatcher=self.dispatcher)
        except ConfigError as exc:
            raise DaemonError(str(exc)) from None
        if store is None:
            return
        for w in warnings:
            log.warning("credentials: %s", w)
        self.engine.ctx.credentials.use_certificates(store, lambda: datetime.now(UTC))
        log.info("credentials: %d certificate(s) with keys, %d CA certificate(s), %d CRL(s)",
                 len(store.local), len(store.cas), len(store.crls))

    def start_actions(self) -> None:
        """Install the trap of every child with start_action = trap and initiate every child
        with start_action = start (after start(), like charon)."""
        now = self.ctx.loop.time()  # type: ignore[union-attr]
        for conn in self.config.connections.values():
            for child in conn.children.values():
                if child.start_action == "trap":
                    self.traps.install(conn.name, child.name, "start_action")
                if child.start_action != "start":
                    continue
                log.info("start_action: initiating %s/%s", conn.name, child.name)
                try:
                    self.engine.initiate(conn.name, now, child=child.name)
                except IkeUsageError as exc:  # one bad connection must not stop the others
                    log.error("start_action of %s/%s: %s", conn.name, child.name, exc)
        self._service()

    def stop(self) -> None:
        if self.ctx.stopped is not None:
            self.ctx.stopped.set()

    async def run(self, ready: Callable[[], None] | None = None) -> int:
        """Start, call ready() (the CLI tells its parent it may exit), run the start actions,
        serve until stop() (SIGTERM/SIGINT), then shut down cleanly; returns the exit code."""
        await self.start()
        if ready is not None:
            ready()
        # sd_notify(3): sockets are bound and the config is loaded; `systemctl start` returns
        self.notifier.ready(self.status_text())
        if self.notifier.watchdog_period is not None:
            self._watchdog = asyncio.ensure_future(self.notifier.run_watchdog())
        self.start_actions()
        await self.ctx.stopped.wait()  # type: ignore[union-attr]
        await self.shutdown()
        return 0

    async def shutdown(self) -> None:
        """Delete every SA (the peers hear of it), wait briefly for the answers, clean up."""
        log.info("shutting down: deleting all SAs")
        self.notifier.stopping("deleting all SAs")
        self._publish("shutdown")
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        loop = self.ctx.loop
        assert loop is not None
        try:
            self.engine.shutdown(loop.time())
        except Exception:
            log.exception("engine shutdown failed")
        self._service()
        deadline = loop.time() + SHUTDOWN_GRACE
        while loop.time() < deadline and self.ctx.sa_list():
            await asyncio.sleep(0.05)
        self.pump.cancel_timer()
        self.bridge.cancel_retiring()
        self.udp.stop_reading()
        try:
            self.dataplane.close()
        except Exception:
            log.exception("dataplane close failed")
        self.udp.close()
        if self.ctx.control is not None:
            await self.ctx.control.close()
        if self.metrics is not None:
            await self.metrics.close()
            self.metrics = None
        self.waiters.fail_all(CommandError("the daemon is shutting down"))
        log.info("stopped")

    # -- systemd -------------------------------------------------------------------------------
    def status_text(self) -> str:
        """systemd's STATUS= line: SAs up and connections loaded."""
        ike_up = child_up = half_open = 0
        for sa in self.ctx.sa_list():
            if sa.get("state") == "established":
                ike_up += 1
                child_up += len(sa.get("children", []))
            else:
                half_open += 1
        return status_line(ike_up, child_up, len(self.config.connections), half_open)

    def _notify_status(self) -> None:
        # status_text() walks every SA: only worth it when someone (systemd) listens
        if self.notifier.enabled:
            self.notifier.status(self.status_text())

    # -- reload --------------------------------------------------------------------------------
    async def reload(self) -> dict:
        """SIGHUP, `ocfpy sa reload`: iked/reload.py."""
        return await self.config_reload.reload()

    def apply_config(self, new: IkeConfig) -> dict:
        return self.config_reload.apply(new)

    # -- the engine ------------------------------------------------------------------------
    def _service(self) -> None:
        """Flush the engine's output, deliver its events, re-arm its timer (iked/pump.py)."""
        self.pump.service()

    def _event(self, event: Event) -> None:
        """One engine event, as the pump delivers it (iked/reactions.py)."""
        self.reactions(event)

    def _publish(self, kind: str, **fields: Any) -> None:
        self.ctx.publish(kind, **fields)

    def _cmd_list(self, request: dict) -> list[dict]:
        return self.commands.list(request)

    def _on_driver_event(self, what: str, record: Any) -> None:
        """Registry listener: a driver became active or went away (may run in the hot-plug
        thread: the event is handed to the loop)."""
        loop = self.ctx.loop
        if loop is None or loop.is_closed():
            return
        fields = {"driver": record.name, "status": record.status.value,
                  "reason": record.reason,
                  "quarantined": sorted(getattr(record, "quarantined", {}) or {})}
        loop.call_soon_threadsafe(lambda: self._publish(f"driver-{what}", **fields))

    # -- metrics ---------------------------------------------------------------------------
    def metrics_snapshot(self):
        """What `ocfpy.iked.metrics` serves at each scrape: read from the engine's, the
        dataplane's and the dispatcher's own counters, so nothing is counted twice."""
        from ocfpy.iked.metrics import MetricsSnapshot

        ike: Counter[str] = Counter()
        child: Counter[str] = Counter()
        uids = []
        for sa in self.ctx.sa_list():
            ike[str(sa.get("state"))] += 1
            for c in sa.get("children", []):
                child["installed" if c.get("unique_id") in self.bridge.names else "other"] += 1
                if c.get("unique_id") is not None:
                    uids.append(c["unique_id"])
        packets: Counter[str] = Counter()
        nbytes: Counter[str] = Counter()
        drops: Counter[str] = Counter()
        for uid in uids:
            try:
                c = self.dataplane.counters(uid)
            except Exception:  # not installed (dataplane none), or just removed
                continue
            packets["in"] += c.packets_in
            packets["out"] += c.packets_out
            nbytes["in"] += c.bytes_in
            nbytes["out"] += c.bytes_out
            drops["replay"] += c.replay_drops
            drops["auth"] += c.auth_failures
            drops["malformed"] += c.malformed
        ops: dict[str, int] = {}
        failovers: dict[str, int] = {}
        if self.dispatcher is not None:
            for driver, counters in self.dispatcher.stats().items():
                ops[driver] = counters.get("ops", 0)
                failovers[driver] = counters.get("migrations", 0)
        engine_stats = self.engine.stats
        reactions = self.reactions
        return MetricsSnapshot(
            ike_sas=dict(ike), child_sas=dict(child),
            negotiation_failures=dict(reactions.failures),
            rekeys={"ike": engine_stats.get("ike_rekeyed", 0),
                    "child": reactions.rekeys["child"]},
            dpd_failures=reactions.dpd_failures, packets=dict(packets), bytes=dict(nbytes),
            drops=dict(drops), crypto_ops=ops, crypto_failovers=failovers)


# -- dataplane selection ----------------------------------------------------------------------
def select_dataplane(name: str, dispatcher: Any = None, config: IkeConfig | None = None) -> Dataplane:
    """The dataplane named in the config or on the command line (ocfpy.esp.dataplane.select
    decides; ``none`` must be asked for, ``auto`` logs which it took and why)."""
    from ocfpy.esp.dataplane.select import DataplaneUnavailable, choose_dataplane

    try:
        return choose_dataplane(name, dispatcher, config)
    except DataplaneUnavailable as exc:
        raise DaemonError(str(exc)) from exc
