"""The sans-I/O IKEv2 engine (aioquic's QuicConnection shape, for many SAs at once).

The daemon feeds datagrams in (`receive_datagram`), pulls datagrams out (`datagrams_to_send`),
arms one timer (`get_timer` / `handle_timer`) and acts on events (`next_event`). Nothing here
opens a socket or reads a clock. Bad input never raises out of `receive_datagram`: it is
dropped and counted in `stats`, or answered with the notify RFC 7296 asks for.

Demultiplexing: requests from an initiator with SPIr = 0 are IKE_SA_INIT for a new (or
half-open) SA, keyed by (SPIi, peer address); everything else finds its SA by our own SPI.
Above ``cookie_threshold`` half-open SAs, IKE_SA_INIT without a valid COOKIE gets a stateless
COOKIE challenge (RFC 7296 2.6).

The engine is a facade. What the SAs share lives in small collaborators, handed to each SA in
one IkeContext (ike/context.py): the SA table (sa_table), SPI allocation (spi), connection
matching and proposals (connections), PSKs (credentials), the outbox of datagrams, events and
counters; building a rekeyed IKE SA is ike/rekey.py. The engine keeps what only it decides:
the timer heap, where datagrams go, and what happens when a peer stops answering.
"""

from __future__ import annotations

import functools
import heapq
import ipaddress
import itertools
import logging
import os
from collections.abc import Callable

from ocfpy.ike import codec
from ocfpy.ike.codec.header import Header, pull_header
from ocfpy.ike.codec.message import Message, _xname, encode
from ocfpy.ike.codec.payloads import Limits, NotifyPayload, OverLimit
from ocfpy.ike.config import ChildConfig, Connection, IkeConfig
from ocfpy.ike.connections import Connections
from ocfpy.ike.constants import ExchangeType, HeaderFlag, NotifyType, PayloadType
from ocfpy.ike.context import IkeContext, Outbox
from ocfpy.ike.cookies import Cookies
from ocfpy.ike.credentials import Credentials
from ocfpy.ike.errors import DecodeError, IkeUsageError
from ocfpy.ike.events import Addr, Event
from ocfpy.ike.exchange import GiveUp
from ocfpy.ike.sa import IkeSa
from ocfpy.ike.sa_table import SaTable
from ocfpy.ike.spi import SpiAllocator
from ocfpy.ike.state import IkeState
from ocfpy.ike.tasks.base import Task
from ocfpy.ike.tasks.child_create import ChildCreate
from ocfpy.ike.tasks.child_rekey import ChildRekey
from ocfpy.ike.tasks.delete import ChildDelete, IkeDelete
from ocfpy.ike.tasks.ike_auth import IkeAuth
from ocfpy.ike.tasks.ike_init import IkeInit
from ocfpy.ike.tasks.ike_rekey import IkeRekey

log = logging.getLogger(__name__)


