"""The two packet loops of the userspace dataplane, one process each (the GIL makes threads
share one core; measured in docs/performance.md).

- outbound: TUN -> policy lookup -> sequence numbers -> one seal batch per SA -> UDP 4500 or
  raw ESP (IP protocol 50).
- inbound: UDP 4500 / raw ESP -> demux (IKE goes back to the daemon) -> SPI lookup -> replay
  check (no state change) -> one open batch per SA -> replay advance -> selector check -> TUN.

With ``esp_workers`` = N > 1 there are N outbound loops, one per queue of a multi-queue TUN
device (docs/dataplanes.md *Workers*): outbound loop i reads queue i (the kernel keeps a flow
on one queue). What they share lives in shared memory: each SA's sequence counter
(counters.SharedSequence, taken in blocks of at most SEQ_BLOCK) and its lifetime totals (the
counter lanes summed); each loop writes its own counter lane. There stays one inbound loop:
one receiver per SA, so its replay window stays private (two receivers of one socket each
took bursts of up to 64 reads, and a burst held back behind the other's pushed the window
past it: measured, docs/performance.md); it writes each flow on one TUN queue (tun_for).

Each loop reads up to `batch` packets per wakeup with non-blocking calls. A control socket
(AF_UNIX SOCK_SEQPACKET) carries install/remove messages and sockets (SCM_RIGHTS) from the
daemon side, and acks, lifetime events, IKE datagrams and driver reports back. A driver
report names the driver that serves an SA direction: sent before the install's ack, and
again after any burst in which the dispatcher moved the SA's sessions to another driver, so
the daemon's counters always name the driver that actually does the SA's crypto. Nothing that arrives from the
network can raise out of a loop: bad packets are dropped and counted; an unexpected error in
one burst is logged and counted, and the loop goes on.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import pickle
import select
import signal
import socket
import struct
import time
import traceback
import zlib
from collections import Counter, deque
from dataclasses import dataclass, field

from ocfpy.crypto.errors import OcfError
from ocfpy.esp.counters import WIDTH, CounterBlock, F, G, Once
from ocfpy.esp.gso import VNET_HDR_LEN, from_tun, to_tun_header
from ocfpy.esp.offload import coalesce, split
from ocfpy.esp.packet import NEXT_HEADER_IPV4, NEXT_HEADER_IPV6, NEXT_HEADER_NONE, Drop
from ocfpy.esp.sad import (
    SEQ_MAX_32,
    SEQ_MAX_64,
    Expiry,
    InboundSa,
    OutboundSa,
    build_inbound,
    build_outbound,
)
from ocfpy.esp.sendbatch import send as send_datagrams
from ocfpy.esp.spd import PolicyTable, flow
from ocfpy.esp.udpencap import Kind, classify
from ocfpy.esp.udpgso import SegmentingSender, enable_gro
from ocfpy.esp.udpgso import receive as receive_coalesced

log = logging.getLogger(__name__)

_ESP_HEADER = struct.Struct("!II")
_IP_VERSION = {NEXT_HEADER_IPV4: 4, NEXT_HEADER_IPV6: 6}  # tunnel mode: next header -> version
_PORTS = frozenset((6, 17, 132, 136))  # TCP, UDP, SCTP, UDP-Lite: a flow is its ports too
MAX_DATAGRAM = 65535
# With several outbound workers, each takes an SA's sequence numbers in blocks of at most this
# many, just before it encrypts and sends them. Two workers' blocks interleave on the wire, so
# the peer sees a number up to about one block (plus what the other worker sent meanwhile)
# behind its highest: it must stay far inside the peer's replay window. RFC 4303 s. 3.4.3
# makes 32 the smallest window a receiver must support (and strongSwan's default); ocfpy's
# default is 128. 16 = half of 32. One worker takes a whole burst at once (nothing interleaves).
SEQ_BLOCK = 16
GONE_SPIS = 1024  # removed inbound SPIs remembered, to tell their tail from unknown SPIs

# The worker <-> daemon channel (a SEQPACKET socket: one send, one record). Each record
# starts with a tag: an IKE datagram found on UDP 4500 travels raw behind a small fixed
# header (it is attacker-chosen bytes: never pickled, up to 65,535 bytes, issue 13 finding 3);
# orders, acks and events are pickles between our own processes.
TAG_PICKLE = 0x50  # "P"
TAG_IKE = 0x49  # "I"
_IKE_FRAME = struct.Struct("!BIHB")  # tag, socket id (0: none), source port, address length
MAX_MESSAGE = 1 + MAX_DATAGRAM + _IKE_FRAME.size + 64  # the largest record, with room


class ChannelError(OcfError):
    """A record on the worker channel that cannot be read (truncated, unknown framing)."""


def send_msg(sock: socket.socket, msg: tuple, fds: list[int] | None = None) -> None:
    data = bytes((TAG_PICKLE,)) + pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def send_ike(sock: socket.socket, data: bytes, addr: tuple, sock_id: int | None) -> None:
    """An IKE datagram (non-ESP marker stripped) and where it came from, unpickled."""
    host = addr[0].encode("ascii")
    frame = _IKE_FRAME.pack(TAG_IKE, sock_id or 0, addr[1], len(host)) + host
    sock.sendmsg([frame, data])


def recv_msg(sock: socket.socket) -> tuple[tuple | None, list[int]]:
    """One record: (message, fds), or (None, fds) when the other side is gone. Raises
    ChannelError for a record that was truncated or is not framed as ours."""
    data, fds, flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 4)
    if not data:
        return None, fds  # the other side is gone
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        raise ChannelError(f"a {len(data)}-byte record was truncated (flags {flags:#x})")
    tag = data[0]
    if tag == TAG_IKE:
        if len(data) < _IKE_FRAME.size:
            raise ChannelError(f"IKE record of {len(data)} bytes is shorter than its header")
        _, sock_id, port, alen = _IKE_FRAME.unpack_from(data)
        start = _IKE_FRAME.size + alen
        if len(data) < start:
            raise ChannelError("IKE record shorter than its address")
        host = data[_IKE_FRAME.size:start].decode("ascii")
        return ("ike", data[start:], (host, port), sock_id or None), fds
    if tag == TAG_PICKLE:
        return pickle.loads(data[1:]), fds  # noqa: S301 - our own process on the other end
    raise ChannelError(f"record with unknown tag {tag:#x}")


@dataclass
class WorkerContext:
    role: str  # "in" | "out"
    dispatcher: object
    tun_fd: int
    ctrl: socket.socket
    counters: CounterBlock
    raw: dict[int, socket.socket] = field(default_factory=dict)  # family -> raw ESP socket
    udp: dict[int, socket.socket] = field(default_factory=dict)  # family -> UDP socket to send on
    udp_ids: dict[int, int] = field(default_factory=dict)  # fileno -> the daemon's id for it
    batch: int = 64
    forward_ike: bool = False  # whether IKE datagrams on UDP sockets go back to the daemon
    gso: bool = False  # the TUN carries virtio_net_hdr (see gso.py)
    udp_gso: bool = False  # UDP_SEGMENT sends, UDP_GRO receives on UDP sockets (udpgso.py)
    # per-run offloads (offload.py): the TUN carries virtio_net_hdr with TSO (and USO when
    # `uso`); super-packets are cut before encryption, runs coalesced before the TUN write;
    # implies UDP GSO/GRO on the UDP sockets
    offload: bool = False
    uso: bool = False
    close_fds: list[int] = field(default_factory=list)  # the daemon's ends, inherited by fork
    mtu: int = 1400
    # several outbound workers (esp_workers > 1): this loop's index (its TUN queue and
    # counter lane), and every queue's fd (the inbound loop writes a flow's packets on one
    # queue, see InboundLoop.tun_for)
    lane: int = 0
    tun_fds: list[int] = field(default_factory=list)


class _Loop:
    def __init__(self, ctx: WorkerContext):
        self.ctx = ctx
        self.cells = ctx.counters.lane(ctx.lane)
        # an outbound SA's traffic is counted in several lanes: lifetimes count their sum
        self.shared = ctx.counters.lanes > 1 and ctx.role == "out"
        self.running = True
        self.udp_sockets: list[socket.socket] = list(ctx.udp.values())  # all are read
        self.coalesced: set[int] = set()  # filenos of UDP sockets with UDP_GRO on
        for sock in self.udp_sockets:
            self._coalesce(sock)

    def _coalesce(self, sock: socket.socket) -> None:
        """The inbound worker asks for coalesced reads (it is the one that reads)."""
        if (self.ctx.udp_gso or self.ctx.offload) and self.ctx.role == "in" and enable_gro(sock):
            self.coalesced.add(sock.fileno())

    # -- control --------------------------------------------------------------------------
    def control(self) -> None:
        try:
            msg, fds = recv_msg(self.ctx.ctrl)
        except (BlockingIOError, InterruptedError):
            return
        except Exception:  # a bad record must not end the worker: it is logged and dropped
            log.error("worker %s: unreadable control record:\n%s", self.ctx.role,
                      traceback.format_exc())
            return
        if msg is None:
            self.running = False
            return
        op = msg[0]
        try:
            if op == "install":
                _, req, spec, slot, *rest = msg
                # rest: [send on it now]; False: an outbound SA made ready for a rekey
                # switch ("activate"), make-before-break (docs/ike.md *Rekeying*)
                info = self.install(spec, slot, *rest)
                send_msg(self.ctx.ctrl, ("drivers", slot, self.ctx.role, info))
                send_msg(self.ctx.ctrl, ("ack", req, True, info))
            elif op == "activate":
                _, req, uid = msg
                self.activate(uid)
                if req is not None:
                    send_msg(self.ctx.ctrl, ("ack", req, True, None))
            elif op == "remove":
                _, req, uid = msg
                self.remove(uid)
                if req is not None:
                    send_msg(self.ctx.ctrl, ("ack", req, True, None))
            elif op == "socket":
                _, req, family, forward_ike, sock_id = msg
                sock = socket.socket(family, socket.SOCK_DGRAM, 0, fileno=fds[0])
                sock.setblocking(False)
                tune_socket(sock)
                self._coalesce(sock)
                self.udp_sockets.append(sock)
                self.ctx.udp[family] = sock
                self.ctx.udp_ids[sock.fileno()] = sock_id
                self.ctx.forward_ike = self.ctx.forward_ike or forward_ike
                send_msg(self.ctx.ctrl, ("ack", req, True, None))
            elif op == "trap":
                _, req, trap = msg
                self.trap(trap)
                send_msg(self.ctx.ctrl, ("ack", req, True, None))
            elif op == "release":  # every worker has the SAs: held packets may go out
                self.release()
            elif op == "untrap":
                _, req, key = msg
                self.untrap(key)
                if req is not None:
                    send_msg(self.ctx.ctrl, ("ack", req, True, None))
            elif op == "trapstats":
                _, req = msg
                send_msg(self.ctx.ctrl, ("ack", req, True, self.trap_stats()))
            elif op == "stop":
                self.running = False
        except Exception as exc:  # report to the daemon, keep the loop alive
            log.debug("worker %s: %s failed", self.ctx.role, op, exc_info=True)
            if len(msg) > 1 and msg[1] is not None:
                send_msg(self.ctx.ctrl, ("ack", msg[1], False, f"{type(exc).__name__}: {exc}"))

    def event(self, uid: int, kind: Expiry, reason: str) -> None:
        send_msg(self.ctx.ctrl, ("event", uid, str(kind), f"{self.ctx.role}bound SA: {reason}"))

    def event_once(self, sa: OutboundSa | InboundSa, kind: Expiry, reason: str) -> None:
        """A lifetime event, sent by whichever worker of the SA's direction sees it first."""
        flags = {("out", Expiry.SOFT): Once.OUT_SOFT, ("out", Expiry.HARD): Once.OUT_HARD,
                 ("in", Expiry.SOFT): Once.IN_SOFT, ("in", Expiry.HARD): Once.IN_HARD}
        if self.ctx.counters.once(sa.slot, flags[self.ctx.role, kind]):
            self.event(sa.unique_id, kind, reason)

    def lifetime(self, sa: OutboundSa | InboundSa, packets: int, nbytes: int,
                 counted: tuple[F, F]) -> tuple[Expiry, str] | None:
        """Count a burst against the SA's lifetime: this loop's own count, or with several
        workers the totals of all lanes (``counted``: the packet and byte fields)."""
        life = sa.lifetime
        if not self.shared:
            return life.consume(packets, nbytes)
        if not life.limited:
            return None
        return life.observe(*self.ctx.counters.totals(sa.slot, *counted))

    def bump(self, index: int, n: int = 1) -> None:
        self.cells[index] += n

    def check_drivers(self, sa: OutboundSa | InboundSa) -> None:
        """After a burst: if the dispatcher moved the SA's sessions to another driver (a
        driver failed; the burst was redone there), tell the daemon who serves it now."""
        if sa.crypto.migrations != sa.migrations:
            sa.migrations = sa.crypto.migrations
            send_msg(self.ctx.ctrl, ("drivers", sa.slot, self.ctx.role, sa.crypto.drivers))

    def install(self, spec, slot, active: bool = True):
        raise NotImplementedError

    def activate(self, uid: int) -> None:
        """Only the outbound loop sends: the inbound one accepts from install on."""

    def trap(self, trap) -> None:
        raise ValueError(f"the {self.ctx.role}bound worker holds no trap policies")

    def untrap(self, key: str) -> None:
        raise ValueError(f"the {self.ctx.role}bound worker holds no trap policies")

    def trap_stats(self) -> dict:
        return {}

    def remove(self, uid: int) -> None:
        raise NotImplementedError

    def readers(self) -> list:
        raise NotImplementedError

    def on_readable(self, r) -> None:
        raise NotImplementedError

    def next_wakeup(self) -> float | None:
        """Seconds until the loop has something to do without input (held packets expire)."""
        return None

    def expire(self) -> None:
        """Called after every wakeup when next_wakeup() asked for one."""

    def run(self) -> None:
        ctrl = self.ctx.ctrl
        while self.running:
            fds = [ctrl, *self.readers()]
            wake = self.next_wakeup()
            try:
                ready, _, _ = select.select(fds, [], [], wake)
            except InterruptedError:
                continue
            if wake is not None:
                self.expire()
            for r in ready:
                if r is ctrl:
                    self.control()
                    continue
                try:
                    self.on_readable(r)
                except Exception:  # never let one burst end the dataplane
                    log.error("worker %s: burst failed:\n%s", self.ctx.role,
                              traceback.format_exc())
                    self.bump(G.MALFORMED)


