"""The userspace ESP dataplane: RFC 4303 over a TUN device, crypto through dispatcher sessions.

Process model (what the daemon sees): the daemon, an asyncio program, calls install(),
remove(), counters() and attach_udp_encap() from its loop; each returns quickly. Behind them
worker processes, forked at start() so they inherit the dispatcher and its drivers, move
packets: one per direction (see ocfpy/esp/worker.py), or with ``workers`` = N > 1 one
outbound worker per queue of a multi-queue TUN device and one inbound worker
(docs/dataplanes.md *Workers*). Every order goes to every worker of its direction. They get their orders over a
SEQPACKET control socket each; their counters live in shared memory, so counters() costs no
message. Lifetime events and IKE datagrams found on port 4500 come back through one reader
thread here, and are handed to the daemon's loop with call_soon_threadsafe when the daemon
has a running loop (else called from that thread).

strongSwan's kernel-libipsec is the model: a TUN device per daemon, routes to the remote
traffic selectors through it (with the local inner address as source, so replies come back
into the tunnel), ESP over UDP 4500 when NAT-T is on and over IP protocol 50 otherwise, and
tunnel mode only.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import multiprocessing
import os
import select
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field

from ocfpy.crypto.errors import OcfError
from ocfpy.esp import rtnl
from ocfpy.esp.counters import CounterBlock
from ocfpy.esp.dataplane.base import (
    Acquire,
    AcquireHandler,
    Dataplane,
    EventHandler,
    IkeDatagramHandler,
    SaCounters,
    SaEvent,
    TrapSpec,
)
from ocfpy.esp.netlink import NETLINK_ROUTE, NetlinkChannel, NetlinkError
from ocfpy.esp.spec import ChildSaSpec, IPNetwork, Mode
from ocfpy.esp.tun import MAX_QUEUES, TunError, attach_queue, enable_offloads, open_tun
from ocfpy.esp.worker import ChannelError, WorkerContext, recv_msg, send_msg, worker_main

log = logging.getLogger(__name__)

ESP_PROTOCOL = 50
ACK_TIMEOUT = 10.0
WATCHDOG_INTERVAL = 1.0  # seconds between checks that the workers and the reader live


class DataplaneError(OcfError):
    """The dataplane could not do what was asked; the message says why and what to check."""


def _role(name: str) -> str:
    """A worker's direction from its name: "out", "in" (queue 0), "out1", "in1", ..."""
    return "out" if name.startswith("out") else "in"


def _lane(name: str) -> int:
    return int(name[len(_role(name)):] or 0)


def _label(name: str) -> str:
    lane = _lane(name)
    return f"{_role(name)}bound ESP worker" + (f" {lane}" if lane else "")


@dataclass
class _Installed:
    spec: ChildSaSpec
    slot: int
    routes: list[IPNetwork] = field(default_factory=list)
    active: bool = True  # the outbound worker sends on it (False: installed for a rekey)


