"""The IKEv2 daemon: a thin asyncio shell around the sans-I/O `IkeEngine`.

It only translates (aioquic's asyncio/protocol.py is the model): datagrams from the UDP 500
and 4500 sockets go into ``engine.receive_datagram``, ``engine.datagrams_to_send`` goes out,
one ``loop.call_at`` is re-armed from ``engine.get_timer()``, and engine events become dataplane
calls. Every decision about IKE is the engine's; the only protocol knowledge here is RFC 3948
framing on port 4500 (a non-ESP marker of four zero bytes precedes IKE, a single 0xff byte is
a NAT keepalive, anything else is ESP for the dataplane).

Sockets are bound per listen address (wildcards by default) with IP_PKTINFO/IPV6_RECVPKTINFO,
so the engine learns which local address a request came to and replies leave from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import signal
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ocfpy.crypto.errors import OcfError
from ocfpy.esp.dataplane.base import Acquire, Dataplane, TrapSpec
from ocfpy.ike.config import IkeConfig
from ocfpy.ike.errors import IkeUsageError
from ocfpy.ike.events import (
    ChildSaClosed,
    ChildSaEstablished,
    ChildSaOutbound,
    Event,
    IkeSaClosed,
    IkeSaEstablished,
    NegotiationFailed,
    SendKeepalive,
)
from ocfpy.iked import logsetup
from ocfpy.iked.control import CommandError, ControlServer
from ocfpy.iked.systemd import Notifier, status_line

log = logging.getLogger(__name__)
#: the daemon's socket I/O: the ``net`` subsystem of [daemon.log] (charon's NET)
netlog = logging.getLogger("ocfpy.iked.net")
#: configuration (re)loading: the ``cfg`` subsystem (charon's CFG)
cfglog = logging.getLogger("ocfpy.iked.cfg")

Addr = tuple[str, int]

NON_ESP_MARKER = b"\x00\x00\x00\x00"
NAT_KEEPALIVE = b"\xff"
RECV_BATCH = 64  # datagrams read per wakeup before the engine's output is flushed
SHUTDOWN_GRACE = 1.5  # seconds to wait for Delete responses on SIGTERM
#: dpd_action / close_action = start: the first restart is at once; one that follows an
#: earlier restart of the connection within RESTART_STABLE seconds waits 1, 2, 4 ... s, at
#: most RESTART_BACKOFF_MAX (a peer that deletes whatever we set up must not be flooded)
RESTART_STABLE = 60.0
RESTART_BACKOFF_MAX = 60.0

# Linux values; the socket module lacks IP_PKTINFO on some builds.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_CMSG_SPACE = socket.CMSG_SPACE(64)


@dataclass
class Endpoint:
    """One bound UDP socket."""

    sock: socket.socket
    family: int
    address: str  # as bound; "0.0.0.0" / "::" for wildcards
    port: int
    nat_t: bool  # port 4500 framing
    taken_by_dataplane: bool = False

    @property
    def wildcard(self) -> bool:
        return ipaddress.ip_address(self.address).is_unspecified


class DaemonError(OcfError):
    """The daemon cannot start (port in use, nothing to listen on...); the message says why."""


class IkeDaemon:
    def __init__(self, config: IkeConfig, engine: Any, dataplane: Dataplane, *,
                 dispatcher: Any = None, control_path: str | None = None,
                 notifier: Notifier | None = None,
                 reloader: Callable[[], IkeConfig] | None = None):
        """``notifier``: systemd's notify socket (a no-op one when not under systemd).
        ``reloader``: re-reads the config file (the CLI's: its command-line overrides and the
        log setup apply again); it raises ConfigError for a file that must change nothing."""
        self.config = config
        self.notifier = notifier or Notifier(None)
        self.reloader = reloader
        self.metrics: Any = None  # ocfpy.iked.metrics.MetricsServer when [daemon] metrics is set
        self._watchdog: asyncio.Task | None = None
        #: negotiation failures by reason (the notify's name, or "timeout"), for metrics
        self.failures: Counter[str] = Counter()
        self.dpd_failures = 0
        self._child_names: dict[int, str] = {}  # CHILD_SA unique id -> "conn/child", for logs
        self.rekeys: Counter[str] = Counter()  # "ike" / "child": completed rekeys
        #: the last send failure towards each remote address: `sa why` and `sa initiate` say
        #: it, as the engine cannot know that its datagram never left
        self.send_errors: dict[str, str] = {}
        self._child_up_at: dict[int, float] = {}  # CHILD_SA unique id -> loop time installed
        # rekeyed CHILD_SAs whose inbound SA still accepts (grace period): unique id -> timer
        self._retiring: dict[int, asyncio.TimerHandle] = {}
        self._restarts: dict[str, tuple[int, float]] = {}  # conn -> (restarts in a row, when)
        self.reloads: Counter[str] = Counter()  # "ok" / "failed"
        #: trap policies installed: "conn/child" -> (spec, what installed it: start_action,
        #: dpd_action or close_action, since when (wall clock))
        self.traps: dict[str, tuple[TrapSpec, str, float]] = {}
        self.acquires: Counter[str] = Counter()  # per trap key: acquires acted on
        self.engine = engine
        self.dataplane = dataplane
        self.dispatcher = dispatcher
        self.control_path = control_path or config.daemon.control_socket
        self.endpoints: list[Endpoint] = []
        self.stats: Counter[str] = Counter()
        self.control: ControlServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stopped: asyncio.Event | None = None
        self._waiters: list[tuple[Callable[[Any], Any], asyncio.Future]] = []
        self.started_at = time.time()

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind the sockets, hand 4500 to the dataplane if it wants it, open the control socket.
        Raises DaemonError / ControlError / OSError with the reason; nothing is left open then."""
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self.load_certificates()
        self._open_sockets()
        try:
            self.dataplane.set_event_handler(self._on_dataplane_event)
            self.dataplane.set_acquire_handler(self._on_acquire)
            for ep in self.endpoints:
                self.dataplane.prepare_ike_socket(ep.sock)
                if ep.nat_t and self.dataplane.attach_udp_encap(
                        ep.sock, lambda data, remote, ep=ep: self._ike_from_dataplane(ep, data, remote)):
                    ep.taken_by_dataplane = True
                    netlog.info("dataplane %s reads UDP %s:%d (ESP-in-UDP)", self.dataplane.name,
                             ep.address, ep.port)
                else:
                    self._loop.add_reader(ep.sock.fileno(), self._on_readable, ep)
            self.control = ControlServer(self.control_path, self._control_handlers())
            await self.control.start()
            listen = getattr(self.config.daemon, "metrics", None)
            if listen:
                # MetricsError (no prometheus-client, port taken) refuses the start, before
                # READY=1: an operator who asked for metrics must not get a daemon without them
                from ocfpy.iked.metrics import MetricsServer

                self.metrics = await MetricsServer(self.metrics_snapshot, *listen).start()
        except BaseException:
            for ep in self.endpoints:
                self._loop.remove_reader(ep.sock.fileno())
                ep.sock.close()
            self.endpoints.clear()
            if self.control is not None:
                await self.control.close()
                self.control = None
            raise
        if self.dispatcher is not None and hasattr(self.dispatcher, "registry"):
            # drivers that come and go (hot-plug, a failed device whose sessions move on)
            self.dispatcher.registry.subscribe(self._on_driver_event)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self._loop.add_signal_handler(sig, self.stop)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            # systemctl reload (ExecReload=kill -HUP) and the classic daemon convention
            self._loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
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
        now = self._loop.time()  # type: ignore[union-attr]
        for conn in self.config.connections.values():
            for child in conn.children.values():
                if child.start_action == "trap":
                    self._trap(conn.name, child.name, "start_action")
                if child.start_action != "start":
                    continue
                log.info("start_action: initiating %s/%s", conn.name, child.name)
                try:
                    self.engine.initiate(conn.name, now, child=child.name)
                except IkeUsageError as exc:  # one bad connection must not stop the others
                    log.error("start_action of %s/%s: %s", conn.name, child.name, exc)
        self._service()

    def stop(self) -> None:
        if self._stopped is not None:
            self._stopped.set()

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
        await self._stopped.wait()  # type: ignore[union-attr]
        await self.shutdown()
        return 0

    def status_text(self) -> str:
        """systemd's STATUS= line: SAs up and connections loaded."""
        ike_up = child_up = half_open = 0
        for sa in self._sa_list():
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

    def _sa_list(self) -> list[dict]:
        try:
            return self.engine.sa_list()
        except Exception:
            return []

    async def shutdown(self) -> None:
        """Delete every SA (the peers hear of it), wait briefly for the answers, clean up."""
        log.info("shutting down: deleting all SAs")
        self.notifier.stopping("deleting all SAs")
        self._publish("shutdown")
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        loop = self._loop
        assert loop is not None
        try:
            self.engine.shutdown(loop.time())
        except Exception:
            log.exception("engine shutdown failed")
        self._service()
        deadline = loop.time() + SHUTDOWN_GRACE
        while loop.time() < deadline and self._engine_has_sas():
            await asyncio.sleep(0.05)
        self._cancel_timer()
        for handle in self._retiring.values():  # close() removes every CHILD_SA anyway
            handle.cancel()
        self._retiring.clear()
        for ep in self.endpoints:
            with contextlib.suppress(Exception):
                loop.remove_reader(ep.sock.fileno())
        try:
            self.dataplane.close()
        except Exception:
            log.exception("dataplane close failed")
        for ep in self.endpoints:
            ep.sock.close()
        self.endpoints.clear()
        if self.control is not None:
            await self.control.close()
        if self.metrics is not None:
            await self.metrics.close()
            self.metrics = None
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(CommandError("the daemon is shutting down"))
        log.info("stopped")

    def _engine_has_sas(self) -> bool:
        try:
            return bool(self.engine.sa_list())
        except Exception:
            return False

    # -- sockets ---------------------------------------------------------------------------
    def _open_sockets(self) -> None:
        opts = self.config.daemon
        problems = []
        for address in opts.listen:
            ip = ipaddress.ip_address(address)
            for port, nat_t in ((opts.port, False), (opts.port_nat_t, True)):
                try:
                    self.endpoints.append(self._bind(ip, port, nat_t))
                except OSError as exc:
                    why = f"UDP {address} port {port}: {exc.strerror or exc}"
                    if exc.errno == errno.EACCES and port < 1024:
                        why += " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
                    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) and ip.is_unspecified:
                        netlog.warning("not listening on %s (this host has no IPv%d?)", why,
                                    ip.version)
                        continue
                    problems.append(why)
        if problems:
            for ep in self.endpoints:
                ep.sock.close()
            self.endpoints.clear()
            raise DaemonError("cannot listen: " + "; ".join(problems)
                              + (" (another IKE daemon running? charon?)"
                                 if any("in use" in p for p in problems) else ""))
        if not self.endpoints:
            raise DaemonError(f"nothing to listen on: daemon.listen = {opts.listen}")

    @staticmethod
    def _bind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, nat_t: bool) -> Endpoint:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            # no SO_REUSEADDR: on Linux it lets a second daemon bind the same UDP port and
            # silently steal its datagrams; "address in use" is the answer we want
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.bind((str(ip), port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        netlog.info("listening on UDP [%s]:%d%s", ip, port, " (NAT-T framing)" if nat_t else "")
        return Endpoint(sock, family, str(ip), port, nat_t)

    def _on_readable(self, ep: Endpoint) -> None:
        now = self._loop.time()  # type: ignore[union-attr]
        for _ in range(RECV_BATCH):
            try:
                data, ancdata, _flags, remote = ep.sock.recvmsg(65535, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ECONNREFUSED from an ICMP port unreachable
                self.stats["receive_errors"] += 1
                netlog.debug("receive on %s:%d: %s", ep.address, ep.port, exc)
                continue
            local = (self._destination(ep, ancdata), ep.port)
            self._datagram(ep, data, local, (remote[0], remote[1]), now)
        self._service()

    @staticmethod
    def _destination(ep: Endpoint, ancdata: list) -> str:
        """The local address the datagram was sent to (from IP_PKTINFO / IPV6_PKTINFO)."""
        for level, kind, value in ancdata:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= 12:
                return socket.inet_ntop(socket.AF_INET, value[8:12])  # ipi_addr
            if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(value) >= 16:
                return socket.inet_ntop(socket.AF_INET6, value[:16])
        return ep.address

    def _datagram(self, ep: Endpoint, data: bytes, local: Addr, remote: Addr, now: float) -> None:
        self.stats["datagrams_in"] += 1
        if ep.nat_t:
            if data == NAT_KEEPALIVE:
                self.stats["keepalives_in"] += 1
                return
            if len(data) < 4:
                self.stats["dropped_short"] += 1
                return
            if data[:4] != NON_ESP_MARKER:
                # ESP-in-UDP while the dataplane does not read this socket: it has no SA for it.
                self.stats["esp_in_udp_unclaimed"] += 1
                return
            data = data[4:]
        self._to_engine(data, local, remote, now)

    def _to_engine(self, data: bytes, local: Addr, remote: Addr, now: float) -> None:
        try:
            self.engine.receive_datagram(data, local, remote, now)
        except Exception:  # the engine promises not to raise; if it does, drop, never die
            self.stats["engine_errors"] += 1
            log.exception("engine failed on a datagram from %s:%d (dropped)", *remote)

    def _ike_from_dataplane(self, ep: Endpoint, data: bytes, remote: tuple) -> None:
        """IKE on 4500 that a user-space dataplane read (marker already stripped)."""
        loop = self._loop
        assert loop is not None
        local_ip = ep.address if not ep.wildcard else _route_source(remote[0], ep.family)
        self.stats["datagrams_in"] += 1
        self._to_engine(data, (local_ip, ep.port), (remote[0], remote[1]), loop.time())
        self._service()

    def _send(self, data: bytes, local: Addr, remote: Addr) -> None:
        ep = self._endpoint_for(local, remote)
        if ep is None:
            self.stats["send_errors"] += 1
            why = (f"no socket for sending from {local[0]}:{local[1]} to {remote[0]}:"
                   f"{remote[1]} (daemon.listen = {self.config.daemon.listen}, ports "
                   f"{self.config.daemon.port}/{self.config.daemon.port_nat_t})")
            self.send_errors[remote[0]] = why
            netlog.error("%s", why)
            return
        if ep.nat_t and data != NAT_KEEPALIVE:
            data = NON_ESP_MARKER + data
        ancdata = []
        if ep.wildcard and local[0] and not ipaddress.ip_address(local[0]).is_unspecified:
            ancdata = [_pktinfo(ep.family, local[0])]
        try:
            ep.sock.sendmsg([data], ancdata, 0, (remote[0], remote[1]))
            self.stats["datagrams_out"] += 1
            self.send_errors.pop(remote[0], None)
        except OSError as exc:
            self.stats["send_errors"] += 1
            self.send_errors[remote[0]] = (f"sending to {remote[0]}:{remote[1]} failed: "
                                           f"{exc.strerror or exc}")
            netlog.warning("send to %s:%d failed: %s", remote[0], remote[1], exc.strerror or exc)

    def _endpoint_for(self, local: Addr, remote: Addr) -> Endpoint | None:
        family = socket.AF_INET6 if ":" in remote[0] else socket.AF_INET
        fallback = None
        for ep in self.endpoints:
            if ep.port != local[1] or ep.family != family:
                continue
            if ep.address == local[0]:
                return ep
            if ep.wildcard:
                fallback = ep
        return fallback

    # -- the engine ------------------------------------------------------------------------
    def _service(self) -> None:
        """Flush the engine's output, deliver its events, re-arm its timer."""
        loop = self._loop
        assert loop is not None
        for _ in range(4):  # events may make more output (and the other way round)
            # Events first: a CREATE_CHILD_SA (or IKE_AUTH) response must not leave before
            # the inbound SA it lets the peer use is installed (make-before-break, docs/ike.md
            # *Rekeying*; charon's child_create installs in build_r too), so the initiator's
            # first ESP packet (a trap's held packets go out the moment its SA is up) never
            # finds the responder without the SA
            handled = 0
            while (event := self.engine.next_event()) is not None:
                handled += 1
                self._event(event)
            now = loop.time()
            out = self.engine.datagrams_to_send(now)
            for data, local, remote in out:
                self._send(data, local, remote)
            if not out and not handled:
                break
        self._arm_timer()

    def _arm_timer(self) -> None:
        when = self.engine.get_timer()
        if when == self._timer_at:
            return
        self._cancel_timer()
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)  # type: ignore[union-attr]
            self._timer_at = when

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.engine.handle_timer(self._loop.time())  # type: ignore[union-attr]
        except Exception:
            self.stats["engine_errors"] += 1
            log.exception("engine timer failed")
        self._service()

    def _event(self, event: Event) -> None:
        kind = type(event).__name__
        self.stats[f"event_{kind}"] += 1
        try:
            match event:
                case IkeSaEstablished():
                    log.log(logsetup.AUDIT, "IKE_SA %s[%s] established", event.name,
                            event.ike_id)
                    old = self._rekeyed_from(event.ike_id)
                    if old is None:
                        self._publish("ike-up", name=event.name, ike_id=event.ike_id)
                    else:
                        self.rekeys["ike"] += 1
                        self._publish("ike-rekey", name=event.name, ike_id=event.ike_id,
                                      old_ike_id=old)
                    self._notify_status()
                case IkeSaClosed():
                    log.log(logsetup.AUDIT, "IKE_SA %s[%s] closed: %s", event.name,
                            event.ike_id, event.reason)
                    self._publish("ike-down", name=event.name, ike_id=event.ike_id,
                                  reason=event.reason)
                    self._notify_status()
                    if event.reason == "deleted by peer":  # its Delete (RFC 7296 1.4.1)
                        self._restart_children(event.name, "close_action", "the peer closed it")
                case ChildSaEstablished():
                    spec = event.spec
                    # a CHILD_SA of a conn/child already up is its rekey (RFC 7296 2.8); the
                    # old one's Delete follows
                    old = next((uid for uid, name in self._child_names.items()
                                if name == spec.name), None)
                    self._install(event)
                    fields = dict(name=spec.name, ike_id=event.ike_id,
                                  unique_id=spec.unique_id, spi_in=f"{spec.inbound.spi:08x}",
                                  spi_out=f"{spec.outbound.spi:08x}")
                    if old is None:
                        self._publish("child-up", **fields)
                    else:
                        self.rekeys["child"] += 1
                        self._publish("child-rekey", old_unique_id=old, **fields)
                    self._notify_status()
                case ChildSaOutbound():
                    self._activate(event)
                case ChildSaClosed():
                    name = self._child_names.get(event.unique_id)
                    self._remove(event)
                    self._publish("child-down", name=name, ike_id=event.ike_id,
                                  unique_id=event.unique_id, reason=event.reason)
                    self._notify_status()
                    if event.reason == "deleted by peer" and name:
                        self._child_closed_by_peer(event.ike_id, name)
                case NegotiationFailed():
                    reason = notify_name(event.notify) or "timeout"
                    self.failures[reason] += 1
                    if "(dead peer detection)" in event.explanation:  # IkeSa.no_answer's words
                        self.dpd_failures += 1
                        self._publish("dpd", name=event.name, result="dead",
                                      explanation=event.explanation)
                        self._restart_children(event.name, "dpd_action", "the peer is dead")
                    else:
                        self._publish("failure", name=event.name,
                                      notify=notify_name(event.notify),
                                      explanation=event.explanation)
                    log.warning("%s: negotiation failed (%s): %s", event.name,
                                notify_name(event.notify), event.explanation)
                case SendKeepalive():
                    self._send(NAT_KEEPALIVE, tuple(event.local), tuple(event.remote))  # type: ignore[arg-type]
                case _:
                    log.info("%s", event)
        except Exception:
            log.exception("handling %s failed", kind)
        for match, fut in list(self._waiters):
            if not fut.done():
                verdict = match(event)
                if verdict is not None:
                    fut.set_result(verdict)

    # -- dpd_action / close_action ------------------------------------------------------------
    def _restart_children(self, conn_name: str, action: str, why: str,
                          only: str | None = None) -> None:
        """Re-establish the children of ``conn_name`` whose ``action`` (dpd_action or
        close_action) is "start", as charon does; keyingtries then bounds each attempt."""
        conn = self.config.connections.get(conn_name)
        if conn is None or self._stopped is None or self._stopped.is_set():
            return  # removed by a reload, or we are the ones stopping
        for c in conn.children.values():  # swanctl's "trap": the next packet brings it back
            if getattr(c, action, "none") == "trap" and (only is None or c.name == only):
                log.log(logsetup.AUDIT, "%s: %s, %s = trap", conn_name, why, action)
                self._trap(conn_name, c.name, action)
        children = [c.name for c in conn.children.values()
                    if getattr(c, action, "none") == "start" and (only is None or c.name == only)]
        if not children:
            return
        loop = self._loop
        assert loop is not None
        now = loop.time()
        count, last = self._restarts.get(conn_name, (0, float("-inf")))
        count = count + 1 if now - last < RESTART_STABLE else 1
        delay = 0.0 if count == 1 else min(2.0 ** (count - 2), RESTART_BACKOFF_MAX)
        self._restarts[conn_name] = (count, now)
        log.log(logsetup.AUDIT, "%s: %s, %s = start: re-establishing %s in %gs", conn_name, why,
                action, ", ".join(children), delay)
        self._publish("restart", name=conn_name, children=children, action=action,
                      delay=delay, reason=why)
        loop.call_later(delay, self._do_restart, conn_name, children)

    def _do_restart(self, conn_name: str, children: list[str]) -> None:
        if self._stopped is None or self._stopped.is_set() \
                or conn_name not in self.config.connections:
            return
        for child in children:
            try:
                self.engine.initiate(conn_name, self._loop.time(), child=child)  # type: ignore[union-attr]
            except IkeUsageError as exc:
                log.error("restart of %s/%s: %s", conn_name, child, exc)
        self._service()

    # -- trap policies (start_action / dpd_action / close_action = "trap") --------------------
    def _trap_spec(self, conn_name: str, child_name: str) -> TrapSpec:
        """The child's selectors as a trap. "dynamic" stands for the connection's own
        addresses (charon resolves it the same way for its traps); a connection without a
        single local and remote address cannot be trapped: there is nobody to start to."""
        from ocfpy.esp.spec import Mode
        from ocfpy.ike import selectors

        conn = self.config.connections[conn_name]
        child = conn.children[child_name]
        local = [a for a in conn.local_addrs if not a.startswith("%") and "/" not in a and
                 "-" not in a]
        remote = [a for a in conn.remote_addrs if not a.startswith("%") and "/" not in a and
                  "-" not in a]
        if not remote:
            raise IkeUsageError("a trap needs a remote address to start to: set remote_addrs")
        if "dynamic" in child.local_ts and not local:
            raise IkeUsageError("local_ts = dynamic needs local_addrs for a trap")
        opts = self.config.daemon
        return TrapSpec(
            key=f"{conn_name}/{child_name}",
            local_ts=tuple(selectors.parse(child.local_ts, local[0] if local else "")),
            remote_ts=tuple(selectors.parse(child.remote_ts, remote[0])),
            mode=Mode(child.mode), local=ipaddress.ip_address(local[0]) if local else None,
            remote=ipaddress.ip_address(remote[0]),
            queue=getattr(opts, "trap_queue", 8), queue_timeout=getattr(opts, "trap_hold", 5.0),
            acquire_interval=getattr(opts, "trap_acquire_interval", 1.0))

    def _trap(self, conn_name: str, child_name: str, why: str) -> bool:
        """Install (or replace) the child's trap; a failure is logged, never fatal (one bad
        connection must not stop the others, as with start_action = start)."""
        key = f"{conn_name}/{child_name}"
        try:
            spec = self._trap_spec(conn_name, child_name)
            self.dataplane.install_trap(spec)
        except Exception as exc:
            log.error("%s = trap of %s: %s", why, key, exc)
            return False
        old = self.traps.get(key)
        self.traps[key] = (spec, old[1] if old else why, old[2] if old else time.time())
        log.log(logsetup.AUDIT, "trap %s installed (%s): %s === %s", key, why,
                ",".join(map(str, spec.local_ts)), ",".join(map(str, spec.remote_ts)))
        self._publish("trap", name=key, action=why)
        return True

    def _untrap(self, key: str) -> None:
        if self.traps.pop(key, None) is None:
            return
        try:
            self.dataplane.remove_trap(key)
        except Exception as exc:
            log.error("removing the trap of %s: %s", key, exc)
        log.log(logsetup.AUDIT, "trap %s removed", key)
        self._publish("untrap", name=key)

    def _on_acquire(self, acq: Acquire) -> None:
        """A packet hit a trap (the dataplane rate-limits these per trap): negotiate the
        child. The engine reuses an IKE SA of the connection that is up or coming up and
        never starts a second CHILD_SA of the same name on it, so a repeated acquire while
        one negotiation runs starts nothing new. keyingtries bounds the negotiation.
        Selectors: the child's configured ones (a superset of the packet's flow), not
        narrowed to the packet (charon can send the packet's addresses first, RFC 7296 2.9;
        ocfpy's initiator proposes its configured selectors only)."""
        if self._stopped is None or self._stopped.is_set():
            return
        if self._elsewhere(self._on_acquire, acq):
            return
        if acq.key not in self.traps:
            self.stats["acquires_ignored"] += 1
            return
        conn_name, _, child = acq.key.partition("/")
        if acq.key in self._child_names.values():
            self.stats["acquires_ignored"] += 1  # its CHILD_SA is up: a race with the install
            return
        self.acquires[acq.key] += 1
        flow = f"{acq.src} -> {acq.dst}" + (f" proto {acq.protocol}" if acq.protocol else "")
        log.log(logsetup.AUDIT, "acquire for trap %s (%s): initiating", acq.key, flow)
        self._publish("acquire", name=acq.key, src=acq.src, dst=acq.dst, protocol=acq.protocol)
        try:
            self.engine.initiate(conn_name, self._loop.time(), child=child)  # type: ignore[union-attr]
        except IkeUsageError as exc:
            log.error("acquire for %s: %s", acq.key, exc)
        self._service()

    def _sync_traps(self, result: dict) -> None:
        """After a reload: traps of removed connections go; a changed connection's traps are
        replaced by the new config's (start_action = trap), others of it removed; an added
        connection's are installed; an unchanged connection's stay as they are."""
        for key in list(self.traps):
            conn_name, _, child = key.partition("/")
            if conn_name in result.get("removed", ()):
                self._untrap(key)
            elif conn_name in result.get("changed", ()):
                c = self.config.connections[conn_name].children.get(child)
                if c is None or c.start_action != "trap":
                    self._untrap(key)
        for conn_name in (*result.get("added", ()), *result.get("changed", ())):
            for c in self.config.connections[conn_name].children.values():
                if c.start_action == "trap":
                    self._trap(conn_name, c.name, "start_action")

    def _child_closed_by_peer(self, ike_id: int, name: str) -> None:
        """The peer deleted one CHILD_SA; its IKE SA lives on. Not a close when it was a rekey
        (a CHILD_SA of the same name is still up) or when the IKE SA went too (handled there)."""
        if name in self._child_names.values():
            return
        sa = None
        with contextlib.suppress(Exception):
            sa = self.engine.sas.by_id(ike_id)
        if sa is None or not sa.is_established:
            return
        conn_name, _, child = name.partition("/")
        self._restart_children(conn_name, "close_action", "the peer closed " + name, only=child)

    def _now(self) -> float:
        """The engine's clock: the loop's (time.monotonic() too, also before start())."""
        return self._loop.time() if self._loop is not None else time.monotonic()

    def _publish(self, kind: str, **fields: Any) -> None:
        """One event for `ocfpy sa monitor` subscribers (never waits: see ControlServer)."""
        if self.control is not None and self.control.subscribers:
            self.control.publish({"event": kind, "time": round(time.time(), 3), **fields})

    def _rekeyed_from(self, ike_id: int) -> int | None:
        """The IKE SA that ``ike_id`` replaced by a rekey (IkeSa.replaced_by), if any."""
        with contextlib.suppress(Exception):
            for sa in self.engine.sas:
                if getattr(sa, "replaced_by", None) == ike_id:
                    return sa.id
        return None

    def _on_driver_event(self, what: str, record: Any) -> None:
        """Registry listener: a driver became active or went away (may run in the hot-plug
        thread: the event is handed to the loop)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        fields = {"driver": record.name, "status": record.status.value,
                  "reason": record.reason,
                  "quarantined": sorted(getattr(record, "quarantined", {}) or {})}
        loop.call_soon_threadsafe(lambda: self._publish(f"driver-{what}", **fields))

    def _install(self, ev: ChildSaEstablished) -> None:
        spec = ev.spec
        self._child_names[spec.unique_id] = spec.name
        self._child_up_at[spec.unique_id] = self._now()
        started = time.perf_counter()
        try:
            if ev.outbound:
                self.dataplane.install(spec)
            else:  # a rekey: inbound now, outbound ready but unused until ChildSaOutbound
                self.dataplane.install(spec, outbound=False, replaces=ev.replaces)
            self._timed("install", started)
            self.stats["children_installed"] += 1
            # charon's notation: name[IKE_SA id], name{CHILD_SA id}
            log.log(logsetup.AUDIT, "CHILD_SA %s{%d} established (IKE_SA #%d), SPIs %08x_i "
                    "%08x_o", spec.name, spec.unique_id, ev.ike_id, spec.inbound.spi,
                    spec.outbound.spi)
        except Exception as exc:
            self.stats["install_failures"] += 1
            log.error("dataplane %s could not install CHILD_SA %s #%d: %s", self.dataplane.name,
                      spec.name, spec.unique_id, exc)

    def _remove(self, ev: ChildSaClosed) -> None:
        # Say why: a peer that deletes a CHILD_SA right after creating it (charon when its
        # kernel interface refuses the SA) leaves no other trace here.
        self._child_up_at.pop(ev.unique_id, None)
        log.log(logsetup.AUDIT, "CHILD_SA %s{%d} (IKE_SA #%d) closed: %s",
                self._child_names.pop(ev.unique_id, "?"), ev.unique_id, ev.ike_id, ev.reason)
        if ev.grace > 0 and self._loop is not None:
            # a rekeyed CHILD_SA: its successor carries the outbound traffic already; the old
            # inbound SA takes what is still in flight for ev.grace seconds (docs/ike.md)
            self._retiring[ev.unique_id] = self._loop.call_later(
                ev.grace, self._remove_now, ev.unique_id)
            return
        self._remove_now(ev.unique_id)

    def _remove_now(self, unique_id: int) -> None:
        self._retiring.pop(unique_id, None)
        self._collect_drops(unique_id)
        try:
            self.dataplane.remove(unique_id)
        except Exception as exc:
            log.error("dataplane %s could not remove CHILD_SA #%d: %s", self.dataplane.name,
                      unique_id, exc)

    def _activate(self, ev: ChildSaOutbound) -> None:
        """The peer can decrypt the new CHILD_SA: send on it from now on (one step)."""
        started = time.perf_counter()
        try:
            self.dataplane.activate(ev.unique_id)
            self._timed("switch", started)
            self.stats["children_switched"] += 1
            log.info("CHILD_SA %s{%d}: outbound traffic switched to it",
                     self._child_names.get(ev.unique_id, "?"), ev.unique_id)
        except Exception as exc:
            self.stats["switch_failures"] += 1
            log.error("dataplane %s could not switch to CHILD_SA #%d: %s",
                      self.dataplane.name, ev.unique_id, exc)

    def _timed(self, what: str, started: float) -> None:
        """The longest dataplane install / switch so far, in microseconds (`sa stats`)."""
        us = int((time.perf_counter() - started) * 1e6)
        key = f"{what}_us_max"
        self.stats[key] = max(self.stats[key], us)

    def _collect_drops(self, unique_id: int) -> None:
        """Before a CHILD_SA goes: add its replay drops to the daemon's running total, so
        that `sa stats` still shows drops of SAs rekeyed away."""
        with contextlib.suppress(Exception):
            self.stats["sa_replay_drops"] += self.dataplane.counters(unique_id).replay_drops

    def _elsewhere(self, callback: Any, arg: Any) -> bool:
        """Dataplane callbacks may come from a worker-reader thread: hand them to the event
        loop's thread. True if the call was passed on (or there is no loop: dropped), False
        if the caller is already on the loop and should go on."""
        loop = self._loop
        if loop is None:
            return True
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop:
            loop.call_soon_threadsafe(callback, arg)
            return True
        return False

    def _on_dataplane_event(self, event: Any) -> None:
        """A CHILD_SA lifetime limit (SaEvent soft/hard). May come from another thread."""
        if self._elsewhere(self._on_dataplane_event, event):
            return
        self.stats[f"dataplane_{event.kind}"] += 1
        log.info("CHILD_SA #%d hit its %s lifetime (%s)", event.unique_id, event.kind,
                 event.reason)
        self._publish("child-expire", name=self._child_names.get(event.unique_id),
                      unique_id=event.unique_id, kind=event.kind, reason=event.reason)
        self.engine.child_sa_expired(event.unique_id, event.kind,
                                     self._loop.time())  # type: ignore[union-attr]
        self._service()

    # -- metrics ---------------------------------------------------------------------------
    def metrics_snapshot(self):
        """What `ocfpy.iked.metrics` serves at each scrape: read from the engine's, the
        dataplane's and the dispatcher's own counters, so nothing is counted twice."""
        from ocfpy.iked.metrics import MetricsSnapshot

        ike: Counter[str] = Counter()
        child: Counter[str] = Counter()
        uids = []
        for sa in self._sa_list():
            ike[str(sa.get("state"))] += 1
            for c in sa.get("children", []):
                child["installed" if c.get("unique_id") in self._child_names else "other"] += 1
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
        return MetricsSnapshot(
            ike_sas=dict(ike), child_sas=dict(child), negotiation_failures=dict(self.failures),
            rekeys={"ike": engine_stats.get("ike_rekeyed", 0),
                    "child": self.rekeys["child"]},
            dpd_failures=self.dpd_failures, packets=dict(packets), bytes=dict(nbytes),
            drops=dict(drops), crypto_ops=ops, crypto_failovers=failovers)

    # -- reload ------------------------------------------------------------------------------
    def _on_sighup(self) -> None:
        loop = self._loop
        assert loop is not None
        loop.create_task(self._reload_logged())

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
        except CommandError as exc:
            cfglog.error("reload refused, nothing changed: %s", exc)

    async def reload(self) -> dict:
        """Re-read the config file (SIGHUP, `ocfpy sa reload`). systemd hears RELOADING=1
        first and READY=1 after, also when the file was refused (the daemon still runs on the
        old config; STATUS= says why). A refused file changes nothing: CommandError."""
        self.notifier.reloading("reloading the configuration")
        cfglog.info("reloading the configuration")
        if self.reloader is None:
            self.notifier.ready(self.status_text())
            raise CommandError("this daemon was started without a config file to reload")
        try:
            new = self.reloader()
        except OcfError as exc:  # ConfigError (file:line: key: reason), LogSetupError
            self.reloads["failed"] += 1
            self._publish("reload", ok=False, error=str(exc))
            self.notifier.ready(f"reload refused: {exc}; {self.status_text()}")
            raise CommandError(f"reload refused, nothing changed: {exc}") from None
        result = self.apply_config(new)
        self.reloads["ok"] += 1
        self._publish("reload", ok=True, **result)
        cfglog.info("reloaded: %s", ", ".join(f"{k} {v}" for k, v in result.items()) or
                    "nothing changed")
        self.notifier.ready(self.status_text())
        return result

    def apply_config(self, new: IkeConfig) -> dict:
        """Swap in a checked config (the connection and secret parts; the daemon's own
        sockets, control path, backend and dataplane need a restart)."""
        loop = self._loop
        assert loop is not None
        old_opts, new_opts = vars(self.config.daemon), vars(new.daemon)
        stale = sorted(k for k in new_opts if k != "log" and old_opts.get(k) != new_opts[k])
        result: dict = self.engine.reload(new, loop.time())
        self.config.connections = self.engine.config.connections
        self._sync_traps(result)
        if stale:  # sockets, backend, dataplane, metrics: bound at start
            cfglog.warning("daemon.%s changed in the file: takes effect at the next start",
                           ", daemon.".join(stale))
            result["restart_needed"] = [f"daemon.{k}" for k in stale]
        self._service()
        return result

    # -- control ---------------------------------------------------------------------------
    def _control_handlers(self) -> dict[str, Callable]:
        return {
            "list": self._cmd_list,
            "initiate": self._cmd_initiate,
            "terminate": self._cmd_terminate,
            "why": self._cmd_why,
            "stats": self._cmd_stats,
            "drivers": self._cmd_drivers,
            "reload": self._cmd_reload,
            "list-conns": self._cmd_list_conns,
            "rekey": self._cmd_rekey,
        }

    def _connection(self, request: dict) -> str:
        name = request.get("name")
        if not isinstance(name, str) or not name:
            raise CommandError("this command needs a connection name")
        return name

    def _cmd_list(self, request: dict) -> list[dict]:
        """The engine's SAs, each CHILD_SA with the dataplane's counters and the driver of
        record: the one the dataplane reports serving it (SaCounters.drivers), never a guess
        from the dispatcher, which would disagree with a kernel dataplane."""
        sas = self.engine.sa_list()
        now = self._now()
        # the policy that chose the drivers: the daemon's dispatcher (the engine's, the same
        # object, when the daemon was built without one)
        policy = self.dispatcher or getattr(self.engine, "dispatcher", None)

        def since(t: float | None) -> float | None:
            return None if t is None else round(now - t, 1)

        def until(t: float | None) -> float | None:
            return None if not t else round(t - now, 1)

        for sa in sas:
            obj = None
            with contextlib.suppress(Exception):
                obj = self.engine.sas.by_id(sa["id"])
            sa["selection"] = {
                role: _selection(policy, [(sa.get("algorithms") or {}).get(role)], drv)
                for role, drv in (sa.get("drivers") or {}).items()}
            # seconds; expires_in_s is None: ocfpy has no time-based hard lifetime (charon's
            # over_time), only life_bytes / life_packets, which the dataplane enforces
            sa["established_s"] = since(getattr(obj, "established_at", None))
            sa["rekey_in_s"] = until(getattr(obj, "rekey_at", None))
            sa["expires_in_s"] = None
            for child in sa.get("children", []):
                uid = child.get("unique_id")
                if uid is None:
                    continue
                c = obj.child_by_id(uid) if obj is not None else None
                child["established_s"] = since(self._child_up_at.get(uid))
                child["rekey_in_s"] = until(getattr(c, "rekey_at", None))
                child["expires_in_s"] = None
                if c is not None:
                    child["life_bytes"] = c.cfg.life_bytes or None
                    child["life_packets"] = c.cfg.life_packets or None
                child["driver"] = None  # not installed, or a dataplane that carries nothing
                with contextlib.suppress(Exception):
                    c = self.dataplane.counters(uid)
                    child["dataplane"] = {"name": self.dataplane.name, **vars(c)}
                    child["driver"] = _driver_of_record(c.drivers)
                    child["selection"] = {
                        d: _selection(policy, [child.get("encr"), child.get("integ")], names)
                        for d, names in c.drivers.items()}
        return sas

    async def _cmd_initiate(self, request: dict) -> dict:
        name = self._connection(request)
        if name not in self.config.connections:
            raise CommandError(f"no connection named {name!r}; configured: "
                               + (", ".join(sorted(self.config.connections)) or "none"))
        child = request.get("child")
        wait = float(request.get("wait") or 0)
        loop = self._loop
        assert loop is not None
        fut: asyncio.Future | None = None
        ike_ids: list[int] = []
        want_child = False  # an established IKE SA was reused: wait for the new CHILD_SA
        prior: dict[int, dict] = {}
        if wait > 0:
            # the engine reuses an IKE SA of the connection (like charon); know which exist
            prior = {sa["id"]: sa for sa in self.engine.sa_list() if sa.get("name") == name}
            fut = loop.create_future()

            def match(ev: Event) -> dict | None:
                match ev:
                    case IkeSaEstablished() if ev.ike_id in ike_ids and not want_child:
                        return {"ike_id": ev.ike_id, "state": "established"}
                    case ChildSaEstablished() if ev.ike_id in ike_ids and want_child:
                        return {"ike_id": ev.ike_id, "state": "established", "reused": True,
                                "child": ev.spec.name}
                    case NegotiationFailed() if ev.name == name:
                        return {"ike_id": ike_ids[0] if ike_ids else None, "state": "failed",
                                "notify": notify_name(ev.notify),
                                "explanation": ev.explanation}
                    case IkeSaClosed() if ev.ike_id in ike_ids:
                        return {"ike_id": ev.ike_id, "state": "failed", "notify": None,
                                "explanation": str(ev.reason)}
                return None

            self._waiters.append((match, fut))
        try:
            ike_id = self.engine.initiate(name, loop.time(), child=child)
        except (IkeUsageError, KeyError, ValueError) as exc:
            if fut is not None:
                self._waiters = [w for w in self._waiters if w[1] is not fut]
            raise CommandError(f"cannot initiate {name}: {exc}") from None
        ike_ids.append(ike_id)
        reused = prior.get(ike_id)
        if fut is not None and reused is not None and reused.get("state") == "established":
            have = {c.get("name") for c in reused.get("children", [])}
            if child is None or child in have:
                self._waiters = [w for w in self._waiters if w[1] is not fut]
                return {"ike_id": ike_id, "state": "established", "reused": True}
            want_child = True
        self._service()
        if fut is None:
            return {"ike_id": ike_id, "state": "connecting"}
        try:
            result = await asyncio.wait_for(fut, wait)
        except TimeoutError:
            why = self._why(name)
            raise CommandError(f"{name}: not established within {wait:g} s"
                               + (f": {why}" if why else "; see `ocfpy sa why " + name + "`")) from None
        finally:
            self._waiters = [w for w in self._waiters if w[1] is not fut]
        if result["state"] == "failed":
            notify, text = result.get("notify"), result["explanation"]
            prefix = f"{notify}: " if notify and notify not in text else ""
            raise CommandError(f"{name}: {prefix}{text}")
        return result

    def _cmd_terminate(self, request: dict) -> dict:
        target = request.get("name")
        if target is None:
            target = request.get("id")
        if isinstance(target, str) and target.isdigit():
            target = int(target)
        if target is None or target == "":
            raise CommandError("terminate needs a connection name or an IKE_SA id")
        child = request.get("child")
        if child is not None:  # one CHILD_SA: "conn/child", or its unique id
            if isinstance(target, int):
                raise CommandError("--child needs the connection's name, not an IKE_SA id")
            child = str(child)
            target = f"child:{child}" if child.isdigit() else f"{target}/{child}"
        try:
            self.engine.terminate(target, self._loop.time())  # type: ignore[union-attr]
        except (IkeUsageError, KeyError, ValueError) as exc:
            raise CommandError(f"cannot terminate {target}: {exc}") from None
        self._service()
        return {"terminating": target}

    def _cmd_list_conns(self, request: dict) -> list[dict]:
        """The loaded connections as the daemon sees them (after the file's defaults and the
        last reload), with how many IKE SAs each has up."""
        up: Counter[str] = Counter(sa.get("name") for sa in self._sa_list()
                                   if sa.get("state") == "established")
        trap_stats: dict = {}
        if self.traps:
            try:
                trap_stats = self.dataplane.trap_stats()
            except Exception as exc:  # the counters only: the listing must not fail for them
                log.warning("trap counters: %s", exc)
        out = []
        for conn in self.config.connections.values():
            out.append({
                "name": conn.name, "local_addrs": conn.local_addrs,
                "remote_addrs": conn.remote_addrs, "local_port": conn.local_port,
                "remote_port": conn.remote_port, "proposals": conn.proposals,
                "local_id": conn.local.id, "remote_id": conn.remote.id,
                "rekey_time": conn.rekey_time, "dpd_delay": conn.dpd_delay,
                "keyingtries": conn.keyingtries, "encap": conn.encap, "ike_sas_up": up[conn.name],
                "children": [{"name": c.name, "local_ts": c.local_ts, "remote_ts": c.remote_ts,
                              "esp_proposals": c.esp_proposals, "mode": c.mode,
                              "start_action": c.start_action,
                              "trap": self._trap_state(f"{conn.name}/{c.name}", trap_stats),
                              "dpd_action": getattr(c, "dpd_action", "none"),
                              "close_action": getattr(c, "close_action", "none"),
                              "rekey_time": c.rekey_time} for c in conn.children.values()],
            })
        return out

    def _trap_state(self, key: str, stats: dict) -> dict | None:
        """A child's trap as `sa list-conns` shows it (swanctl --list-pols): None when none
        is installed."""
        entry = self.traps.get(key)
        if entry is None:
            return None
        spec, why, since = entry
        return {"installed_by": why, "since": round(since, 3),
                "local_ts": [str(t) for t in spec.local_ts],
                "remote_ts": [str(t) for t in spec.remote_ts], "acquires": self.acquires[key],
                "dataplane": stats.get(key, {})}

    def _cmd_rekey(self, request: dict) -> dict:
        """Rekey IKE SAs (``kind`` "ike") or CHILD_SAs ("child", optionally one ``child`` by
        name) of a connection name or an IKE_SA id (RFC 7296 2.8, CREATE_CHILD_SA)."""
        target = request.get("name")
        kind = request.get("kind", "ike")
        if target is None or target == "":
            raise CommandError("rekey needs a connection name or an IKE_SA id")
        if kind not in ("ike", "child"):
            raise CommandError(f"rekey kind must be ike or child, not {kind!r}")
        target = str(target)
        sas = [sa for sa in self._sa_list() if sa.get("state") == "established"
               and (str(sa.get("id")) == target or sa.get("name") == target)]
        if not sas:
            raise CommandError(f"no established IKE SA matches {target!r}")
        now = self._loop.time()  # type: ignore[union-attr]
        done: list[int] = []
        try:
            for sa in sas:
                if kind == "ike":
                    self.engine.rekey_ike(sa["id"], now)
                    done.append(sa["id"])
                    continue
                for c in sa.get("children", []):
                    if request.get("child") in (None, c.get("name"), str(c.get("unique_id"))):
                        self.engine.rekey_child(c["unique_id"], now)
                        done.append(c["unique_id"])
        except (IkeUsageError, KeyError, ValueError) as exc:
            raise CommandError(f"cannot rekey {target}: {exc}") from None
        finally:
            self._service()
        if not done:
            raise CommandError(f"{target} has no CHILD_SA"
                               + (f" named {request['child']!r}" if request.get("child") else ""))
        return {"rekeying": kind, "ids": done}

    def _cmd_why(self, request: dict) -> str | None:
        name = self._connection(request)
        if name not in self.config.connections:
            raise CommandError(f"no connection named {name!r}; configured: "
                               + (", ".join(sorted(self.config.connections)) or "none"))
        return self._why(name)

    def _why(self, name: str) -> str | None:
        """The engine's last failure of the connection, and a send failure towards its peer
        (which the engine cannot see: for it the peer just does not answer)."""
        why = self.engine.why(name)
        conn = self.config.connections.get(name)
        sent = [self.send_errors[a] for a in (conn.remote_addrs if conn else [])
                if a in self.send_errors]
        return "; ".join([*sent, *([why] if why else [])]) or None

    async def _cmd_reload(self, request: dict) -> dict:
        return await self.reload()

    def _cmd_stats(self, request: dict) -> dict:
        return {
            "engine": dict(self.engine.stats),
            "daemon": dict(self.stats),
            # issue 13: how close the responder is to its caps (docs/security.md)
            "half_open": {"now": self.engine.sas.half_open_count,
                          "peak": self.engine.sas.half_open_peak,
                          "limit": self.config.daemon.half_open_limit},
            "monitor": {"subscribers": len(self.control.subscribers) if self.control else 0,
                        "events_dropped": self.control.events_dropped if self.control else 0},
            "dataplane": self.dataplane.name,
            # the userspace dataplane's own health: worker/reader restarts, unreadable
            # records on its channel (issue 13 finding 3); other dataplanes have none
            "dataplane_stats": dict(getattr(self.dataplane, "stats", dict)()),
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 3),
            "listening": [f"[{ep.address}]:{ep.port}" for ep in self.endpoints],
        }

    def _cmd_drivers(self, request: dict) -> list[dict]:
        if self.dispatcher is None:
            return []
        return [r.as_dict() for r in self.dispatcher.registry.records()]


def notify_name(notify: int | None) -> str | None:
    """AUTHENTICATION_FAILED rather than 24, for people."""
    if notify is None:
        return None
    try:
        from ocfpy.ike.constants import NotifyType

        return NotifyType(notify).name
    except (ImportError, ValueError):
        return str(notify)


def _driver_of_record(drivers: dict[str, str]) -> str | None:
    """One name when both directions use the same driver (the usual case), else each
    direction's ("in: x, out: y"); None when the dataplane names none."""
    names = set(drivers.values())
    if len(names) == 1:
        return names.pop()
    return ", ".join(f"{k}: {v}" for k, v in drivers.items()) or None


def _selection(dispatcher, algorithms: list[str | None], drivers: str) -> str | None:
    """Why the dispatcher's policy has these drivers serve these algorithms (Dispatcher.explain:
    calibrated, forced, kind, priority, fallback, migrated), "+"-joined like ``drivers`` (ESP:
    the cipher's driver, then the MAC's; one name serves both); "kernel" for what a kernel
    dataplane chose."""
    algs = [a for a in algorithms if a and a != "none"]
    names = drivers.split("+") if drivers else []
    if not algs or not names:
        return None
    pairs = zip(algs, names * len(algs) if len(names) == 1 else names)  # noqa: B905
    reasons = []
    for alg, name in pairs:
        if name.startswith("kernel:") or dispatcher is None:
            reasons.append("kernel" if name.startswith("kernel:") else "unknown")
            continue
        try:
            reasons.append(dispatcher.explain(alg, name))
        except Exception:  # an algorithm or driver this dispatcher does not know
            reasons.append("unknown")
    return "+".join(dict.fromkeys(reasons))


def _pktinfo(family: int, address: str) -> tuple[int, int, bytes]:
    """The ancillary datum that makes a wildcard socket send from this source address."""
    if family == socket.AF_INET6:
        return (socket.IPPROTO_IPV6, IPV6_PKTINFO,
                socket.inet_pton(socket.AF_INET6, address) + struct.pack("@I", 0))
    # struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
    return (socket.IPPROTO_IP, IP_PKTINFO,
            struct.pack("@i", 0) + socket.inet_pton(socket.AF_INET, address) + bytes(4))


def _route_source(remote_ip: str, family: int) -> str:
    """The source address the kernel would pick towards remote_ip (no packet is sent)."""
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        s.connect((remote_ip, 9))
        return s.getsockname()[0]
    except OSError:
        return "::" if family == socket.AF_INET6 else "0.0.0.0"
    finally:
        s.close()


# -- dataplane selection ----------------------------------------------------------------------
def select_dataplane(name: str, dispatcher: Any = None, config: IkeConfig | None = None) -> Dataplane:
    """The dataplane named in the config or on the command line (ocfpy.esp.dataplane.select
    decides; ``none`` must be asked for, ``auto`` logs which it took and why)."""
    from ocfpy.esp.dataplane.select import DataplaneUnavailable, choose_dataplane

    try:
        return choose_dataplane(name, dispatcher, config)
    except DataplaneUnavailable as exc:
        raise DaemonError(str(exc)) from exc