class IkeEngine:
    def __init__(self, config: IkeConfig, dispatcher, *,
                 random: Callable[[int], bytes] | None = None):
        """``random``: the one source of nonces, SPIs and the COOKIE secret (see
        ike/context.py for why it defaults to ``os.urandom``); tests pass a seeded one."""
        self.config = config
        self.dispatcher = dispatcher
        random = random or os.urandom
        self.sas = SaTable()
        self.out = Outbox()
        self.connections = Connections(config, dispatcher)
        self.ctx = IkeContext(dispatcher, config.daemon, random, self.out, self.sas,
                              SpiAllocator(random, self.sas), self.connections,
                              Credentials(config.secrets, dispatcher), dispatcher.open("hashsha1"))
        opts = config.daemon
        self._cookies = Cookies(dispatcher, random, opts.cookie_rotation, opts.cookie_grace)
        self._limits = Limits(opts.max_proposals, opts.max_transforms, opts.max_payloads,
                              opts.max_notifies)
        self._init_rate = _Rate()
        self._refusals = _RefusalLog(opts.refusal_log_interval)
        self._timers: list[tuple[float, int, int]] = []
        self._seq = itertools.count()
        #: re-establishments of SAs whose connection a reload changed: new IKE SA id -> old
        self._replacing: dict[int, int] = {}

    @property
    def stats(self):
        return self.out.stats

    # -- datagrams, timers, events ------------------------------------------------------------
    def receive_datagram(self, data: bytes, local: Addr, remote: Addr, now: float) -> None:
        self.out.count("received")
        if len(data) > self.config.daemon.max_packet:
            # charon.max_packet: nothing this big is needed, and parsing it costs (finding 6)
            self.out.count("dropped_too_large")
            return
        try:
            self._receive(bytes(data), local, remote, now)
        except OverLimit as exc:
            self.out.count("dropped_over_limit")
            log.debug("dropped datagram from %s: %s", remote, exc)
        except DecodeError as exc:
            self.out.count("dropped_malformed")
            log.debug("dropped datagram from %s: %s", remote, exc)
        except Exception:  # the daemon must never die of a datagram: count it, keep the trace
            self.out.count("internal_errors")
            log.exception("internal error handling a datagram from %s", remote)
        self._reschedule_touched(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr, Addr]]:
        out, self.out.datagrams = self.out.datagrams, []
        return out

    def get_timer(self) -> float | None:
        heap = self._timers
        while heap:
            deadline, _, sa_id = heap[0]
            sa = self.sas.by_id(sa_id)
            if sa is not None and sa.deadline == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> None:
        heap = self._timers
        while heap and heap[0][0] <= now:
            deadline, _, sa_id = heapq.heappop(heap)
            sa = self.sas.by_id(sa_id)
            if sa is None or sa.deadline != deadline:
                continue
            sa.deadline = None
            self.sas.touch(sa)
            try:
                if self._rekey_due_on_changed(sa, now):
                    self._reestablish(sa, now)
                gave_up = sa.handle_timer(now)
                if gave_up is not None:
                    self._gave_up(sa, gave_up, now)
            except Exception:
                self.out.count("internal_errors")
                log.exception("internal error in a timer of IKE SA %d", sa_id)
            self._reschedule_touched(now)

    def next_event(self) -> Event | None:
        events = self.out.events
        if not events:
            return None
        ev = events.popleft()
        # the whole event, keys included as their reprs allow (SaKeys shows sizes only)
        log.debug("event %r", ev)
        return ev

    # -- commands -----------------------------------------------------------------------------
    def initiate(self, connection: str, now: float, child: str | None = None, *,
                 reuse: bool = True) -> int:
        """Start the connection (its first child, or ``child``). With ``reuse`` (charon's
        behaviour) an IKE SA of this connection that is up or coming up takes the CHILD_SA
        instead; ``reuse=False`` always negotiates a new IKE SA (load tests)."""
        conn = self.connections.get(connection)
        local, remote = self.connections.endpoints(conn)
        if child is not None and child not in conn.children:
            raise IkeUsageError(f"connection {connection!r} has no child {child!r} (children: "
                                f"{', '.join(conn.children) or 'none'})")
        existing = self._reusable_sa(conn) if reuse else None
        if existing is not None:
            # like charon: a second initiate reuses the IKE SA and only adds the CHILD_SA
            if child is not None and not _has_child(existing, child):
                self._run(existing, ChildCreate(conn.children[child], in_ike_auth=False), now)
            return existing.id
        props, dropped = self.connections.ike_proposals(conn)
        if not props:
            raise IkeUsageError(f"connection {connection!r}: no IKE proposal can be served "
                                f"(cannot serve: {', '.join(dropped)}; backend "
                                f"{self.dispatcher.backend or 'auto'})")
        cfg = conn.children.get(child) if child else next(iter(conn.children.values()), None)
        self.out.count("initiated")
        sa = self._start(conn, self.sas.new_id(), local, remote, [cfg] if cfg else [], 1, now)
        self._reschedule_touched(now)
        return sa.id

    def initiate_child(self, ike_id: int, child: str, now: float) -> None:
        """Another CHILD_SA on an established IKE SA (CREATE_CHILD_SA; PFS as for a rekey)."""
        sa = self._sa_by_id(ike_id)
        cfg = sa.conn.children.get(child)
        if cfg is None:
            raise IkeUsageError(f"connection {sa.name!r} has no child {child!r}")
        self._run(sa, ChildCreate(cfg, in_ike_auth=False), now)

    def rekey_ike(self, ike_id: int, now: float) -> None:
        """Replace an IKE SA by a new one (CREATE_CHILD_SA); its CHILD_SAs move over. An SA
        of a connection a reload changed is re-established under the new config instead
        (see reload())."""
        sa = self._sa_by_id(ike_id)
        if not sa.is_established:
            raise IkeUsageError(f"IKE SA {ike_id} is {sa.state.value}")
        if self._changed_by_reload(sa):
            self._reestablish(sa, now)
            return
        self._run(sa, IkeRekey(), now)

    def rekey_child(self, unique_id: int, now: float) -> None:
        """Replace a CHILD_SA with a fresh one (CREATE_CHILD_SA with REKEY_SA; PFS required
        when the child's ESP proposals name a group, else offered with the IKE SA's group next
        to NONE, proposals.with_optional_pfs); the old one is deleted once the new one is up.
        The daemon calls this on a dataplane soft-lifetime event."""
        for sa in self.sas:
            child = sa.child_by_id(unique_id)
            if child is not None:
                if not sa.is_established:
                    raise IkeUsageError(f"IKE SA {sa.id} is {sa.state.value}")
                if self._changed_by_reload(sa):
                    self._reestablish(sa, now)
                    return
                self._run(sa, ChildRekey(child), now)
                return
        raise IkeUsageError(f"no CHILD_SA with unique id {unique_id}")

    def child_sa_expired(self, unique_id: int, kind: str, now: float) -> None:
        """A dataplane lifetime limit (RFC 4301 4.4.2.1): at the soft limit the CHILD_SA is
        rekeyed; at the hard limit the dataplane already removed it, so the peer is told with
        a Delete. Unknown or already replaced CHILD_SAs are ignored (the event raced a rekey)."""
        try:
            if kind == "soft":
                self.rekey_child(unique_id, now)
            else:
                self.terminate(f"child:{unique_id}", now)
        except IkeUsageError as exc:
            log.info("lifetime %s of CHILD_SA #%d not acted on: %s", kind, unique_id, exc)

    def child_sa_inbound(self, unique_id: int, now: float) -> None:
        """The dataplane authenticated the first packet under CHILD_SA ``unique_id``'s
        inbound SA (its ICV passed; nothing unauthenticated gets here). If its outbound SA
        waits for the peer (a rekey's or a re-establishment's responder), send on it now
        (RFC 7296 2.8; docs/ike.md *Rekeying*). Unknown ids are ignored (it raced a Delete)."""
        for sa in self.sas:
            child = sa.child_by_id(unique_id)
            if child is not None:
                if sa.inbound_seen(child):
                    log.info("%s[%d]: CHILD_SA #%d: the peer sends on it: outbound switched",
                             sa.name, sa.id, unique_id)
                self.sas.touch(sa)
                break
        self._reschedule_touched(now)

    def terminate(self, name_or_id: str | int, now: float) -> None:
        """Delete IKE SAs (by id, or all of a connection name) or one CHILD_SA ("conn/child"
        or a child's unique id as "child:<n>") with an INFORMATIONAL Delete."""
        if isinstance(name_or_id, str) and name_or_id.startswith("child:"):
            uid = int(name_or_id[6:])
            for sa in self.sas:
                if sa.child_by_id(uid) is not None:
                    self._run(sa, ChildDelete(uid), now)
                    return
            raise IkeUsageError(f"no CHILD_SA with unique id {uid}")
        if isinstance(name_or_id, str) and "/" in name_or_id:
            conn, _, child = name_or_id.partition("/")
            hit = False
            for sa in self.sas:
                for c in sa.children:
                    if sa.name == conn and c.cfg.name == child:
                        sa.tasks.queue_task(ChildDelete(c.unique_id))
                        hit = True
                sa.tasks.initiate(sa, now)
                self.sas.touch(sa)
            self._reschedule_touched(now)
            if not hit:
                raise IkeUsageError(f"no CHILD_SA named {name_or_id!r}")
            return
        sas = self._select(name_or_id)
        if not sas:
            raise IkeUsageError(f"no IKE SA matches {name_or_id!r}")
        for sa in sas:
            self._delete(sa, now)
        self._reschedule_touched(now)

    def shutdown(self, now: float) -> None:
        """SIGTERM: send a Delete for every established IKE SA (once, not retransmitted) and
        close everything now (strongSwan does the same at shutdown)."""
        for sa in self.sas:
            if sa.is_established and not sa.tasks.busy:
                sa.tasks.queue_task(IkeDelete("shutdown"))
                sa.tasks.initiate(sa, now)
            sa.close("shutdown")

    def reload(self, config: IkeConfig, now: float) -> dict[str, list[str]]:
        """Replace the connections and secrets with ``config``'s (a checked file: the daemon's
        reload). The rules, after `swanctl --load-all` (a loaded config replaces the set):

        - added connections and every secret take effect for the next negotiation;
        - a removed connection's IKE SAs (and so their CHILD_SAs) are deleted (INFORMATIONAL
          Delete, RFC 7296 1.4.1);
        - a changed connection (any key differs) is replaced for new SAs (initiate, a peer's
          IKE_SA_INIT); its established SAs keep running on the settings they were negotiated
          with (each IKE SA holds its own Connection, as charon's IKE_SA holds its peer_cfg)
          until their next rekey (scheduled, a lifetime's soft limit, or `sa rekey`): that
          rekey is replaced by a re-establishment under the new config, make-before-break
          (_reestablish). Only an IKE SA's initiator rekeys, so on a responder they run until
          the peer re-establishes them or they are deleted;
        - an unchanged connection keeps its very object, so its SAs see no difference at all.

        Returns the names by outcome. The daemon options ([daemon]) are not reloaded."""
        old = self.config.connections
        merged = {}
        result: dict[str, list[str]] = {"added": [], "removed": [], "changed": [],
                                        "unchanged": []}
        for name, conn in config.connections.items():
            if name not in old:
                result["added"].append(name)
                merged[name] = conn
            elif old[name] == conn:
                result["unchanged"].append(name)
                merged[name] = old[name]
            else:
                result["changed"].append(name)
                merged[name] = conn
        result["removed"] = [name for name in old if name not in merged]
        self.config.connections = merged
        self.config.secrets = config.secrets
        self.ctx.credentials = Credentials(config.secrets, self.dispatcher)
        for name in result["removed"]:
            self.out.why.pop(name, None)
            for sa in [sa for sa in self.sas if sa.name == name and not sa.is_closed]:
                self._delete(sa, now)
        self._reschedule_touched(now)
        return result

    # -- re-establishing SAs of a changed connection (reload) ---------------------------------
    def _changed_by_reload(self, sa: IkeSa) -> bool:
        """``sa`` was negotiated under a connection that a reload has since replaced (an
        unchanged connection keeps its object; a removed one has its SAs deleted). Only the
        initiator re-establishes (it has the address to start to, and rekeys on its own)."""
        current = self.config.connections.get(sa.name)
        return (current is not None and current is not sa.conn and sa.initiator
                and sa.is_established and sa.replaced_by is None
                and sa.id not in self._replacing.values())

    def _rekey_due_on_changed(self, sa: IkeSa, now: float) -> bool:
        if not self._changed_by_reload(sa):
            return False
        due = [sa.rekey_at, *(c.rekey_at for c in sa.children)]
        return any(t is not None and now >= t for t in due)

    def _reestablish(self, old: IkeSa, now: float) -> None:
        """The rekey of an SA whose connection a reload changed: a new IKE SA under the new
        config with the children the old one carries (those the new config still has),
        make-before-break as charon's reauthentication (make_before_break = yes): the old
        IKE SA, and with it its CHILD_SAs, is deleted once the new one and its children are
        up (_settle_replacements), so traffic never stops. If the new one fails the old
        keeps running and is tried again at its next rekey time."""
        conn = self.config.connections[old.name]
        old.rekey_at = None  # no ordinary rekey of it any more: the replacement is that rekey
        for c in old.children:
            c.rekey_at = None
        names = list(dict.fromkeys(c.cfg.name for c in old.children))
        children = [conn.children[n] for n in names if n in conn.children]
        try:
            local, remote = self.connections.endpoints(conn)
        except IkeUsageError as exc:
            log.warning("%s[%d]: cannot re-establish under the reloaded config (%s): it keeps "
                        "running on the old one", old.name, old.id, exc)
            self._retry_later(old, now)
            return
        log.info("%s[%d]: rekey due on a connection changed by a reload: re-establishing under "
                 "the new config (children %s), the old IKE SA goes once the new one is up",
                 old.name, old.id, ", ".join(c.name for c in children) or "none")
        self.out.count("reestablished_after_reload")
        new = self._start(conn, self.sas.new_id(), local, remote, children, 1, now)
        self._replacing[new.id] = old.id
        self.sas.touch(old)

    def _retry_later(self, old: IkeSa, now: float) -> None:
        old.rekey_at = old.rekey_deadline(old.conn.rekey_time, now)
        self.sas.touch(old)

    def _settle_replacements(self, now: float) -> None:
        """Delete the SAs whose re-establishment is complete; let those whose replacement
        failed run on (and try again at their next rekey time)."""
        for new_id, old_id in list(self._replacing.items()):
            new, old = self.sas.by_id(new_id), self.sas.by_id(old_id)
            if old is None or old.is_closed:
                del self._replacing[new_id]
            elif new is None or new.is_closed:
                del self._replacing[new_id]
                log.warning("%s[%d]: re-establishing under the reloaded config failed: the old "
                            "IKE SA keeps running", old.name, old.id)
                self._retry_later(old, now)
            elif new.is_established and not _pending_children(new):
                del self._replacing[new_id]
                log.info("%s[%d] replaced by %s[%d] (config reloaded): deleting the old one",
                         old.name, old.id, new.name, new.id)
                self._delete(old, now)

    def sa_list(self) -> list[dict]:
        return [sa.as_dict() for sa in self.sas if not sa.is_closed]

    def why(self, name: str) -> str | None:
        return self.out.why.get(name)

    # -- starting, retrying -------------------------------------------------------------------
    def _start(self, conn: Connection, sa_id: int, local: Addr, remote: Addr,
               children: list[ChildConfig], attempt: int, now: float) -> IkeSa:
        sa = IkeSa(self.ctx, sa_id, conn, True, local, remote, now)
        sa.attempt = attempt
        sa.spi_i = self.ctx.spis.ike()
        self.sas.add(sa)
        sa.tasks.queue_task(IkeInit())
        sa.tasks.queue_task(IkeAuth())
        for i, cfg in enumerate(children):
            sa.tasks.queue_task(ChildCreate(cfg, in_ike_auth=i == 0))
        sa.tasks.initiate(sa, now)
        return sa

    def _gave_up(self, sa: IkeSa, gave_up: GiveUp, now: float) -> None:
        """A request of ``sa`` went unanswered. An initiator still negotiating starts again
        with a fresh IKE SA under the same id while keyingtries (swanctl) allow; anything else
        is dead (a failed DPD, RFC 7296 2.4, or the last try)."""
        tries = sa.conn.keyingtries
        if sa.initiator and not sa.is_established and not (tries and sa.attempt >= tries):
            children = [t.cfg for t in gave_up.pending
                        if isinstance(t, ChildCreate) and t.cfg is not None]
            log.info("%s: %s is not responding, trying again (%d/%s)", sa.name, sa.remote[0],
                     sa.attempt + 1, tries or "forever")
            self.out.count("keying_retries")
            remote = (sa.remote[0], sa.conn.remote_port)
            local = (sa.local[0], sa.conn.local_port)
            sa.close("retrying")
            self._start(sa.conn, sa.id, local, remote, children, sa.attempt + 1, now)
            return
        sa.no_answer(gave_up.tries)

    def _reusable_sa(self, conn: Connection) -> IkeSa | None:
        for sa in self.sas:
            if sa.initiator and sa.conn is conn and sa.state in (IkeState.CONNECTING,
                                                                 IkeState.ESTABLISHED,
                                                                 IkeState.CREATED):
                return sa
        return None

    # -- internals ----------------------------------------------------------------------------
    def _run(self, sa: IkeSa, task: Task, now: float) -> None:
        """Queue ``task`` on ``sa`` and start it if the SA is idle."""
        sa.tasks.queue_task(task)
        sa.tasks.initiate(sa, now)
        self.sas.touch(sa)
        self._reschedule_touched(now)

    def _sa_by_id(self, ike_id: int) -> IkeSa:
        sa = self.sas.by_id(ike_id)
        if sa is None:
            raise IkeUsageError(f"no IKE SA with id {ike_id}")
        return sa

    def _select(self, name_or_id: str | int) -> list[IkeSa]:
        if isinstance(name_or_id, int) or (isinstance(name_or_id, str) and name_or_id.isdigit()):
            sa = self.sas.by_id(int(name_or_id))
            return [sa] if sa is not None else []
        return [sa for sa in self.sas if sa.name == name_or_id]

    def _delete(self, sa: IkeSa, now: float) -> None:
        if sa.is_established:
            sa.tasks.queue.clear()
            sa.tasks.queue_task(IkeDelete())
            sa.tasks.initiate(sa, now)  # a no-op while an exchange is in flight: it follows
        else:
            sa.fail(None, "terminated before it was established")
        self.sas.touch(sa)

    def _reschedule_touched(self, now: float | None = None) -> None:
        """Re-arm the timers of every SA that changed since the last call."""
        if self._replacing and now is not None:
            self._settle_replacements(now)
        for sa in self.sas.drain_touched():
            d = sa.next_deadline()
            if d != sa.deadline:
                sa.deadline = d
                if d is not None:
                    heapq.heappush(self._timers, (d, next(self._seq), sa.id))

    def _receive(self, data: bytes, local: Addr, remote: Addr, now: float) -> None:
        try:
            h = pull_header(data)
        except DecodeError as exc:
            if exc.notify == NotifyType.INVALID_MAJOR_VERSION and len(data) >= 28:
                self._answer_major_version(data, local, remote)
            raise
        try:
            msg = codec.decode(data, h, self._limits)
        except DecodeError as exc:
            if exc.notify == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD and not h.is_response \
                    and h.exchange == ExchangeType.IKE_SA_INIT and h.from_initiator:
                # RFC 7296 2.5: tell the initiator which payload type we do not understand
                self.out.count("unsupported_critical_payload")
                self._answer(h, [NotifyPayload(exc.notify, exc.data)], local, remote)
            raise
        log.debug("received %s %s %d from %s:%d (%d bytes, %d payloads)",
                  _xname(h.exchange), "response" if h.is_response else "request",
                  h.message_id, remote[0], remote[1], len(data), len(msg.payloads))
        if not h.is_response and h.exchange == ExchangeType.IKE_SA_INIT:
            if h.message_id == 0 and h.from_initiator and not h.spi_r.strip(b"\x00"):
                self._receive_init(msg, h, local, remote, now)
            else:
                # RFC 7296 1.2, 2.6: an IKE_SA_INIT request names no responder SPI and has
                # message ID 0; one carrying an SA's SPIs touches nothing (finding 2)
                self.out.count("dropped_init_on_sa")
            return
        our_spi = h.spi_r if h.from_initiator else h.spi_i
        sa = self.sas.by_spi(our_spi)
        if sa is None or sa.initiator == h.from_initiator or \
                (not sa.initiator and sa.spi_i != h.spi_i):
            self.out.count("dropped_unknown_spi")
            return
        self.sas.touch(sa)
        if h.is_response:
            if sa.initiator and h.exchange == ExchangeType.IKE_SA_INIT and \
                    sa.state is IkeState.CONNECTING:
                pass  # spi_r learned in IkeInit.process_i
            elif sa.spi_r != h.spi_r:
                self.out.count("dropped_unknown_spi")
                return
            if sa.initiator and sa.state is IkeState.CONNECTING and _unspecified(sa.local[0]):
                # initiated without a local address: now we know which one the peer answers
                # to; our NAT-D source hash was computed over the wildcard, so the peer sees a
                # NAT: both sides must then agree on NAT-T (see IkeSa.process_natd)
                sa.local = (local[0], sa.local[1])
                sa.source_guessed = True
            sa.tasks.on_response(sa, msg, now)
        else:
            sa.tasks.on_request(sa, msg, local, remote, now)

    def _receive_init(self, msg: Message, h: Header, local: Addr, remote: Addr,
                      now: float) -> None:
        key = (h.spi_i, remote[0])
        sa = self.sas.half_open(key)
        if sa is not None:
            # RFC 7296 2.1: a retransmission gets the identical response, wherever from (a
            # NAT may have rebound the initiator's port; finding 8, strongSwan does the same).
            # Any other request with this SPIi is not ours to act on: the half-open SA was
            # made for the first one, and a spoofer must not replace its nonce or KE.
            if msg.raw == sa.init_request and sa.tasks.last_resp is not None:
                self.out.count("retransmits_answered")
                for raw in sa.tasks.last_resp:  # one datagram (IKE_SA_INIT is never fragmented)
                    sa.send(raw, local, remote, now)
            else:
                self.out.count("dropped_init_on_sa")
            return
        msg.check_plain()
        opts = self.config.daemon
        # RFC 7296 2.6: demand a COOKIE under load, measured both as half-open SAs and as the
        # rate of IKE_SA_INIT requests (refused ones count: each cost a proposal match)
        rate = self._init_rate.add(now)
        threshold = opts.cookie_threshold
        loaded = threshold and (self.sas.half_open_count >= threshold or
                                (opts.init_rate_threshold and rate > opts.init_rate_threshold))
        if loaded and not self._cookies.valid(msg, remote, now):
            self.out.count("cookies_sent")
            self._answer(h, [NotifyPayload(NotifyType.COOKIE,
                                           self._cookies.make(msg, remote, now))], local, remote)
            return
        # caps on state (charon's init_limit_half_open, block_threshold): past them a request
        # is dropped unanswered; with COOKIEs in force its source address is genuine
        if opts.half_open_limit and self.sas.half_open_count >= opts.half_open_limit:
            self.out.count("dropped_half_open_limit")
            return
        if opts.half_open_limit_per_ip and \
                self.sas.half_open_from(remote[0]) >= opts.half_open_limit_per_ip:
            self.out.count("dropped_half_open_limit_per_ip")
            return
        conn, why, name = self.connections.for_init(msg.get(PayloadType.SA), local, remote)
        if conn is None:
            self.out.count("init_refused")
            why = _summarised(why)
            self._refusals.warn(remote[0], now, name, why)
            self.out.record_failure(name, NotifyType.NO_PROPOSAL_CHOSEN, why)
            self._answer(h, [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)], local, remote)
            return
        sa = IkeSa(self.ctx, self.sas.new_id(), conn, False, local, remote, now)
        sa.spi_i = h.spi_i
        sa.spi_r = self.ctx.spis.ike()
        sa.transition("recv_init")
        self.sas.add(sa, half_open=key)
        sa.tasks.on_request(sa, msg, local, remote, now)

    def _answer(self, h: Header, payloads: list, local: Addr, remote: Addr) -> None:
        """A stateless unencrypted answer to an IKE_SA_INIT request."""
        resp = Message(h.spi_i, bytes(8), h.exchange, h.message_id, True, False, payloads)
        self.out.send(encode(resp), local, remote)

    def _answer_major_version(self, data: bytes, local: Addr, remote: Addr) -> None:
        """RFC 7296 2.5: a request with a higher major version gets INVALID_MAJOR_VERSION,
        carrying the version we speak, in a message of that version."""
        flags = data[19]
        if flags & HeaderFlag.RESPONSE:
            return
        self.out.count("invalid_major_version")
        resp = Message(data[0:8], data[8:16], data[18], int.from_bytes(data[20:24], "big"),
                       True, False, [NotifyPayload(NotifyType.INVALID_MAJOR_VERSION, b"\x20")])
        self.out.send(encode(resp), local, remote)