class _Trap:
    """A trap policy in the outbound worker (base.TrapSpec): the packets it holds until a
    CHILD_SA covers them, and when it last asked the daemon for one."""

    __slots__ = ("spec", "held", "last_acquire", "counts")

    def __init__(self, spec) -> None:
        self.spec = spec
        self.held: deque[tuple[float, bytes]] = deque()  # (monotonic time, packet)
        self.last_acquire = float("-inf")
        self.counts: Counter[str] = Counter()


class OutboundLoop(_Loop):
    def __init__(self, ctx: WorkerContext):
        super().__init__(ctx)
        self.spd: PolicyTable[OutboundSa] = PolicyTable()
        self.sas: dict[int, OutboundSa] = {}
        self.staged: dict[int, object] = {}  # uid -> ChildSaSpec installed, not yet sent on
        self.segmenting = SegmentingSender() if ctx.udp_gso or ctx.offload else None
        # offload: whether this burst held a super-packet (see on_readable)
        self.super_burst = bool(ctx.udp_gso)
        # trap policies, looked up only for packets no CHILD_SA covers (an SA's policy
        # always wins over a trap, as the kernel's priorities make it with charon's traps)
        self.trap_spd: PolicyTable[_Trap] = PolicyTable()
        self.traps: dict[str, tuple[int, _Trap]] = {}  # key -> (policy key, trap)
        self._trap_ids = 0
        self.holding = 0  # packets held by all traps

    # -- traps ------------------------------------------------------------------------------
    def trap(self, spec) -> None:
        old = self.traps.get(spec.key)
        self._trap_ids += 1
        t = _Trap(spec)
        if old is not None:  # a changed trap (a reload): its held packets and counts go on
            t.held, t.counts = old[1].held, old[1].counts
            self.trap_spd.remove(old[0])
        self.traps[spec.key] = (self._trap_ids, t)
        self.trap_spd.add(self._trap_ids, list(spec.local_ts), list(spec.remote_ts), t)
        self._trim(t)

    def untrap(self, key: str) -> None:
        entry = self.traps.pop(key, None)
        if entry is not None:
            pid, t = entry
            self.trap_spd.remove(pid)
            self._drop_held(t, len(t.held), "dropped_removed")

    def trap_stats(self) -> dict:
        return {key: {**t.counts, "holding": len(t.held)} for key, (_, t) in self.traps.items()}

    def _hold(self, t: _Trap, packet: bytes, now: float) -> None:
        """A packet for a trapped selector with no SA: hold it (bounded) and acquire."""
        if len(t.held) < t.spec.queue:
            t.held.append((now, packet))
            t.counts["queued"] += 1
            self.holding += 1
        else:  # the queue is full: this packet is lost (the kernel's larval drop)
            t.counts["dropped_full"] += 1
        if now - t.last_acquire >= t.spec.acquire_interval:
            t.last_acquire = now
            t.counts["acquires"] += 1
            f = flow(packet)
            src = dst = None
            proto = sport = dport = 0
            if f is not None:
                src, dst = str(ipaddress.ip_address(f[0])), str(ipaddress.ip_address(f[1]))
                proto, sport, dport = f[2], f[3], f[4]
            send_msg(self.ctx.ctrl, ("acquire", t.spec.key, src, dst, proto, sport, dport))

    def _drop_held(self, t: _Trap, n: int, why: str) -> None:
        for _ in range(min(n, len(t.held))):
            t.held.popleft()
            t.counts[why] += 1
            self.holding -= 1

    def _trim(self, t: _Trap) -> None:
        if len(t.held) > t.spec.queue:
            self._drop_held(t, len(t.held) - t.spec.queue, "dropped_full")

    def release(self) -> None:
        """After an install: held packets a CHILD_SA now covers go out through it, in the
        order they came; the others stay held."""
        if not self.holding:
            return
        groups: dict[int, list[bytes]] = {}
        for _, t in self.traps.values():
            keep: deque[tuple[float, bytes]] = deque()
            for when, p in t.held:
                sa = self.spd.lookup(p)
                if sa is None or sa.expired:
                    keep.append((when, p))
                    continue
                groups.setdefault(sa.unique_id, []).append(p)
                t.counts["released"] += 1
                self.holding -= 1
            t.held = keep
        for uid, ps in groups.items():
            self.send(self.sas[uid], ps)

    def next_wakeup(self) -> float | None:
        if not self.holding:
            return None
        oldest = min(t.held[0][0] + t.spec.queue_timeout
                     for _, t in self.traps.values() if t.held)
        return max(0.0, oldest - time.monotonic()) + 0.01

    def expire(self) -> None:
        """Held packets older than their trap's queue_timeout are dropped and counted (the
        negotiation failed or is slow: the sender's own retransmission takes over)."""
        if not self.holding:
            return
        now = time.monotonic()
        for _, t in self.traps.values():
            stale = sum(1 for when, _ in t.held if now - when >= t.spec.queue_timeout)
            self._drop_held(t, stale, "dropped_timeout")

    def install(self, spec, slot, active: bool = True):
        # The SA's counter lives in the shared block (zeroed when the daemon allocated the
        # slot): a restarted worker, or a second one, goes on past every number any worker
        # reserved, so none is sent twice (RFC 4303 s. 3.3.3).
        seqs = self.ctx.counters.sequence(slot, SEQ_MAX_64 if spec.esn else SEQ_MAX_32)
        sa = build_outbound(spec, self.ctx.dispatcher, slot, seqs)
        sa.migrations = sa.crypto.migrations
        self.remove(spec.unique_id)
        self.sas[spec.unique_id] = sa
        if active:
            self.spd.add(spec.unique_id, spec.local_ts, spec.remote_ts, sa)
        else:  # keys and crypto sessions ready; the switch is then one policy insert
            self.staged[spec.unique_id] = spec
        for _, t in self.traps.values():
            # a negotiation finished: the next packet a trap catches (this SA closed early,
            # or did not cover it) is a new question for the daemon, not a repeat to hold back
            t.last_acquire = float("-inf")
        # held packets wait for the daemon's "release": it comes once every worker has the
        # SA, so the peer's answer never reaches an inbound worker that does not have it yet
        return sa.crypto.drivers

    def activate(self, uid: int) -> None:
        """The switch: one policy insert between two packet bursts of this process. The
        newest policy wins (spd.py), so the very next packet of the old SA's selectors
        goes out on the new SA; there is no moment with neither."""
        spec = self.staged.pop(uid, None)
        if spec is not None and uid in self.sas:
            self.spd.add(uid, spec.local_ts, spec.remote_ts, self.sas[uid])
            self.release()

    def remove(self, uid: int) -> None:
        self.staged.pop(uid, None)
        sa = self.sas.pop(uid, None)
        if sa is not None:
            self.spd.remove(uid)
            sa.crypto.close()

    def readers(self) -> list:
        return [self.ctx.tun_fd]

    def on_readable(self, _r) -> None:
        tun = self.ctx.tun_fd
        read = os.read
        packets = []
        for _ in range(self.ctx.batch):
            try:
                packets.append(read(tun, MAX_DATAGRAM + VNET_HDR_LEN))
            except (BlockingIOError, InterruptedError):
                break
        if self.ctx.offload:  # one frame may be a super-packet: its segments, in order
            frames, packets = packets, []
            for f in frames:
                segs = split(f) if len(f) > VNET_HDR_LEN else ()
                if not segs:
                    self.bump(G.MALFORMED)
                packets.extend(segs)
            # Runs go out with UDP GSO only when the burst held a super-packet (a TCP sender
            # with congestion control behind it). A flood of single packets goes datagram by
            # datagram as without offloads: measured, sending a flood faster than the far side
            # can decrypt it only moves the drop from our TUN queue (free) to the peer's
            # socket (after our encryption), and the delivered rate fell.
            self.super_burst = len(packets) > len(frames)
        elif self.ctx.gso:
            packets = [from_tun(p) for p in packets if len(p) > VNET_HDR_LEN]
        groups: dict[int, list[bytes]] = {}
        lookup = self.spd.lookup
        no_policy = 0
        trapped = self.trap_spd.lookup if self.traps else None
        for p in packets:
            sa = lookup(p)
            if sa is None or sa.expired:
                t = trapped(p) if trapped is not None else None
                if t is not None:
                    self._hold(t, p, time.monotonic())
                else:
                    no_policy += 1
                continue
            groups.setdefault(sa.unique_id, []).append(p)
        if no_policy:
            self.bump(G.NO_POLICY, no_policy)
        for uid, ps in groups.items():
            self.send(self.sas[uid], ps)

    def send(self, sa: OutboundSa, packets: list[bytes]) -> None:
        if self.shared and len(packets) > SEQ_BLOCK:  # see SEQ_BLOCK
            for i in range(0, len(packets), SEQ_BLOCK):
                if not self.send_block(sa, packets[i:i + SEQ_BLOCK]):
                    return
            return
        self.send_block(sa, packets)

    def send_block(self, sa: OutboundSa, packets: list[bytes]) -> bool:
        """Number, seal and send packets of one SA; False when its numbers ran out."""
        base, n = sa.take_seqs(len(packets))
        if n < len(packets):
            self.bump(G.SEQ_EXHAUSTED, len(packets) - n)
            if not sa.expired:
                sa.expired = True
                self.event_once(sa, Expiry.HARD, "sequence numbers exhausted")
            packets = packets[:n]
            if not packets:
                return False
        wires = sa.crypto.encapsulate_batch(base + 1, packets)  # next header by IP version
        self.check_drivers(sa)
        if sa.encap is not None:
            family = socket.AF_INET6 if ":" in sa.remote else socket.AF_INET
            sock = self.ctx.udp.get(family)
            dest = (sa.remote, sa.encap.remote_port)
        else:
            family = socket.AF_INET6 if ":" in sa.remote else socket.AF_INET
            sock = self.ctx.raw.get(family)
            dest = (sa.remote, 0)
        errors = 0
        nbytes = 0
        if sock is None:
            errors = len(wires)
        elif self.segmenting is not None and sa.encap is not None and len(wires) > 1 \
                and self.super_burst:
            errors = self.segmenting.send(sock, wires, dest,
                                          lambda exc: _send_failed(sa.remote, exc))
        else:  # one sendmmsg per 64 datagrams where compiled, else a sendto each
            errors = send_datagrams(sock, wires, dest, lambda exc: _send_failed(sa.remote, exc))
        if errors:
            self.bump(G.SEND_ERRORS, errors)
        nbytes = sum(len(p) for p in packets)
        base_cell = sa.slot * WIDTH
        self.cells[base_cell + F.PACKETS_OUT] += len(packets)
        self.cells[base_cell + F.BYTES_OUT] += nbytes
        expiry = self.lifetime(sa, len(packets), nbytes, (F.PACKETS_OUT, F.BYTES_OUT))
        if expiry is not None:
            kind, reason = expiry
            if kind is Expiry.HARD:
                sa.expired = True
            self.event_once(sa, kind, reason)
        return n == len(packets)