class UserspaceDataplane(Dataplane):
    name = "userspace"

    def __init__(
        self, dispatcher, *, tun_name: str = "ocfpy0", mtu: int = 1400, batch: int = 64,
        raw_esp: bool = True, install_routes: bool = True, max_sas: int = 1024,
        gso_max: int = 0, udp_gso: bool = False, offload: bool = True, workers: int = 1,
    ):
        if not 1 <= workers <= MAX_QUEUES:
            raise DataplaneError(f"esp_workers = {workers}: expected 1..{MAX_QUEUES} (workers "
                                 "per direction, one TUN queue each)")
        self.dispatcher = dispatcher
        # outbound workers: N > 1 opens a multi-queue TUN device, one queue each
        self.workers = workers
        self.tun_name = tun_name
        self.mtu = mtu
        self.batch = batch
        self.raw_esp = raw_esp
        self.install_routes = install_routes
        # > 0: TCP super-packets of up to this many bytes through the TUN (docs/dataplanes.md)
        self.gso_max = gso_max
        # UDP_SEGMENT sends and UDP_GRO receives on the ESP-in-UDP socket (esp/udpgso.py)
        self.udp_gso = udp_gso
        # per-run offloads (esp/offload.py), on by default; gso_max > 0 (whole super-packets
        # in one ESP packet) replaces them
        self.offload = offload and not gso_max
        self._uso = False  # the TUN took UDP segmentation offload too
        self.counter_block = CounterBlock(max_sas, lanes=workers)
        self._tun_fds: list[int] = []
        self._installed: dict[int, _Installed] = {}
        # The driver serving each SA direction, by counter slot, as the workers report it: at
        # install, and again whenever the dispatcher moves a session to another driver.
        # Written by the reader thread only (in the order the worker sent it), read by
        # counters(); keyed by slot, not unique_id, so a late report about a removed CHILD_SA
        # can never land on its reinstalled successor.
        self._drivers: dict[int, dict[str, str]] = {}
        self._rtnl: NetlinkChannel | None = None
        self._routes: rtnl.Routes | None = None
        self._tun_index = 0
        self._tun_fd: int | None = None
        self._workers: dict[str, tuple[multiprocessing.Process, socket.socket]] = {}
        self._raw: dict[int, socket.socket] = {}
        self._udp: dict[int, socket.socket] = {}  # family -> socket the workers read/send on
        self._own_udp: list[socket.socket] = []
        self._forward_ike = False
        self._ike_handlers: dict[int, IkeDatagramHandler] = {}  # socket id -> daemon callback
        self._sock_ids = itertools.count(1)
        self._on_event: EventHandler | None = None
        self._on_acquire: AcquireHandler | None = None
        # trap policies (issue 16): key -> (spec, the routes they hold into the TUN device);
        # the outbound worker holds their packets, we hold what to give a restarted one
        self._traps: dict[str, tuple[TrapSpec, list[IPNetwork]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._acks: dict[int, tuple[bool, object]] = {}
        self._ack_cv = threading.Condition()
        self._req = itertools.count(1)
        self._reader: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._lock = threading.RLock()
        self._closed = False
        self._given: list[tuple[socket.socket, bool, int]] = []  # sockets the workers read
        self._watchdog: threading.Thread | None = None
        self._stop_watch = threading.Event()
        # the worker channel's own health: restarts, unreadable records (finding 3)
        self.channel: Counter[str] = Counter()

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return bool(self._workers)

    def start(self) -> None:
        """Create the TUN device and raw sockets and fork the workers. install() calls it."""
        with self._lock:
            if self.started:
                return
            if self._closed:
                raise DataplaneError("the dataplane was closed")
            try:
                self._tun_fd = open_tun(self.tun_name, mtu=self.mtu, gso_max=self.gso_max,
                                        vnet_hdr=self.offload, queues=self.workers)
                self._tun_fds = [self._tun_fd]
                for _ in range(1, self.workers):
                    self._tun_fds.append(attach_queue(
                        self.tun_name, vnet_hdr=bool(self.offload or self.gso_max)))
                if self.offload:
                    try:
                        self._uso = enable_offloads(self._tun_fd)
                    except TunError as exc:  # the header stays: packets come one by one
                        log.warning("%s: %s", self.tun_name, exc)
                if self.install_routes:
                    self._rtnl = NetlinkChannel(NETLINK_ROUTE)
                    self._routes = rtnl.Routes(self._rtnl)
                    self._tun_index = rtnl.link_index(self._rtnl, self.tun_name)
            except (TunError, OSError) as exc:
                raise DataplaneError(f"userspace dataplane: {exc}") from exc
            if self.raw_esp:
                for family in (socket.AF_INET, socket.AF_INET6):
                    try:
                        self._raw[family] = socket.socket(family, socket.SOCK_RAW, ESP_PROTOCOL)
                    except OSError as exc:
                        log.warning("no raw ESP socket for %s (%s): only UDP-encapsulated ESP "
                                    "will work", family.name, exc)
            for lane in range(self.workers):
                self._spawn(f"out{lane or ''}")
            self._spawn("in")  # one receiver per SA: its replay window stays in one process
            self._start_reader()
            self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                              name="ocfpy-esp-watchdog")
            self._watchdog.start()
            log.info("userspace dataplane on %s: workers %s", self.tun_name,
                     {r: p.pid for r, (p, _) in self._workers.items()})

    def _spawn(self, name: str) -> None:
        """Fork worker ``name`` ("out", "in", "out1", ...: direction and queue; it inherits
        the TUN queues and raw sockets)."""
        ctx = multiprocessing.get_context("fork")
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours = [c.fileno() for r, (_, c) in self._workers.items() if r != name]
        ours.append(parent.fileno())
        if self._rtnl is not None:  # routes are the daemon's business, not a worker's
            ours.append(self._rtnl.fileno())
        lane = _lane(name)
        wctx = WorkerContext(_role(name), self.dispatcher, self._tun_fds[lane], child,
                             self.counter_block, dict(self._raw), batch=self.batch,
                             gso=bool(self.gso_max), udp_gso=self.udp_gso,
                             offload=self.offload, uso=self._uso, mtu=self.mtu, close_fds=ours,
                             lane=lane, tun_fds=list(self._tun_fds))
        proc = ctx.Process(target=worker_main, args=(wctx,), daemon=True,
                           name=f"ocfpy-esp-{name}")
        # The worker shares the daemon's heap copy-on-write; a full collection in either
        # process writes every tracked object's GC header and so copies every page of it
        # (the workers' private memory grew in 1.8 MB and 0.8 MB steps over a 25-minute soak,
        # docs/performance.md). Frozen objects are never traversed: nothing is copied for it.
        gc.freeze()
        proc.start()
        child.close()
        self._workers[name] = (proc, parent)

    def _names(self, role: str | None = None) -> list[str]:
        """The workers of one direction (or all), queue 0 first."""
        return [n for n in self._workers if role is None or _role(n) == role]

    def _start_reader(self) -> None:
        self._reader = threading.Thread(target=self._read_workers, daemon=True,
                                        name="ocfpy-esp-events")
        self._reader.start()

    # -- the watchdog (issue 13 finding 3) ------------------------------------------------------
    def _watch(self) -> None:
        """If a worker or the reader dies, say so, start a new one and count it (shown by
        `ocfpy sa stats`); a restarted worker gets the sockets and CHILD_SAs again."""
        while not self._stop_watch.wait(WATCHDOG_INTERVAL):
            try:
                self.check_workers()
            except Exception:  # the watchdog must outlive what it watches
                self.channel["watchdog_errors"] += 1
                log.exception("dataplane watchdog")

    def check_workers(self) -> None:
        with self._lock:
            if self._closed or not self._workers:
                return
            if self._reader is None or not self._reader.is_alive():
                log.error("the dataplane's reader thread died: starting a new one")
                self.channel["reader_restarts"] += 1
                self._start_reader()
            for role, (proc, ctrl) in list(self._workers.items()):
                if proc.is_alive():
                    continue
                log.error("the %s (pid %s) exited with %s: starting a new one",
                          _label(role), proc.pid, proc.exitcode)
                self.channel["worker_restarts"] += 1
                ctrl.close()
                self._spawn(role)
                os.write(self._wake_w, b"r")  # the reader takes the new control socket
                for sock, forward_ike, sock_id in self._given:
                    req = next(self._req)
                    self._send(role, ("socket", req, sock.family, forward_ike, sock_id),
                               [sock.fileno()])
                    self._wait(req, role)
                if _role(role) == "out":  # before the SAs, so the release below finds the traps
                    for trap, _ in self._traps.values():
                        self._request(role, "trap", trap)
                for entry in self._installed.values():
                    self._request(role, "install", entry.spec, entry.slot, entry.active)
                    if _role(role) == "in":
                        # the new inbound worker's replay windows start empty: packets
                        # captured earlier would pass once. Rekey each CHILD_SA now (a soft
                        # lifetime event), so fresh keys make old packets worthless.
                        self._call(self._on_event, SaEvent(
                            entry.spec.unique_id, "soft",
                            "inbound ESP worker restarted (replay state lost): rekeying"))
                if _role(role) == "out" and self._traps:
                    self._send(role, ("release", None))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop_watch.set()
            for entry in list(self._installed.values()):
                with contextlib.suppress(Exception):
                    self._remove_routes(entry)
            for key in list(self._traps):
                with contextlib.suppress(Exception):
                    self._remove_trap_routes(key)
            for _proc, ctrl in self._workers.values():
                with contextlib.suppress(OSError):
                    send_msg(ctrl, ("stop",))
            for proc, ctrl in self._workers.values():
                proc.join(3)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(2)
                ctrl.close()
            self._workers.clear()
            os.write(self._wake_w, b"x")
            if self._reader is not None:
                self._reader.join(2)
            for s in (*self._raw.values(), *self._own_udp):
                s.close()
            for fd in self._tun_fds:
                os.close(fd)  # the TUN device disappears with its last fd
            self._tun_fds = []
            self._tun_fd = None
            if self._rtnl is not None:
                self._rtnl.close()
            self._installed.clear()
            self._drivers.clear()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def __enter__(self) -> UserspaceDataplane:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the Dataplane interface -----------------------------------------------------------------
    def set_event_handler(self, handler: EventHandler) -> None:
        self._on_event = handler
        self._capture_loop()

    def attach_udp_encap(self, sock: socket.socket, on_ike: IkeDatagramHandler) -> bool:
        """Read the daemon's UDP 4500 socket from now on; IKE datagrams go to on_ike."""
        self._capture_loop()
        self.start()  # from now on only the workers read the socket: they must be running
        self._give_socket(sock, forward_ike=True, on_ike=on_ike)
        return True

    def install(self, spec: ChildSaSpec, *, outbound: bool = True,
                replaces: int | None = None) -> None:
        if spec.mode is not Mode.TUNNEL:
            raise DataplaneError(f"CHILD_SA {spec.name}: the userspace dataplane supports "
                                 "tunnel mode only (as strongSwan's kernel-libipsec); use "
                                 "dataplane = \"xfrm\" for transport mode")
        if not spec.local_ts or not spec.remote_ts:
            raise DataplaneError(f"CHILD_SA {spec.name}: no traffic selectors to install")
        self.start()
        family = socket.AF_INET6 if spec.remote.version == 6 else socket.AF_INET
        if spec.encap is not None and family not in self._udp:
            self._own_udp_socket(spec, family)
        if spec.encap is None and family not in self._raw:
            raise DataplaneError(f"CHILD_SA {spec.name}: ESP without UDP encapsulation needs a "
                                 "raw IP protocol 50 socket (root or CAP_NET_RAW), which could "
                                 "not be opened")
        with self._lock:
            if spec.unique_id in self._installed:
                self.remove(spec.unique_id)
            slot = self.counter_block.allocate()  # zeroes its counters and sequence counter
            entry = _Installed(spec, slot, active=outbound)
            self._drivers[slot] = {}  # filled by the workers' reports, before their acks
            try:
                # both workers build their SA at the same time: one round trip, not two
                # (issue 18: the daemon waits for this before a rekey's answer leaves)
                reqs = {name: self._post(name, "install", spec, slot, outbound)
                        for name in self._names()}
                failed = []
                for role, req in reqs.items():  # each ack taken, none left behind in _acks
                    try:
                        self._wait(req, role)
                    except DataplaneError as exc:
                        failed.append(exc)
                if failed:
                    raise failed[0]
                if self._routes is not None:
                    self._add_routes(entry)
                # only now may a trap's held packets go out on it: the first of them is
                # often answered within a millisecond, and the answer must find the inbound
                # worker holding the SA (a slow inbound install lost the first ping in CI)
                if self._traps:
                    for name in self._names("out"):
                        self._send(name, ("release", None))
            except Exception:
                for name in self._names():
                    with contextlib.suppress(Exception):
                        self._send(name, ("remove", None, spec.unique_id))
                self._remove_routes(entry)
                self._drivers.pop(slot, None)
                self.counter_block.release(slot)
                raise
            self._installed[spec.unique_id] = entry
        log.info("installed CHILD_SA %s #%d: in %08x out %08x %s%s, %s === %s, via %s",
                 spec.name, spec.unique_id, spec.inbound.spi, spec.outbound.spi,
                 spec.encryption, f"-{spec.integrity}" if spec.integrity else "",
                 ",".join(map(str, spec.local_ts)), ",".join(map(str, spec.remote_ts)),
                 "UDP 4500" if spec.encap else "raw ESP")

    def activate(self, unique_id: int) -> None:
        """The switch (make-before-break): the outbound worker inserts the SA's policy
        between two bursts; no ack is awaited, since the channel keeps the order of this
        and a later remove of the old SA, and the daemon has nothing to wait for."""
        with self._lock:
            entry = self._installed.get(unique_id)
            if entry is None or entry.active:
                return
            entry.active = True
            for name in self._names("out"):
                self._send(name, ("activate", None, unique_id))

    def remove(self, unique_id: int) -> None:
        with self._lock:
            entry = self._installed.pop(unique_id, None)
            if entry is None:
                return
            for name in self._names():
                with contextlib.suppress(OSError):
                    self._send(name, ("remove", None, unique_id))
            self._remove_routes(entry)
            self._drivers.pop(entry.slot, None)
            # The slot is not reused at once: a worker may still count a burst in flight.
            threading.Timer(1.0, self.counter_block.release, (entry.slot,)).start()

    # -- trap policies ---------------------------------------------------------------------
    def set_acquire_handler(self, handler: AcquireHandler) -> None:
        self._on_acquire = handler
        self._capture_loop()

    def install_trap(self, trap: TrapSpec) -> None:
        """Route the trap's remote selectors into the TUN device (so its first packet reaches
        the outbound worker) and have the worker hold what no CHILD_SA covers."""
        if trap.mode is not Mode.TUNNEL:
            raise DataplaneError(f"trap {trap.key}: the userspace dataplane supports tunnel "
                                 "mode only")
        if not trap.local_ts or not trap.remote_ts:
            raise DataplaneError(f"trap {trap.key}: no traffic selectors")
        self.start()
        with self._lock:
            old = self._traps.get(trap.key)
            routes: list[IPNetwork] = []
            try:
                if self._routes is not None:
                    path = rtnl.Path(self._tun_index)
                    sources = rtnl.local_sources(self._rtnl, list(trap.local_ts))
                    for ts in trap.remote_ts:
                        for net in ts.networks():
                            self._routes.add(net, path, sources[net.version])
                            routes.append(net)
                for name in self._names("out"):
                    self._request(name, "trap", trap)
            except Exception as exc:
                for net in routes:
                    with contextlib.suppress(Exception):
                        self._routes.remove(net)  # type: ignore[union-attr]
                if isinstance(exc, NetlinkError):
                    raise DataplaneError(f"trap {trap.key}: cannot add a route via "
                                         f"{self.tun_name}: {exc}") from exc
                raise
            self._traps[trap.key] = (trap, routes)
            if old is not None:  # replaced: the old routes go after the new are in
                for net in old[1]:
                    with contextlib.suppress(Exception):
                        self._routes.remove(net)  # type: ignore[union-attr]
        log.info("trap %s installed: %s === %s, holding up to %d packet(s) for %gs", trap.key,
                 ",".join(map(str, trap.local_ts)), ",".join(map(str, trap.remote_ts)),
                 trap.queue, trap.queue_timeout)

    def remove_trap(self, key: str) -> None:
        with self._lock:
            if key not in self._traps:
                return
            for name in self._names("out"):
                with contextlib.suppress(OSError, DataplaneError):
                    self._request(name, "untrap", key)
            self._remove_trap_routes(key)
        log.info("trap %s removed", key)

    def _remove_trap_routes(self, key: str) -> None:
        _, routes = self._traps.pop(key)
        for net in routes:
            try:
                self._routes.remove(net)  # type: ignore[union-attr]
            except OSError as exc:
                log.warning("trap %s: cannot remove route %s: %s", key, net, exc)

    def trap_stats(self) -> dict[str, dict[str, int]]:
        if not self._traps or not self.started:
            return {}
        total: dict[str, Counter[str]] = {}
        for name in self._names("out"):  # each outbound worker holds its queue's packets
            for key, counts in self._request(name, "trapstats").items():
                total.setdefault(key, Counter()).update(counts)
        return {key: dict(c) for key, c in total.items()}

    def counters(self, unique_id: int) -> SaCounters:
        entry = self._installed.get(unique_id)
        if entry is None:
            raise KeyError(f"no CHILD_SA with id {unique_id} is installed")
        c = self.counter_block.sa_counters(entry.slot)
        c.drivers = dict(self._drivers.get(entry.slot, {}))
        return c

    def lane_counters(self, unique_id: int) -> list[SaCounters]:
        """An SA's counters per counter lane, queue 0 first: how its outbound traffic spread
        over the outbound workers (the inbound worker counts in lane 0; counters() is the
        sum)."""
        entry = self._installed.get(unique_id)
        if entry is None:
            raise KeyError(f"no CHILD_SA with id {unique_id} is installed")
        return [self.counter_block.lane_counters(entry.slot, lane)
                for lane in range(self.workers)]

    def stats(self) -> dict[str, int]:
        """Dataplane-wide drops and counts that belong to no SA, and the worker channel's
        (worker_restarts, reader_restarts, channel_errors, channel_truncated...)."""
        return {**self.counter_block.global_counters(), **self.channel}

    # -- plumbing -----------------------------------------------------------------------------
    def _capture_loop(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            pass

    def _own_udp_socket(self, spec: ChildSaSpec, family: int) -> None:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", spec.encap.local_port))
        except OSError as exc:
            sock.close()
            raise DataplaneError(f"CHILD_SA {spec.name}: cannot bind UDP port "
                                 f"{spec.encap.local_port} for ESP-in-UDP: {exc} (the daemon "
                                 "should pass its socket with attach_udp_encap)") from exc
        self._own_udp.append(sock)
        self._give_socket(sock, forward_ike=False)

    def _give_socket(self, sock: socket.socket, *, forward_ike: bool,
                     on_ike: IkeDatagramHandler | None = None) -> None:
        self._udp[sock.family] = sock
        self._forward_ike = self._forward_ike or forward_ike
        sock_id = next(self._sock_ids)
        if on_ike is not None:
            self._ike_handlers[sock_id] = on_ike
        self._given.append((sock, forward_ike, sock_id))
        for name in self._names():
            req = next(self._req)
            self._send(name, ("socket", req, sock.family, forward_ike, sock_id), [sock.fileno()])
            self._wait(req, name)

    def _send(self, role: str, msg: tuple, fds: list[int] | None = None) -> None:
        send_msg(self._workers[role][1], msg, fds)

    def _request(self, role: str, op: str, *args):
        return self._wait(self._post(role, op, *args), role)

    def _post(self, role: str, op: str, *args) -> int:
        """Send an order that the worker acks; returns the request id to _wait for."""
        req = next(self._req)
        self._send(role, (op, req, *args))
        return req

    def _wait(self, req: int, role: str):
        with self._ack_cv:
            ok = self._ack_cv.wait_for(lambda: req in self._acks, ACK_TIMEOUT)
            if not ok:
                alive = self._workers[role][0].is_alive()
                raise DataplaneError(f"the {_label(role)} did not answer within "
                                     f"{ACK_TIMEOUT:.0f} s" + ("" if alive else " (it exited)"))
            success, info = self._acks.pop(req)
        if not success:
            raise DataplaneError(f"{_role(role)}bound SA: {info}")
        return info

    def _read_workers(self) -> None:
        """Reader thread: acks, lifetime events and IKE datagrams from the workers. It
        survives anything one record can do (issue 13 finding 3: a truncated pickle used to
        end it, and with it NAT-T IKE, install acks and lifetime events): what it cannot
        read is logged, counted and dropped."""
        def current() -> dict:
            return {c.fileno(): (r, c) for r, (_, c) in self._workers.items()
                    if c.fileno() >= 0}

        socks = current()
        while not self._closed:
            try:
                ready, _, _ = select.select([self._wake_r, *socks], [], [])
            except (OSError, ValueError):  # a control socket closed under us (a restart)
                socks = current()
                continue
            if self._wake_r in ready:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 64)
                if self._closed:
                    return
                socks = current()
                continue
            for fd in ready:
                role, ctrl = socks[fd]
                try:
                    msg, fds = recv_msg(ctrl)
                except ChannelError as exc:
                    self.channel["channel_truncated" if "truncated" in str(exc)
                                 else "channel_errors"] += 1
                    log.error("unreadable record from the %s: %s", _label(role), exc)
                    continue
                except OSError:
                    msg, fds = None, []
                except Exception:
                    self.channel["channel_errors"] += 1
                    log.exception("unreadable record from the %s", _label(role))
                    continue
                for extra in fds:  # workers send none; never leak one
                    with contextlib.suppress(OSError):
                        os.close(extra)
                if msg is None:
                    if not self._closed:
                        log.error("the %s exited", _label(role))
                    socks.pop(fd)  # the watchdog starts another and wakes us
                    continue
                try:
                    self._dispatch(msg)
                except Exception:
                    self.channel["reader_errors"] += 1
                    log.exception("handling a %r record from the %s",
                                  msg[0] if isinstance(msg, tuple) and msg else msg, _label(role))

    def _dispatch(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "ack":
            with self._ack_cv:
                self._acks[msg[1]] = (msg[2], msg[3])
                self._ack_cv.notify_all()
        elif kind == "event":
            _, uid, what, reason = msg
            event = SaEvent(uid, what, reason)
            if what == "inbound":
                log.info("CHILD_SA #%d: %s", uid, reason)
            else:
                log.info("CHILD_SA #%d: %s lifetime event: %s", uid, what, reason)
            if what == "hard":
                # Not on this thread: remove() may wait for the lock an install() holds
                # while it waits for an ack that only this thread can deliver.
                threading.Thread(target=self.remove, args=(uid,), daemon=True).start()
            self._call(self._on_event, event)
        elif kind == "acquire":
            _, key, src, dst, proto, sport, dport = msg
            self._call(self._on_acquire, Acquire(key, src, dst, proto, sport, dport))
        elif kind == "ike":
            _, data, addr, sock_id = msg
            self._call(self._ike_handlers.get(sock_id), data, addr)
        elif kind == "drivers":
            _, slot, role, drivers = msg
            current = self._drivers.get(slot)
            if current is not None:  # else: the SA was removed meanwhile
                if current.get(role) not in (None, drivers):
                    log.warning("%sbound SA in slot %d: now served by %s (was %s)", role, slot,
                                drivers, current[role])
                current[role] = drivers

    def _call(self, handler, *args) -> None:
        if handler is None:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(handler, *args)
        else:
            try:
                handler(*args)
            except Exception:
                log.exception("dataplane callback failed")

    # -- routes ---------------------------------------------------------------------------
    def _add_routes(self, entry: _Installed) -> None:
        """A route per remote selector into the TUN device (kernel-libipsec does the same),
        with a local address inside the local selectors as source."""
        assert self._routes is not None and self._rtnl is not None
        spec = entry.spec
        path = rtnl.Path(self._tun_index)
        sources = rtnl.local_sources(self._rtnl, spec.local_ts)
        for ts in spec.remote_ts:
            for net in ts.networks():
                try:
                    self._routes.add(net, path, sources[net.version])
                except NetlinkError as exc:
                    raise DataplaneError(f"CHILD_SA {spec.name}: cannot add route {net} "
                                         f"via {self.tun_name}: {exc}") from exc
                entry.routes.append(net)

    def _remove_routes(self, entry: _Installed) -> None:
        for net in entry.routes:
            try:
                self._routes.remove(net)  # type: ignore[union-attr]
            except OSError as exc:  # the CHILD_SA goes anyway; the route stays behind
                log.warning("CHILD_SA %s: cannot remove route %s: %s", entry.spec.name, net, exc)
        entry.routes.clear()


def unavailable_reason() -> str | None:
    """None if the userspace dataplane can run here (it needs a TUN device and the rights to
    configure it, its routes and raw ESP sockets), else why not. The one place that decides
    it: dataplane selection (select.py) gets it through create()."""
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (CONFIG_TUN; modprobe tun)"
    if os.geteuid() != 0:
        return ("needs root (or CAP_NET_ADMIN and CAP_NET_RAW) for the TUN device, its routes "
                "and raw ESP")
    return None


def create(dispatcher, config=None) -> UserspaceDataplane:
    """The factory dataplane selection calls (select.py): refuses with the reason when this
    machine cannot run it, or when there is no dispatcher to do its crypto."""
    why = unavailable_reason()
    if why:
        raise DataplaneError(why)
    if dispatcher is None:
        raise DataplaneError("the userspace dataplane needs the crypto dispatcher")
    opts = getattr(config, "daemon", None)
    return UserspaceDataplane(
        dispatcher,
        tun_name=getattr(opts, "tun_name", None) or "ocfpy0",
        mtu=getattr(opts, "tun_mtu", None) or 1400,
        udp_gso=bool(getattr(opts, "udp_gso", False)),
        offload=bool(getattr(opts, "esp_offload", True)),
        workers=getattr(opts, "esp_workers", None) or 1,
    )