class _Rate:
    """Events per second over the last second or so: this second's count plus the previous
    second's, weighted by how much of it the window still covers (nginx's limit_req idea)."""

    __slots__ = ("_second", "_this", "_last")

    def __init__(self) -> None:
        self._second = 0
        self._this = 0
        self._last = 0

    def add(self, now: float) -> float:
        sec = int(now)
        if sec != self._second:
            self._last = self._this if sec == self._second + 1 else 0
            self._this = 0
            self._second = sec
        self._this += 1
        return self._this + self._last * (1.0 - (now - sec))


class _RefusalLog:
    """One warning per source address per ``interval``; what was held back is counted and
    said with the next one. The table is bounded: a flood from many addresses cannot grow it
    (the oldest entries go first)."""

    MAX_SOURCES = 4096
    __slots__ = ("interval", "_next")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next: dict[str, tuple[float, int]] = {}

    def warn(self, source: str, now: float, name: str, why: str) -> bool:
        due, held = self._next.pop(source, (0.0, 0))
        if now < due:
            self._next[source] = (due, held + 1)
            return False
        while len(self._next) >= self.MAX_SOURCES:
            self._next.pop(next(iter(self._next)))
        self._next[source] = (now + self.interval, 0)
        more = f" ({held} more from {source} not logged)" if held else ""
        log.warning("%s: refused IKE_SA_INIT from %s: %s%s", name, source, why, more)
        return True


def _summarised(text: str, limit: int = 600) -> str:
    """A refusal explanation names the offer; a hostile offer must not make it unbounded."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def _pending_children(sa: IkeSa) -> bool:
    """``sa`` still negotiates a CHILD_SA (queued or in flight)."""
    return any(isinstance(t, ChildCreate) for t in (*sa.tasks.active, *sa.tasks.queue))


def _has_child(sa: IkeSa, child: str) -> bool:
    """``sa`` has, or is negotiating, a CHILD_SA of that name."""
    if any(c.cfg.name == child for c in sa.children):
        return True
    pending = sa.tasks.active + sa.tasks.queue
    return any(isinstance(t, ChildCreate) and t.cfg is not None and t.cfg.name == child
               for t in pending)


@functools.lru_cache(maxsize=256)
def _unspecified(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_unspecified
    except ValueError:
        return False


__all__ = ["IkeEngine"]
