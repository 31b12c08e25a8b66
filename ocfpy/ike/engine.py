"""The sans-I/O IKEv2 engine (aioquic's QuicConnection shape, for many SAs at once).

The daemon feeds datagrams in (`receive_datagram`), pulls datagrams out (`datagrams_to_send`),
arms one timer (`get_timer` / `handle_timer`) and acts on events (`next_event`). Nothing here
opens a socket or reads a clock. Bad input never raises out of `receive_datagram`: it is
dropped and counted in `stats`, or answered with the notify RFC 7296 asks for.

Demultiplexing: requests from an initiator with SPIr = 0 are IKE_SA_INIT for a new (or
half-open) SA, keyed by (SPIi, peer address); everything else finds its SA by our own SPI.
Above ``cookie_threshold`` half-open SAs, IKE_SA_INIT without a valid COOKIE gets a stateless
COOKIE challenge (RFC 7296 2.6).
"""

from __future__ import annotations

import functools
import heapq
import ipaddress
import itertools
import logging
from collections import Counter, deque
from collections.abc import Callable

from ocfpy.crypto.catalogue import TransformType
from ocfpy.ike import codec
from ocfpy.ike.codec.header import Header, pull_header
from ocfpy.ike.codec.message import Message, encode
from ocfpy.ike.codec.payloads import NotifyPayload, SaPayload
from ocfpy.ike.config import ChildConfig, Connection, IkeConfig
from ocfpy.ike.constants import ExchangeType, HeaderFlag, NotifyType, PayloadType, notify_name
from ocfpy.ike.errors import DecodeError, IkeUsageError
from ocfpy.ike.events import Addr, Event, IkeSaClosed, IkeSaEstablished, NegotiationFailed
from ocfpy.ike.identity import Identity
from ocfpy.ike.proposals import (
    Proposal,
    accepts,
    explain_mismatch,
    from_raw,
    parse_esp,
    parse_ike,
    select,
)
from ocfpy.ike.proposals import servable as servable_proposals
from ocfpy.ike.sa import IkeSa
from ocfpy.ike.state import IkeState
from ocfpy.ike.tasks.child_create import ChildCreate
from ocfpy.ike.tasks.child_rekey import ChildRekey
from ocfpy.ike.tasks.delete import ChildDelete, IkeDelete
from ocfpy.ike.tasks.ike_auth import IkeAuth
from ocfpy.ike.tasks.ike_init import IkeInit
from ocfpy.ike.tasks.ike_rekey import IkeRekey

log = logging.getLogger(__name__)

COOKIE_VERSION = b"\x01"


def _addr_matches(patterns: list[str], ip: str) -> bool:
    return not patterns or _addr_matches_cached(tuple(patterns), ip)


@functools.lru_cache(maxsize=4096)
def _addr_matches_cached(patterns: tuple[str, ...], ip: str) -> bool:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for p in patterns:
        if p == "%any" or (p == "%any4" and a.version == 4) or (p == "%any6" and a.version == 6):
            return True
        try:
            if a in ipaddress.ip_network(p, strict=False):
                return True
        except ValueError:
            continue
    return False