def _send_failed(remote: str, exc: OSError) -> None:
    """Counted by the caller; logged unless it is the usual weather of a busy or
    unreachable peer (a full socket buffer drops, as a NIC queue would)."""
    if isinstance(exc, (BlockingIOError, InterruptedError)):
        return
    if exc.errno not in (errno.ENOBUFS, errno.EHOSTUNREACH, errno.ENETUNREACH,
                         errno.ECONNREFUSED):
        log.warning("ESP send to %s failed: %s", remote, exc)


class InboundLoop(_Loop):
    def __init__(self, ctx: WorkerContext):
        super().__init__(ctx)
        self.by_spi: dict[int, InboundSa] = {}
        self.by_uid: dict[int, InboundSa] = {}
        # SPIs removed lately -> (unique id, when): a packet for one is counted as
        # REMOVED_SPI, not UNKNOWN_SPI, and logged once with its CHILD_SA (issue 18)
        self.gone: dict[int, tuple[int, float]] = {}
        # CHILD_SAs installed with their outbound side waiting (a rekey's or
        # re-establishment's responder): the first packet authenticated under one is told to
        # the daemon, which may switch to it then (RFC 7296 2.8). At most the installed SAs.
        self.awaited: set[int] = set()

    def install(self, spec, slot, active: bool = True):
        if spec.inbound.spi in self.by_spi and self.by_spi[spec.inbound.spi].unique_id != \
                spec.unique_id:
            raise ValueError(f"inbound SPI {spec.inbound.spi:#010x} is already installed")
        sa = build_inbound(spec, self.ctx.dispatcher, slot)
        sa.migrations = sa.crypto.migrations
        self.remove(spec.unique_id)
        self.by_spi[sa.spi] = sa
        self.by_uid[sa.unique_id] = sa
        if not active:
            self.awaited.add(sa.unique_id)
        return sa.crypto.drivers

    def remove(self, uid: int) -> None:
        self.awaited.discard(uid)
        sa = self.by_uid.pop(uid, None)
        if sa is not None:
            self.by_spi.pop(sa.spi, None)
            sa.crypto.close()
            self.gone[sa.spi] = (uid, time.monotonic())
            if len(self.gone) > GONE_SPIS:
                del self.gone[next(iter(self.gone))]

    def unknown_spi(self, spi: int) -> None:
        gone = self.gone.get(spi)
        if gone is None:
            self.cells[G.UNKNOWN_SPI] += 1
            return
        self.cells[G.REMOVED_SPI] += 1
        uid, when = gone
        if when:  # the first one only: the log must not grow with a flood
            self.gone[spi] = (uid, 0.0)
            log.warning("inbound ESP for SPI %08x of CHILD_SA #%d, %.0f ms after its inbound "
                        "SA was removed: dropped", spi, uid, (time.monotonic() - when) * 1e3)

    def readers(self) -> list:
        return [*self.udp_sockets, *self.ctx.raw.values()]

    def on_readable(self, sock) -> None:
        is_udp = sock.type == socket.SOCK_DGRAM
        strip_ip = not is_udp and sock.family == socket.AF_INET
        esp: list[bytes] = []
        for data, addr in (self._read_coalesced(sock) if sock.fileno() in self.coalesced
                           else self._read(sock)):
            if strip_ip:
                if len(data) < 20:
                    self.bump(G.MALFORMED)
                    continue
                data = data[(data[0] & 0x0F) * 4:]
            if is_udp:
                kind = classify(data)
                if kind is Kind.IKE:
                    if self.ctx.forward_ike:
                        self.bump(G.IKE_FORWARDED)
                        send_ike(self.ctx.ctrl, data[4:], addr,
                                 self.ctx.udp_ids.get(sock.fileno()))
                    continue
                if kind is Kind.KEEPALIVE:
                    self.bump(G.KEEPALIVES)
                    continue
                if kind is Kind.MALFORMED:
                    self.bump(G.MALFORMED)
                    continue
            esp.append(data)
        if esp:
            self.receive(esp)

    def _read(self, sock: socket.socket) -> list:
        recvfrom = sock.recvfrom
        datagrams = []
        for _ in range(self.ctx.batch):
            try:
                datagrams.append(recvfrom(MAX_DATAGRAM))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # e.g. ICMP errors reported on the socket
                self.bump(G.SEND_ERRORS)
        return datagrams

    def _read_coalesced(self, sock: socket.socket):
        datagrams, truncated = receive_coalesced(sock, self.ctx.batch,
                                                 lambda _exc: self.bump(G.SEND_ERRORS))
        if truncated:
            self.bump(G.MALFORMED, truncated)
        return datagrams

    def receive(self, packets: list[bytes]) -> None:
        groups: dict[int, list[tuple[bytes, int]]] = {}
        cells = self.cells
        by_spi = self.by_spi
        unpack = _ESP_HEADER.unpack_from
        for p in packets:
            if len(p) < 8:
                cells[G.MALFORMED] += 1
                continue
            spi, seq_low = unpack(p)
            sa = by_spi.get(spi)
            if sa is None:
                self.unknown_spi(spi)
                continue
            rp = sa.replay
            if not rp.esn and seq_low > rp.top:
                seq = seq_low  # the common case: in order, 32-bit: nothing to infer or look up
            else:
                seq = rp.check(seq_low)
                if seq is None:
                    cells[sa.slot * WIDTH + F.REPLAY_DROPS] += 1
                    continue
            groups.setdefault(spi, []).append((p, seq))
        write = os.write
        tun = self.ctx.tun_fd
        tun_for = self.tun_for if len(self.ctx.tun_fds) > 1 else None
        offload = self.ctx.offload
        gso = self.ctx.gso
        mtu = self.ctx.mtu
        writev = os.writev
        for spi, items in groups.items():
            sa = by_spi[spi]
            base = sa.slot * WIDTH
            results = sa.crypto.decapsulate_batch(items)
            self.check_drivers(sa)
            good = 0
            nbytes = 0
            authentic = []  # (seq, (payload, next header)) whose ICV verified
            for (_, seq), res in zip(items, results, strict=True):
                if res.__class__ is not tuple:  # a Drop
                    cells[base + (F.AUTH_FAILURES if res is Drop.AUTH else F.MALFORMED)] += 1
                    continue
                authentic.append((seq, res))
            # RFC 4303 s. 3.4.3: the window moves only for authenticated packets, and each
            # number is accepted once, even when two copies came in one burst
            verdicts = sa.replay.accept_new([seq for seq, _ in authentic])
            allows = sa.check.allows
            ready = []  # offload: written after the loop, runs of one flow coalesced
            for (_, (payload, nh)), new in zip(authentic, verdicts, strict=True):
                if not new:
                    cells[base + F.REPLAY_DROPS] += 1
                    continue
                if nh == NEXT_HEADER_NONE:
                    continue  # TFC dummy (RFC 4303 s. 2.6): authentic, silently dropped
                if not payload or _IP_VERSION.get(nh) != payload[0] >> 4:
                    cells[base + F.MALFORMED] += 1
                    continue
                if not allows(payload):
                    cells[base + F.MALFORMED] += 1
                    cells[base + F.POLICY_DROPS] += 1
                    continue
                if offload:
                    ready.append(payload)
                    good += 1
                    nbytes += len(payload)
                    continue
                try:
                    fd = tun if tun_for is None else tun_for(payload)
                    if gso:
                        writev(fd, (to_tun_header(payload, mtu), payload))
                    else:
                        write(fd, payload)
                except OSError:
                    cells[G.TUN_WRITE_ERRORS] += 1
                    continue
                good += 1
                nbytes += len(payload)
            if ready:
                # TCP runs only: a UDP super-packet (USO) is cut again at once for a socket
                # without UDP_GRO and landed as one burst in its buffer; measured, a UDP
                # flood's receiver then lost 3x more (the kernel's GRO does not build those
                # either)
                for hdr, pkt, count in coalesce(ready, udp=False):
                    try:
                        writev(tun if tun_for is None else tun_for(pkt), (hdr, pkt))
                    except OSError:
                        cells[G.TUN_WRITE_ERRORS] += count
                        good -= count
                        # the segments' bytes: each repeated the headers (hdr_len)
                        nbytes -= len(pkt) + (count - 1) * int.from_bytes(hdr[2:4], "little")
            if good:
                cells[base + F.PACKETS_IN] += good
                cells[base + F.BYTES_IN] += nbytes
                if self.awaited and sa.unique_id in self.awaited:
                    # only packets that passed the ICV (and replay, policy) count: nothing
                    # unauthenticated can make the daemon switch
                    self.awaited.discard(sa.unique_id)
                    send_msg(self.ctx.ctrl, ("event", sa.unique_id, "inbound",
                                             "inbound SA: first authenticated packet"))
                expiry = self.lifetime(sa, good, nbytes, (F.PACKETS_IN, F.BYTES_IN))
                if expiry is not None:
                    kind, reason = expiry
                    if kind is Expiry.HARD:
                        self.remove(sa.unique_id)
                    self.event_once(sa, kind, reason)

    def tun_for(self, packet: bytes) -> int:
        """The TUN queue to write an inner packet on, by its flow: always the same queue for
        one flow. The tun driver steers a flow's outgoing packets to the queue that last wrote
        one of its packets (its flow table), so writing a flow on one queue keeps its replies
        on one outbound worker, in order; which queue does not matter."""
        if packet[0] >> 4 == 4:
            ihl = (packet[0] & 0x0F) * 4
            key = packet[12:20]  # addresses, then ports where the protocol has them
            if packet[9] in _PORTS:
                key += packet[ihl:ihl + 4]
        else:
            key = packet[8:40]
            if packet[6] in _PORTS:  # extension headers are not walked
                key += packet[40:44]
        fds = self.ctx.tun_fds
        return fds[zlib.crc32(key) % len(fds)]


IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)  # <linux/in.h>; the module lacks
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)  # the PMTUDISC_* values
PMTUDISC_DONT = 0
SOCKET_BUFFER = 8 << 20  # a burst the other loop cannot take at once must not be lost


def tune_socket(sock: socket.socket) -> None:
    """Big buffers: a drop here costs TCP a retransmit and halves its window. And let the
    kernel fragment ESP packets larger than the link MTU (as IPsec gateways do with DF
    clear) instead of refusing them."""
    with contextlib.suppress(OSError):
        if sock.family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, PMTUDISC_DONT)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, PMTUDISC_DONT)
    for opt, forced in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # *BUFFORCE
        try:
            sock.setsockopt(socket.SOL_SOCKET, forced, SOCKET_BUFFER)
        except OSError:  # not root: the sysctl limits apply
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)


def worker_main(ctx: WorkerContext) -> None:
    """Entry point of a worker process (forked: it inherits the dispatcher and its drivers)."""
    # The daemon decides when we stop: it sends "stop", or it dies and our control socket
    # reads EOF. (A SIGTERM to the daemon's process group must not kill us before it can
    # remove its routes.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for fd in ctx.close_fds:  # else we would hold the daemon's end open and never see EOF
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)  # the daemon's loop must not hear our signals
    ctx.ctrl.setblocking(True)
    for s in (*ctx.raw.values(), *ctx.udp.values()):
        s.setblocking(False)
        tune_socket(s)
    loop = OutboundLoop(ctx) if ctx.role == "out" else InboundLoop(ctx)
    profile_dir = os.environ.get("OCFPY_ESP_PROFILE")  # a directory: cProfile each worker
    try:
        if profile_dir:
            import cProfile

            prof = cProfile.Profile()
            try:
                prof.runcall(loop.run)
            finally:
                prof.dump_stats(os.path.join(profile_dir, f"esp-{ctx.role}-{os.getpid()}.prof"))
        else:
            loop.run()
    finally:
        for sa_uid in list(getattr(loop, "sas", {}) or getattr(loop, "by_uid", {})):
            loop.remove(sa_uid)