class IkeEngine:
    def __init__(self, config: IkeConfig, dispatcher, *,
                 random: Callable[[int], bytes] | None = None):
        self.config = config
        self.dispatcher = dispatcher
        self.random = random or dispatcher.random
        self.stats: Counter[str] = Counter()
        self._sas: dict[bytes, IkeSa] = {}  # our SPI -> SA
        self._by_id: dict[int, IkeSa] = {}
        self._half_open: dict[tuple[bytes, str, int], IkeSa] = {}
        self._child_spis: set[bytes] = set()
        self._out: list[tuple[bytes, Addr, Addr]] = []
        self._events: deque[Event] = deque()
        self._timers: list[tuple[float, int, int]] = []
        self._ids = itertools.count(1)
        self._child_ids = itertools.count(1)
        self._seq = itertools.count()
        self._why: dict[str, str] = {}
        self._ike_cache: dict[int, tuple[list[Proposal], list[str]]] = {}
        self._esp_cache: dict[tuple[int, bool], tuple[list[Proposal], list[str]]] = {}
        self._sha1 = dispatcher.open("hashsha1")
        self._cookie_prf = dispatcher.open("prfsha256", self.random(32))
        self._psk_pads: dict[tuple[str, bytes], bytes] = {}
        self._secrets = [([Identity.parse(i) for i in s.ids], bytes(s.secret))
                         for s in config.secrets]

    # -- the facade ----------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, local: Addr, remote: Addr, now: float) -> None:
        self.stats["received"] += 1
        try:
            self._receive(bytes(data), local, remote, now)
        except DecodeError as exc:
            self.stats["dropped_malformed"] += 1
            log.debug("dropped datagram from %s: %s", remote, exc)
        except Exception:  # the daemon must never die of a datagram: count it, keep the trace
            self.stats["internal_errors"] += 1
            log.exception("internal error handling a datagram from %s", remote)
        self._reschedule_all_dirty()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr, Addr]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        heap = self._timers
        while heap:
            deadline, _, sa_id = heap[0]
            sa = self._by_id.get(sa_id)
            if sa is not None and sa.deadline == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> None:
        heap = self._timers
        while heap and heap[0][0] <= now:
            deadline, _, sa_id = heapq.heappop(heap)
            sa = self._by_id.get(sa_id)
            if sa is None or sa.deadline != deadline:
                continue
            sa.deadline = None
            try:
                sa.handle_timer(now)
            except Exception:
                self.stats["internal_errors"] += 1
                log.exception("internal error in a timer of IKE SA %d", sa_id)
            self._reschedule(sa)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def initiate(self, connection: str, now: float, child: str | None = None, *,
                 reuse: bool = True) -> int:
        """Start the connection (its first child, or ``child``). With ``reuse`` (charon's
        behaviour) an IKE SA of this connection that is up or coming up takes the CHILD_SA
        instead; ``reuse=False`` always negotiates a new IKE SA (load tests)."""
        conn = self.config.connections.get(connection)
        if conn is None:
            raise IkeUsageError(f"no connection named {connection!r} (configured: "
                                f"{', '.join(self.config.connections) or 'none'})")
        remote_ip = next((a for a in conn.remote_addrs if _is_ip(a)), None)
        if remote_ip is None:
            raise IkeUsageError(f"connection {connection!r} has no remote address to initiate to "
                                f"(remote_addrs = {conn.remote_addrs})")
        version = ipaddress.ip_address(remote_ip).version
        local_ip = next((a for a in conn.local_addrs if _is_ip(a)
                         and ipaddress.ip_address(a).version == version),
                        "0.0.0.0" if version == 4 else "::")
        if child is not None and child not in conn.children:
            raise IkeUsageError(f"connection {connection!r} has no child {child!r} (children: "
                                f"{', '.join(conn.children) or 'none'})")
        existing = self._reusable_sa(conn) if reuse else None
        if existing is not None:
            # like charon: a second initiate reuses the IKE SA and only adds the CHILD_SA
            if child is not None and not self._has_child(existing, child):
                existing.tasks.queue_task(ChildCreate(conn.children[child], in_ike_auth=False))
                existing.tasks.initiate(existing, now)
                self._reschedule(existing)
            return existing.id
        props, dropped = self.ike_proposals(conn)
        if not props:
            raise IkeUsageError(f"connection {connection!r}: no IKE proposal can be served "
                                f"(cannot serve: {', '.join(dropped)}; backend "
                                f"{self.dispatcher.backend or 'auto'})")
        cfg = conn.children.get(child) if child else next(iter(conn.children.values()), None)
        self.stats["initiated"] += 1
        return self._start(conn, next(self._ids), (local_ip, conn.local_port),
                           (remote_ip, conn.remote_port), [cfg] if cfg else [], 1, now).id

    def _start(self, conn: Connection, sa_id: int, local: Addr, remote: Addr,
               children: list[ChildConfig], attempt: int, now: float) -> IkeSa:
        sa = IkeSa(self, sa_id, conn, True, local, remote, now)
        sa.attempt = attempt
        sa.spi_i = self.new_ike_spi()
        self._sas[sa.spi_i] = sa
        self._by_id[sa.id] = sa
        sa.tasks.queue_task(IkeInit())
        sa.tasks.queue_task(IkeAuth())
        for i, cfg in enumerate(children):
            sa.tasks.queue_task(ChildCreate(cfg, in_ike_auth=i == 0))
        sa.tasks.initiate(sa, now)
        self._reschedule(sa)
        return sa

    def retry_keying(self, sa: IkeSa, now: float, pending: list) -> bool:
        """keyingtries (swanctl): start the negotiation again after a timeout, with a fresh
        IKE SA under the same id. False when the tries are used up."""
        tries = sa.conn.keyingtries
        if tries and sa.attempt >= tries:
            return False
        children = [t.cfg for t in pending if isinstance(t, ChildCreate) and t.cfg is not None]
        log.info("%s: %s is not responding, trying again (%d/%s)", sa.name, sa.remote[0],
                 sa.attempt + 1, tries or "forever")
        self.stats["keying_retries"] += 1
        remote = (sa.remote[0], sa.conn.remote_port)
        local = (sa.local[0], sa.conn.local_port)
        sa.close("retrying")
        self._start(sa.conn, sa.id, local, remote, children, sa.attempt + 1, now)
        return True

    def _reusable_sa(self, conn: Connection) -> IkeSa | None:
        for sa in self._by_id.values():
            if sa.initiator and sa.conn is conn and sa.state in (IkeState.CONNECTING,
                                                                 IkeState.ESTABLISHED,
                                                                 IkeState.CREATED):
                return sa
        return None

    @staticmethod
    def _has_child(sa: IkeSa, child: str) -> bool:
        if any(c.cfg.name == child for c in sa.children):
            return True
        pending = sa.tasks.active + sa.tasks.queue
        return any(isinstance(t, ChildCreate) and t.cfg is not None and t.cfg.name == child
                   for t in pending)

    def initiate_child(self, ike_id: int, child: str, now: float) -> None:
        """Another CHILD_SA on an established IKE SA (CREATE_CHILD_SA, no PFS)."""
        sa = self._sa_by_id(ike_id)
        cfg = sa.conn.children.get(child)
        if cfg is None:
            raise IkeUsageError(f"connection {sa.name!r} has no child {child!r}")
        sa.tasks.queue_task(ChildCreate(cfg, in_ike_auth=False))
        sa.tasks.initiate(sa, now)
        self._reschedule(sa)

    def rekey_ike(self, ike_id: int, now: float) -> None:
        """Replace an IKE SA by a new one (CREATE_CHILD_SA); its CHILD_SAs move over."""
        sa = self._sa_by_id(ike_id)
        if not sa.is_established:
            raise IkeUsageError(f"IKE SA {ike_id} is {sa.state.value}")
        sa.tasks.queue_task(IkeRekey())
        sa.tasks.initiate(sa, now)
        self._reschedule(sa)

    def rekeyed(self, old: IkeSa, initiator: bool, spi_i: bytes, spi_r: bytes, chosen,
                shared: bytes, ni: bytes, nr: bytes, *, move_children: bool = True) -> IkeSa:
        """Build the IKE SA that replaces ``old`` (RFC 7296 2.18) and, unless a rekey
        collision is pending, move the children to it."""
        from ocfpy.ike import keys as kdf
        from ocfpy.ike.codec.sk import SkCrypto

        new = IkeSa(self, next(self._ids), old.conn, initiator, old.local, old.remote,
                    old.last_in)
        new.spi_i, new.spi_r = spi_i, spi_r
        new.set_proposal(chosen)
        # SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), with the old SA's PRF
        with self.dispatcher.open(old.prf, old.keys.sk_d) as prf:  # type: ignore[union-attr]
            seed = prf.prf(shared + ni + nr)
        new.keys = k = kdf.ike_keys(self.dispatcher, new.prf, new.encr, new.integ, seed, ni, nr,  # type: ignore[arg-type]
                                    spi_i, spi_r)
        out, inb = ((k.sk_ei, k.sk_ai), (k.sk_er, k.sk_ar)) if initiator else \
            ((k.sk_er, k.sk_ar), (k.sk_ei, k.sk_ai))
        new.crypto = SkCrypto(self.dispatcher, new.encr, new.integ, out, inb, self.random)  # type: ignore[arg-type]
        new.local_id, new.remote_id = old.local_id, old.remote_id
        new.nat_local, new.nat_remote = old.nat_local, old.nat_remote
        new.transition("rekeyed")
        new.established_at = old.last_in
        new.rekey_at = new.rekey_deadline(new.conn.rekey_time, old.last_in)
        if move_children:
            self.adopt(old, new)
        self._sas[spi_i if initiator else spi_r] = new
        self._by_id[new.id] = new
        self.stats["ike_rekeyed"] += 1
        self.emit(IkeSaEstablished(new.id, new.name))
        self._reschedule(new)
        return new

    def adopt(self, old: IkeSa, new: IkeSa) -> None:
        """``new`` replaces ``old``: the CHILD_SAs move over (no ChildSaClosed)."""
        new.children += old.children
        old.children = []
        old.replaced_by = new.id
        old.rekey_at = None

    def reschedule(self, sa: IkeSa) -> None:
        self._reschedule(sa)

    def rekey_child(self, unique_id: int, now: float) -> None:
        """Replace a CHILD_SA with a fresh one (CREATE_CHILD_SA with REKEY_SA, PFS when the
        child's ESP proposals name a group); the old one is deleted once the new one is up.
        The daemon calls this on a dataplane soft-lifetime event."""
        for sa in self._by_id.values():
            child = sa.child_by_id(unique_id)
            if child is not None:
                if not sa.is_established:
                    raise IkeUsageError(f"IKE SA {sa.id} is {sa.state.value}")
                sa.tasks.queue_task(ChildRekey(child))
                sa.tasks.initiate(sa, now)
                self._reschedule(sa)
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

    def terminate(self, name_or_id: str | int, now: float) -> None:
        """Delete IKE SAs (by id, or all of a connection name) or one CHILD_SA ("conn/child"
        or a child's unique id as "child:<n>") with an INFORMATIONAL Delete."""
        if isinstance(name_or_id, str) and name_or_id.startswith("child:"):
            uid = int(name_or_id[6:])
            for sa in list(self._by_id.values()):
                if sa.child_by_id(uid) is not None:
                    sa.tasks.queue_task(ChildDelete(uid))
                    sa.tasks.initiate(sa, now)
                    self._reschedule(sa)
                    return
            raise IkeUsageError(f"no CHILD_SA with unique id {uid}")
        if isinstance(name_or_id, str) and "/" in name_or_id:
            conn, _, child = name_or_id.partition("/")
            hit = False
            for sa in list(self._by_id.values()):
                for c in sa.children:
                    if sa.name == conn and c.cfg.name == child:
                        sa.tasks.queue_task(ChildDelete(c.unique_id))
                        hit = True
                sa.tasks.initiate(sa, now)
                self._reschedule(sa)
            if not hit:
                raise IkeUsageError(f"no CHILD_SA named {name_or_id!r}")
            return
        sas = self._select(name_or_id)
        if not sas:
            raise IkeUsageError(f"no IKE SA matches {name_or_id!r}")
        for sa in sas:
            self._delete(sa, now)

    def shutdown(self, now: float) -> None:
        """SIGTERM: send a Delete for every established IKE SA (once, not retransmitted) and
        close everything now (strongSwan does the same at shutdown)."""
        for sa in list(self._by_id.values()):
            if sa.is_established and not sa.tasks.busy:
                sa.tasks.queue_task(IkeDelete("shutdown"))
                sa.tasks.initiate(sa, now)
            sa.close("shutdown")

    def sa_list(self) -> list[dict]:
        return [sa.as_dict() for sa in self._by_id.values() if not sa.is_closed]

    def why(self, name: str) -> str | None:
        return self._why.get(name)

    # -- used by the SAs ----------------------------------------------------------------------
    def send(self, raw: bytes, local: Addr, remote: Addr) -> None:
        self.stats["sent"] += 1
        self._out.append((raw, local, remote))

    def emit(self, event: Event) -> None:
        self._events.append(event)

    def count(self, what: str) -> None:
        self.stats[what] += 1

    def sha1(self, data: bytes) -> bytes:
        return self._sha1.digest(data)

    def next_child_id(self) -> int:
        return next(self._child_ids)

    def record_failure(self, name: str, notify: int | None, explanation: str) -> None:
        self._why[name] = explanation
        self.stats["negotiation_failures"] += 1
        self.emit(NegotiationFailed(name, notify, explanation))

    def ike_proposals(self, conn: Connection) -> tuple[list[Proposal], list[str]]:
        key = id(conn)
        hit = self._ike_cache.get(key)
        if hit is None:
            hit = servable_proposals([parse_ike(p) for p in conn.proposals], self._can_serve)
            self._ike_cache[key] = hit
        return hit

    def esp_proposals(self, cfg: ChildConfig, with_ke: bool = False
                      ) -> tuple[list[Proposal], list[str]]:
        """The child's ESP proposals. Without ``with_ke`` (IKE_AUTH) the KE groups are
        stripped: the first CHILD_SA takes its keys from IKE_AUTH (strongSwan strips them too);
        CREATE_CHILD_SA keeps them for PFS."""
        key = (id(cfg), with_ke)
        hit = self._esp_cache.get(key)
        if hit is None:
            props = [parse_esp(p) for p in cfg.esp_proposals]
            for p in props:
                if not with_ke:
                    p.transforms.pop(TransformType.KE, None)
            hit = servable_proposals(props, self._can_serve)
            self._esp_cache[key] = hit
        return hit

    def _can_serve(self, t) -> bool:
        return self.dispatcher.can_serve(t)

    def esp_driver(self, keyword: str) -> str | None:
        cands = self.dispatcher.candidates(keyword)
        if self.dispatcher.backend:
            return self.dispatcher.backend
        return cands[0].name if cands else None

    def allocate_child_spi(self) -> bytes:
        while True:
            spi = self.random(4)
            if int.from_bytes(spi, "big") >= 256 and spi not in self._child_spis:
                self._child_spis.add(spi)
                return spi

    def release_child_spi(self, spi: bytes) -> None:
        self._child_spis.discard(spi)

    def psk_pad(self, prf, psk: bytes) -> bytes:
        """prf(PSK, "Key Pad for IKEv2"): the same for every SA with this PSK and PRF, so it is
        computed once (the PSKs are in memory for the engine's life anyway)."""
        key = (prf.keyword, psk)
        pad = self._psk_pads.get(key)
        if pad is None:
            from ocfpy.ike.keys import KEY_PAD

            with self.dispatcher.open(prf, psk) as s:
                pad = self._psk_pads[key] = s.prf(KEY_PAD)
        return pad

    def find_psk(self, local: Identity | None, remote: Identity | None) -> bytes | None:
        best: tuple[int, bytes] | None = None
        for ids, secret in self._secrets:
            score = 0
            if ids:
                score = sum(1 for who in (local, remote)
                            if who is not None and any(i.matches(who) for i in ids))
                if score == 0:
                    continue
            if best is None or score > best[0]:
                best = (score, secret)
        return best[1] if best else None

    def connection_for_ids(self, sa: IkeSa, peer: Identity, wanted_local: Identity | None
                           ) -> Connection | None:
        best: tuple[int, Connection] | None = None
        for conn in self.config.connections.values():
            if not (_addr_matches(conn.local_addrs, sa.local[0])
                    and _addr_matches(conn.remote_addrs, sa.remote[0])):
                continue
            if sa.proposal is None or not accepts(sa.proposal, self.ike_proposals(conn)[0]):
                continue
            score = 0
            if conn.remote.id is not None:
                if not Identity.parse(conn.remote.id).matches(peer):
                    continue
                score += 2
            if wanted_local is not None:
                mine = (Identity.parse(conn.local.id) if conn.local.id is not None
                        else Identity.from_address(sa.local[0]))
                if not mine.matches(wanted_local):
                    continue
                score += 1
            if best is None or score > best[0]:
                best = (score, conn)
        return best[1] if best else None

    def on_established(self, sa: IkeSa) -> None:
        self.stats["ike_established"] += 1
        if sa.half_open_key is not None:
            self._half_open.pop(sa.half_open_key, None)
            sa.half_open_key = None

    def on_closed(self, sa: IkeSa, reason: str) -> None:
        our_spi = sa.spi_i if sa.initiator else sa.spi_r
        if self._sas.get(our_spi) is sa:
            del self._sas[our_spi]
        self._by_id.pop(sa.id, None)
        if sa.half_open_key is not None:
            self._half_open.pop(sa.half_open_key, None)
            sa.half_open_key = None
        if sa.established_at is not None:
            if sa.replaced_by is not None:
                reason = f"rekeyed: replaced by IKE SA {sa.replaced_by}"
            self.emit(IkeSaClosed(sa.id, sa.name, reason))

    # -- internals ----------------------------------------------------------------------------
    def _sa_by_id(self, ike_id: int) -> IkeSa:
        sa = self._by_id.get(ike_id)
        if sa is None:
            raise IkeUsageError(f"no IKE SA with id {ike_id}")
        return sa

    def _select(self, name_or_id: str | int) -> list[IkeSa]:
        if isinstance(name_or_id, int) or (isinstance(name_or_id, str) and name_or_id.isdigit()):
            sa = self._by_id.get(int(name_or_id))
            return [sa] if sa is not None else []
        return [sa for sa in self._by_id.values() if sa.name == name_or_id]

    def _delete(self, sa: IkeSa, now: float) -> None:
        if sa.is_established:
            sa.tasks.queue.clear()
            if sa.tasks.busy:
                # an exchange is in flight; the Delete follows it
                sa.tasks.queue_task(IkeDelete())
            else:
                sa.tasks.queue_task(IkeDelete())
                sa.tasks.initiate(sa, now)
        else:
            sa.fail(None, "terminated before it was established")
        self._reschedule(sa)

    def new_ike_spi(self) -> bytes:
        while True:
            spi = self.random(8)
            if spi.strip(b"\x00") and spi not in self._sas:
                return spi

    def _reschedule(self, sa: IkeSa) -> None:
        d = sa.next_deadline()
        if d != sa.deadline:
            sa.deadline = d
            if d is not None:
                heapq.heappush(self._timers, (d, next(self._seq), sa.id))

    _dirty: IkeSa | None = None

    def _reschedule_all_dirty(self) -> None:
        sa = self._dirty
        if sa is not None:
            self._dirty = None
            self._reschedule(sa)

    def _receive(self, data: bytes, local: Addr, remote: Addr, now: float) -> None:
        try:
            h = pull_header(data)
        except DecodeError as exc:
            if exc.notify == NotifyType.INVALID_MAJOR_VERSION and len(data) >= 28:
                self._answer_major_version(data, local, remote)
            raise
        try:
            msg = codec.decode(data, h)
        except DecodeError as exc:
            if exc.notify == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD and not h.is_response \
                    and h.exchange == ExchangeType.IKE_SA_INIT and h.from_initiator:
                # RFC 7296 2.5: tell the initiator which payload type we do not understand
                self.stats["unsupported_critical_payload"] += 1
                self._answer(h, [NotifyPayload(exc.notify, exc.data)], local, remote)
            raise
        if not h.is_response and h.exchange == ExchangeType.IKE_SA_INIT and h.message_id == 0 \
                and h.from_initiator and not h.spi_r.strip(b"\x00"):
            self._receive_init(msg, h, local, remote, now)
            return
        our_spi = h.spi_r if h.from_initiator else h.spi_i
        sa = self._sas.get(our_spi)
        if sa is None or sa.initiator == h.from_initiator or \
                (not sa.initiator and sa.spi_i != h.spi_i):
            self.stats["dropped_unknown_spi"] += 1
            return
        self._dirty = sa
        if h.is_response:
            if sa.initiator and h.exchange == ExchangeType.IKE_SA_INIT and \
                    sa.state is IkeState.CONNECTING:
                pass  # spi_r learned in IkeInit.process_i
            elif sa.spi_r != h.spi_r:
                self.stats["dropped_unknown_spi"] += 1
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
        key = (h.spi_i, remote[0], remote[1])
        sa = self._half_open.get(key)
        if sa is not None:  # a retransmitted (or repeated) IKE_SA_INIT
            self._dirty = sa
            sa.tasks.on_request(sa, msg, local, remote, now)
            return
        msg.check_plain()
        threshold = self.config.daemon.cookie_threshold
        if threshold and len(self._half_open) >= threshold and not self._cookie_ok(msg, remote):
            self.stats["cookies_sent"] += 1
            self._answer(h, [NotifyPayload(NotifyType.COOKIE, self._cookie(msg, remote))],
                         local, remote)
            return
        conn = self._connection_for_init(msg, local, remote)
        if conn is None:
            return
        sa = IkeSa(self, next(self._ids), conn, False, local, remote, now)
        sa.spi_i = h.spi_i
        sa.spi_r = self.new_ike_spi()
        sa.transition("recv_init")
        self._sas[sa.spi_r] = sa
        self._by_id[sa.id] = sa
        self._half_open[key] = sa
        sa.half_open_key = key
        self._dirty = sa
        sa.tasks.on_request(sa, msg, local, remote, now)

    def _connection_for_init(self, msg: Message, local: Addr, remote: Addr) -> Connection | None:
        """The first connection for these addresses whose IKE proposals match the offer."""
        cands = [c for c in self.config.connections.values()
                 if _addr_matches(c.local_addrs, local[0]) and _addr_matches(c.remote_addrs, remote[0])]
        h = Header(msg.spi_i, msg.spi_r, 0, 0x20, msg.exchange, 0, msg.message_id, 0)
        if not cands:
            why = (f"IKE_SA_INIT from {remote[0]} to {local[0]}: no connection is configured for "
                   "these addresses")
            self._refuse_init(h, why, local, remote, "(unknown)")
            return None
        sa_p: SaPayload = msg.get(PayloadType.SA)
        offered = [from_raw(p) for p in sa_p.proposals]
        for c in cands:
            if select(offered, self.ike_proposals(c)[0]) is not None:
                return c
        ours, dropped = self.ike_proposals(cands[0])
        why = explain_mismatch(offered, ours, what="IKE", backend=self.dispatcher.backend,
                               dropped=dropped)
        self._refuse_init(h, why, local, remote, cands[0].name)
        return None

    def _refuse_init(self, h: Header, why: str, local: Addr, remote: Addr, name: str) -> None:
        log.warning("%s: %s", name, why)
        self.record_failure(name, NotifyType.NO_PROPOSAL_CHOSEN, why)
        self._answer(h, [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)], local, remote)

    def _answer(self, h: Header, payloads: list, local: Addr, remote: Addr) -> None:
        """A stateless unencrypted answer to an IKE_SA_INIT request."""
        resp = Message(h.spi_i, bytes(8), h.exchange, h.message_id, True, False, payloads)
        self.send(encode(resp), local, remote)

    def _answer_major_version(self, data: bytes, local: Addr, remote: Addr) -> None:
        """RFC 7296 2.5: a request with a higher major version gets INVALID_MAJOR_VERSION,
        carrying the version we speak, in a message of that version."""
        flags = data[19]
        if flags & HeaderFlag.RESPONSE:
            return
        self.stats["invalid_major_version"] += 1
        resp = Message(data[0:8], data[8:16], data[18], int.from_bytes(data[20:24], "big"),
                       True, False, [NotifyPayload(NotifyType.INVALID_MAJOR_VERSION, b"\x20")])
        self.send(encode(resp), local, remote)

    # -- COOKIE (RFC 7296 2.6) ---------------------------------------------------------------
    def _cookie(self, msg: Message, remote: Addr) -> bytes:
        ni = msg.get(PayloadType.NONCE).data
        ip = ipaddress.ip_address(remote[0]).packed
        return COOKIE_VERSION + self._cookie_prf.prf(ni + ip + msg.spi_i)

    def _cookie_ok(self, msg: Message, remote: Addr) -> bool:
        first = msg.payloads[0] if msg.payloads else None
        if not isinstance(first, NotifyPayload) or first.notify_type != NotifyType.COOKIE:
            return False
        import hmac

        return hmac.compare_digest(first.data, self._cookie(msg, remote))


@functools.lru_cache(maxsize=256)
def _unspecified(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_unspecified
    except ValueError:
        return False


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


__all__ = ["IkeEngine", "notify_name"]
