"""One IKE SA and its CHILD_SAs: the state the tasks work on. Sans-I/O: ``now`` comes in with
every call; datagrams and events go out through the IkeContext's outbox. An SA reaches nothing
of the engine's but that context (proposals, PSKs, SPIs, the SA table, randomness).

Once established, an IKE SA keeps only what it needs later (SK_d, the SK crypto sessions, the
children): INIT messages, nonces, the DH session and SK_p* are dropped (memory per SA is a
measured target)."""

from __future__ import annotations

import functools
import ipaddress
import logging
from typing import TYPE_CHECKING

from ocfpy.crypto.catalogue import Transform, TransformType
from ocfpy.esp.spec import ChildSaSpec, Mode, SaKeys, TrafficSelector, UdpEncap
from ocfpy.ike import keys as kdf
from ocfpy.ike import succession
from ocfpy.ike.codec.payloads import NotifyPayload
from ocfpy.ike.codec.sk import SkCrypto
from ocfpy.ike.config import ChildConfig, Connection
from ocfpy.ike.constants import ExchangeType, NotifyType, notify_name
from ocfpy.ike.errors import IkeProtocolError
from ocfpy.ike.events import (
    ChildSaClosed,
    ChildSaEstablished,
    ChildSaOutbound,
    IkeSaClosed,
    IkeSaEstablished,
    SendKeepalive,
)
from ocfpy.ike.exchange import GiveUp, TaskManager
from ocfpy.ike.identity import Identity
from ocfpy.ike.proposals import WEAK, Proposal, accepts
from ocfpy.ike.pubkey import AuthState
from ocfpy.ike.state import IkeState, next_state
from ocfpy.ike.tasks.base import Status

if TYPE_CHECKING:
    from ocfpy.ike.context import IkeContext
    from ocfpy.ike.events import Addr

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4096)
def _packed(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed


@functools.lru_cache(maxsize=4096)
def _ip(ip: str):
    return ipaddress.ip_address(ip)


class ChildSa:
    __slots__ = ("unique_id", "cfg", "spi_in", "spi_out", "spec", "rekey_at", "rekeyed",
                 "peer_rekey_nonce", "replaces", "outbound_active", "redundant")

    def __init__(self, unique_id: int, cfg: ChildConfig, spi_in: bytes, spi_out: bytes,
                 spec: ChildSaSpec):
        self.rekey_at: float | None = None
        self.rekeyed = False  # our rekey of it completed; the old SA awaits its Delete
        self.peer_rekey_nonce: bytes | None = None  # lowest nonce of the peer's rekey of it
        # the unique id of the CHILD_SA this one rekeys or re-establishes (succession.py)
        self.replaces: int | None = None
        self.outbound_active = True  # the dataplane sends on it (see IkeSa.activate_outbound)
        self.redundant = False  # it lost a rekey collision (RFC 7296 2.8.1): never sent on
        self.unique_id = unique_id
        self.cfg = cfg
        self.spi_in = spi_in
        self.spi_out = spi_out
        self.spec = spec


class IkeSa:
    __slots__ = (
        "ctx", "id", "conn", "initiator", "state", "spi_i", "spi_r", "local", "remote",
        "tasks", "proposal", "encr", "integ", "prf", "ke_transform", "ke", "ni", "nr",
        "init_request", "init_response", "keys", "crypto", "local_id", "remote_id", "children",
        "nat_local", "nat_remote", "last_in", "last_out", "created", "deadline",
        "_close_after", "established_at", "half_open_key", "attempt", "replaced_by", "rekey_at",
        "source_guessed", "peer_rekey", "kdf_drivers", "auth",
    )

    def __init__(self, ctx: IkeContext, sa_id: int, conn: Connection, initiator: bool,
                 local: Addr, remote: Addr, now: float):
        self.ctx = ctx
        self.id = sa_id
        self.conn = conn
        self.initiator = initiator
        self.state = IkeState.CREATED
        self.spi_i = b""
        self.spi_r = bytes(8)
        self.local = local
        self.remote = remote
        self.tasks = TaskManager()
        self.proposal: Proposal | None = None
        self.encr: Transform | None = None
        self.integ: Transform | None = None
        self.prf: Transform = None  # type: ignore[assignment]
        props = self.ike_proposals
        self.ke_transform: Transform = props[0].first(TransformType.KE) if props else None  # type: ignore[assignment]
        self.ke = None
        self.kdf_drivers: dict[str, str] = {}  # who served the key exchange and the PRF
        self.ni = b""
        self.nr = b""
        self.init_request = b""
        self.init_response = b""
        self.keys: kdf.IkeKeys | None = None
        self.crypto: SkCrypto | None = None
        self.local_id: Identity | None = None
        self.remote_id: Identity | None = None
        self.children: list[ChildSa] = []
        self.nat_local = False
        self.nat_remote = False
        self.last_in = now
        self.last_out = now
        self.created = now
        self.deadline: float | None = None
        self._close_after: str | None = None
        self.established_at: float | None = None
        self.half_open_key: tuple | None = None
        self.attempt = 1  # keyingtries
        self.replaced_by: int | None = None  # the IKE SA that rekeyed this one
        self.rekey_at: float | None = None
        self.source_guessed = False  # initiated from an unspecified local address
        self.peer_rekey: tuple[IkeSa, bytes] | None = None  # a colliding rekey by the peer
        self.auth = AuthState()  # public-key authentication: what was learnt and chosen

    # -- plumbing used by the tasks --------------------------------------------------------
    @property
    def name(self) -> str:
        return self.conn.name

    @property
    def dispatcher(self):
        return self.ctx.dispatcher

    @property
    def our_spi(self) -> bytes:
        """The SPI we chose, by which the peer's messages find this SA (RFC 7296 2.6)."""
        return self.spi_i if self.initiator else self.spi_r

    @property
    def is_established(self) -> bool:
        return self.state is IkeState.ESTABLISHED

    @property
    def is_closed(self) -> bool:
        return self.state is IkeState.CLOSED

    @property
    def natt(self) -> bool:
        return self.nat_local or self.nat_remote

    def transition(self, event: str) -> None:
        self.state = next_state(self.state, event)

    def send(self, raw: bytes, local: Addr, remote: Addr, now: float) -> None:
        self.last_out = now
        self.ctx.out.send(raw, local, remote)

    def heard_from_peer(self, now: float) -> None:
        self.last_in = now

    # -- proposals ---------------------------------------------------------------------------
    @property
    def ike_proposals(self) -> list[Proposal]:
        return self.ctx.connections.ike_proposals(self.conn)[0]

    @property
    def dropped_ike(self) -> list[str]:
        return self.ctx.connections.ike_proposals(self.conn)[1]

    def esp_proposals(self, cfg: ChildConfig, with_ke: bool = False) -> list[Proposal]:
        return self.ctx.connections.esp_proposals(cfg, with_ke)[0]

    def accepts_ike(self, chosen: Proposal) -> bool:
        return accepts(chosen, self.ike_proposals)

    def set_proposal(self, chosen: Proposal) -> None:
        self.proposal = chosen
        self.encr = chosen.first(TransformType.ENCR)
        self.integ = chosen.first(TransformType.INTEG)
        self.prf = chosen.first(TransformType.PRF)  # type: ignore[assignment]
        self.ke_transform = chosen.first(TransformType.KE)  # type: ignore[assignment]

    # -- NAT detection (RFC 7296 2.23) ---------------------------------------------------------
    def _natd_hash(self, spi_i: bytes, spi_r: bytes, addr: Addr) -> bytes:
        ip = _packed(addr[0])
        return self.ctx.sha1.digest(spi_i + spi_r + ip + addr[1].to_bytes(2, "big"))

    def natd_payloads(self, spi_i: bytes, spi_r: bytes) -> list[NotifyPayload]:
        if self.conn.encap:
            # swanctl encap=yes: a source hash that cannot match makes the peer see a NAT
            src = self.ctx.random(20)
        else:
            src = self._natd_hash(spi_i, spi_r, self.local)
        dst = self._natd_hash(spi_i, spi_r, self.remote)
        return [NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, src),
                NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP, dst)]

    def process_natd(self, msg) -> None:
        srcs = [n.data for n in msg.notifies() if n.notify_type == NotifyType.NAT_DETECTION_SOURCE_IP]
        dst = msg.notify(NotifyType.NAT_DETECTION_DESTINATION_IP)
        if srcs and dst is not None:
            self.nat_remote = self._natd_hash(msg.spi_i, msg.spi_r, self.remote) not in srcs
            self.nat_local = self._natd_hash(msg.spi_i, msg.spi_r, self.local) != dst.data
        if self.conn.encap or (self.source_guessed and srcs):
            # with a faked or guessed source hash the peer sees a NAT and will encapsulate;
            # so must we
            self.nat_local = True
        if self.natt and self.initiator:
            # float to the NAT-T port for IKE_AUTH on (RFC 7296 2.23, RFC 3948)
            rport = 4500 if self.remote[1] == 500 else self.remote[1]
            self.local = (self.local[0], self.ctx.options.port_nat_t)
            self.remote = (self.remote[0], rport)
        if self.natt:
            log.info("%s: NAT detected (%s); using UDP encapsulation", self.name,
                     "ours" if self.nat_local else "peer's")

    # -- keys --------------------------------------------------------------------------------
    def derive_keys(self, shared: bytes) -> None:
        d = self.dispatcher
        if self.ke is not None:
            self.kdf_drivers = {"prf": d.driver_for(self.prf), "ke": self.ke.driver}
        seed = kdf.skeyseed(d, self.prf, self.ni, self.nr, shared)
        self.keys = k = kdf.ike_keys(d, self.prf, self.encr, self.integ, seed, self.ni, self.nr,  # type: ignore[arg-type]
                                     self.spi_i, self.spi_r)
        if self.initiator:
            out, inb = (k.sk_ei, k.sk_ai), (k.sk_er, k.sk_ar)
        else:
            out, inb = (k.sk_er, k.sk_ar), (k.sk_ei, k.sk_ai)
        self.crypto = SkCrypto(d, self.encr, self.integ, out, inb, self.ctx.random)  # type: ignore[arg-type]

    # -- identities --------------------------------------------------------------------------
    def configured_local_id(self) -> Identity:
        if self.conn.local.id is not None:
            return Identity.parse(self.conn.local.id)
        return Identity.from_address(self.local[0])

    def configured_remote_id(self) -> Identity | None:
        return Identity.parse(self.conn.remote.id) if self.conn.remote.id is not None else None

    def choose_connection_by_ids(self, peer: Identity, wanted_local: Identity | None) -> None:
        conn = self.ctx.connections.for_ids(self.local, self.remote, self.proposal, peer,
                                            wanted_local)
        if conn is None:
            raise IkeProtocolError(
                NotifyType.AUTHENTICATION_FAILED,
                f"no connection accepts peer identity {peer}"
                + (f" asking for our identity {wanted_local}" if wanted_local else "")
                + " from " + self.remote[0])
        old_name, self.conn = self.name, conn
        self.ctx.table.renamed(self, old_name)

    def rekey_deadline(self, lifetime: float, now: float) -> float | None:
        """When to rekey something made now: ``lifetime`` minus up to 10% jitter, like
        charon's rand_time, so both ends rarely start at once. Only the IKE SA's initiator
        rekeys on its own; the responder answers the peer's rekeys, and simultaneous ones are
        settled as RFC 7296 2.8.1 says (IkeRekey, ChildRekey). 0 means never."""
        if not lifetime or not self.initiator:
            return None
        jitter = int.from_bytes(self.ctx.random(2), "big") / 65535 * 0.1 * lifetime
        return now + lifetime - jitter

    # -- outcomes ------------------------------------------------------------------------------
    def established(self) -> None:
        self.transition("authenticated")
        self.established_at = self.last_in
        self.rekey_at = self.rekey_deadline(self.conn.rekey_time, self.last_in)
        self.ctx.out.count("ike_established")
        self.ctx.table.established(self)
        # what IKE_AUTH needed is no longer needed (memory per SA is a target)
        self.init_request = self.init_response = b""
        if self.ke is not None:
            self.ke.close()
            self.ke = None
        self.ctx.out.emit(IkeSaEstablished(self.id, self.name))

    def fail(self, notify: int | None, explanation: str) -> Status:
        """The IKE SA cannot be set up or kept: tell, and close."""
        if self.is_closed:
            return Status.FAILED
        log.warning("%s: %s", self.name, explanation)
        if self.established_at is None:
            self.ctx.out.count("ike_failed")
        self.ctx.out.record_failure(self.name, notify, explanation)
        self.close(explanation if notify is None else f"{notify_name(notify)}: {explanation}")
        return Status.FAILED

    def child_failed(self, name: str, notify: int | None, explanation: str) -> Status:
        """A CHILD_SA failed; the IKE SA stays (RFC 7296 2.21.3). The caller has released what
        the CHILD_SA held (its SPI, its KE session); the task reports FAILED."""
        text = f"CHILD_SA {name}: {explanation}"
        log.warning("%s: %s", self.name, text)
        self.ctx.out.record_failure(self.name, notify, text)
        return Status.FAILED

    def responder_error(self, exchange: int, error: IkeProtocolError) -> None:
        """We answered a request with an error notify; IKE_SA_INIT and IKE_AUTH errors end
        the SA (the peer sees the notify, we explain ours in why())."""
        if error.notify == NotifyType.INVALID_KE_PAYLOAD:
            # an ordinary step of negotiation, not a failure: the initiator retries
            self.ctx.out.count("invalid_ke_sent")
            if exchange == ExchangeType.IKE_SA_INIT:
                self.close(error.reason)
        elif exchange in (ExchangeType.IKE_SA_INIT, ExchangeType.IKE_AUTH) and \
                not self.is_established:
            self.fail(error.notify, error.reason)

    def no_answer(self, tries: int) -> None:
        """The peer did not answer a request: the SA is dead (the engine decided not to
        retry the negotiation, see IkeEngine._gave_up)."""
        what = "dead peer detection" if self.is_established else "negotiation"
        rt = self.conn.retransmit
        self.fail(None, f"{self.remote[0]} did not answer ({what}): no response after "
                  f"{tries} retransmits ({rt.timeout:g}s x {rt.base:g}^n)")

    def start_deleting(self) -> None:
        if self.state is IkeState.ESTABLISHED:
            self.transition("delete")

    def close_after_response(self, reason: str) -> None:
        self._close_after = reason

    def after_response(self) -> None:
        if self._close_after is not None and not self.is_closed:
            self.close(self._close_after)

    def close(self, reason: str) -> None:
        if self.is_closed:
            return
        for child in list(self.children):
            self.remove_child(child.unique_id, reason, self._hand_over(child))
        self.tasks.abort(self)
        self.transition("close")
        if self.crypto is not None:
            self.crypto.close()
        if self.ke is not None:
            self.ke.close()
            self.ke = None
        self.ctx.table.remove(self)
        if self.established_at is not None:
            if self.replaced_by is not None:
                reason = f"rekeyed: replaced by IKE SA {self.replaced_by}"
            self.ctx.out.emit(IkeSaClosed(self.id, self.name, reason))

    # -- CHILD_SAs -----------------------------------------------------------------------------
    def add_child(self, cfg: ChildConfig, chosen: Proposal, spi_in: bytes, spi_out: bytes,
                  ts_i: list[TrafficSelector], ts_r: list[TrafficSelector], ni: bytes, nr: bytes,
                  transport: bool, exchange_initiator: bool, shared: bytes = b"",
                  replaces: ChildSa | None = None) -> ChildSa:
        """``exchange_initiator``: we initiated the exchange that created this CHILD_SA. KEYMAT
        order (RFC 7296 2.17) and TSi/TSr follow the exchange's roles, not the IKE SA's.

        ``replaces``: the CHILD_SA this one rekeys. Then the new SA is installed inbound only
        (make-before-break): it is sent on once the peer can decrypt it, which the rekey
        task (as initiator) or the peer's Delete of the old SA (as responder) tells
        (activate_outbound; RFC 7296 2.8 leaves this order to the implementation)."""
        encr = chosen.first(TransformType.ENCR)
        integ = chosen.first(TransformType.INTEG)
        esn = chosen.first(TransformType.ESN)
        km = kdf.child_keys(self.dispatcher, self.prf, self.keys.sk_d, ni, nr, encr, integ,  # type: ignore[arg-type, union-attr]
                            shared)
        i2r = (km.encr_i2r, km.integ_i2r)
        r2i = (km.encr_r2i, km.integ_r2i)
        if exchange_initiator:
            inbound = SaKeys(int.from_bytes(spi_in, "big"), *r2i)
            outbound = SaKeys(int.from_bytes(spi_out, "big"), *i2r)
            local_ts, remote_ts = ts_i, ts_r
        else:
            inbound = SaKeys(int.from_bytes(spi_in, "big"), *i2r)
            outbound = SaKeys(int.from_bytes(spi_out, "big"), *r2i)
            local_ts, remote_ts = ts_r, ts_i
        uid = self.ctx.next_child_id()
        spec = ChildSaSpec(
            name=f"{self.conn.name}/{cfg.name}", unique_id=uid,
            local=_ip(self.local[0]), remote=_ip(self.remote[0]),
            inbound=inbound, outbound=outbound, encryption=encr.keyword,  # type: ignore[union-attr]
            integrity=integ.keyword if integ is not None else None,
            esn=bool(esn is not None and esn.transform_id == 1),
            mode=Mode.TRANSPORT if transport else Mode.TUNNEL,
            local_ts=list(local_ts), remote_ts=list(remote_ts),
            encap=UdpEncap(self.local[1], self.remote[1]) if self.natt else None,
            replay_window=cfg.replay_window, lifetime_bytes=cfg.life_bytes,
            lifetime_packets=cfg.life_packets, crypto_backend=self.dispatcher.backend,
        )
        child = ChildSa(uid, cfg, spi_in, spi_out, spec)
        child.rekey_at = self.rekey_deadline(cfg.rekey_time, self.last_in)
        reestablishing = False
        if replaces is None:
            # not a rekey: a make-before-break re-establishment of a CHILD_SA that another
            # IKE SA of this peer still carries? (succession.py)
            replaces = succession.predecessor(self.ctx.table, self, cfg.name, spec.local_ts,
                                              spec.remote_ts)
            reestablishing = replaces is not None
            if reestablishing:
                self.ctx.out.count("children_reestablished")
                log.info("%s[%d]: CHILD_SA %s #%d re-establishes #%d (same peer and "
                         "selectors)%s", self.name, self.id, spec.name, uid,
                         replaces.unique_id,  # type: ignore[union-attr]
                         "" if exchange_initiator else ": sending on it once the peer "
                         "is seen on it or the old one is deleted")
        if replaces is not None:
            child.replaces = replaces.unique_id
            # A rekey's new SA waits for its task (initiator) or the Delete (responder). A
            # re-establishment's exchange initiator sends at once: the responder installed
            # the SA before its answer left; the responder waits as a rekey's does (RFC 7296
            # 2.8; succession.py).
            child.outbound_active = reestablishing and exchange_initiator
        self.children.append(child)
        self.ctx.out.emit(ChildSaEstablished(self.id, spec, child.outbound_active,
                                             child.replaces))
        return child

    def activate_outbound(self, child: ChildSa) -> None:
        """Send on ``child`` from now on: the peer has its inbound SA (one dataplane step)."""
        if child.outbound_active or child.redundant:
            return
        child.outbound_active = True
        self.ctx.out.count("child_outbound_switches")
        self.ctx.out.emit(ChildSaOutbound(self.id, child.unique_id))

    def inbound_seen(self, child: ChildSa) -> bool:
        """A packet authenticated under ``child``'s inbound SA arrived (its ICV passed, the
        dataplane says): the peer has this SA, so a responder whose outbound waited for that
        switches now (RFC 7296 2.8: the responder of a rekey or re-establishment may send
        on the new SA once it has received valid traffic on it). True if it switched."""
        if child.outbound_active or child.redundant or child.replaces is None:
            return False
        self.activate_outbound(child)
        self.ctx.out.count("child_switches_on_inbound")
        return True

    def retire_child(self, child: ChildSa, reason: str) -> None:
        """``child`` is deleted (by us or by the peer). If a rekey replaced it, the
        replacement now carries the outbound traffic (a responder's switch: the peer's Delete
        of the old SA tells that the peer has the new one, RFC 7296 2.8), and the old inbound
        SA keeps accepting for the grace period (packets still in flight)."""
        successors = [(self, c) for c in self.children if c.replaces == child.unique_id
                      and not c.redundant]
        successors += succession.successors(self.ctx.table, child.unique_id, exclude=self)
        if successors and not any(c.outbound_active for _, c in successors):
            heir_sa, heir = successors[-1]
            heir_sa.activate_outbound(heir)
        # part of a rekey or re-establishment (replaced, or a collision's redundant SA, which
        # a peer may have sent on): its inbound SA gets the grace period
        rekeying = child.rekeyed or child.replaces is not None or bool(successors) or any(
            c.replaces == child.unique_id for c in self.children)
        self.remove_child(child.unique_id, reason,
                          self.ctx.options.rekey_grace if rekeying else 0.0)

    def _hand_over(self, child: ChildSa) -> float:
        """``child`` goes with this IKE SA. If another IKE SA re-established it
        (make-before-break, succession.py), its successor carries the outbound traffic from
        now on (a responder's switch, if no packet made it earlier) and ``child``'s inbound
        SA keeps accepting for the grace period, as after a rekey. Returns that grace."""
        heirs = succession.successors(self.ctx.table, child.unique_id, exclude=self)
        if not heirs:
            return 0.0
        if not any(c.outbound_active for _, c in heirs):
            heir_sa, heir = heirs[-1]
            heir_sa.activate_outbound(heir)
        return self.ctx.options.rekey_grace

    def child_by_id(self, unique_id: int) -> ChildSa | None:
        return next((c for c in self.children if c.unique_id == unique_id), None)

    def child_by_outbound_spi(self, spi: bytes) -> ChildSa | None:
        return next((c for c in self.children if c.spi_out == spi), None)

    def remove_child(self, unique_id: int, reason: str, grace: float = 0.0) -> None:
        child = self.child_by_id(unique_id)
        if child is None:
            return
        self.children.remove(child)
        self.ctx.spis.release_child(child.spi_in)
        self.ctx.out.emit(ChildSaClosed(self.id, unique_id, reason, grace))

    # -- timers --------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        if self.is_closed:
            return None
        cands: list[float] = []
        out = self.tasks.out
        if out is not None:
            cands.append(out.deadline)
        if self.state is IkeState.CONNECTING and not self.initiator:
            cands.append(self.created + self.ctx.options.half_open_timeout)
        if self.state is IkeState.ESTABLISHED:
            if self.conn.dpd_delay and not self.tasks.busy:
                cands.append(self.last_in + self.conn.dpd_delay)
            ka = self.ctx.options.keepalive_interval
            if self.nat_local and ka:
                cands.append(self.last_out + ka)
            if self.rekey_at is not None:
                cands.append(self.rekey_at)
            cands += [c.rekey_at for c in self.children if c.rekey_at is not None]
            if self.tasks.queue and not self.tasks.busy:
                cands.append(self.last_in)  # work handed over by an IKE rekey (rekey.adopt)
        return min(cands) if cands else None

    def handle_timer(self, now: float) -> GiveUp | None:
        """Retransmit, expire, probe, rekey, keep NAT mappings alive. A request that ran out
        of retransmits is not acted on here: it is returned, and the engine decides (retry the
        negotiation under keyingtries, or let the SA die)."""
        gave_up = self.tasks.on_timer(self, now)
        if gave_up is not None:
            return gave_up
        if self.is_closed:
            return None
        if self.state is IkeState.CONNECTING and not self.initiator and \
                now >= self.created + self.ctx.options.half_open_timeout:
            self.ctx.out.count("half_open_timeouts")
            self.fail(None, f"half-open IKE SA from {self.remote[0]} timed out: no IKE_AUTH "
                      "followed IKE_SA_INIT")
            return None
        if self.state is IkeState.ESTABLISHED:
            if self.conn.dpd_delay and not self.tasks.busy and \
                    now >= self.last_in + self.conn.dpd_delay:
                from ocfpy.ike.tasks.delete import Dpd

                self.tasks.queue_task(Dpd())
                self.tasks.initiate(self, now)
            self._rekey_due(now)
            ka = self.ctx.options.keepalive_interval
            if self.nat_local and ka and now >= self.last_out + ka:
                self.last_out = now
                self.ctx.out.emit(SendKeepalive(self.local, self.remote))
        return None

    def _rekey_due(self, now: float) -> None:
        from ocfpy.ike.tasks.child_rekey import ChildRekey
        from ocfpy.ike.tasks.ike_rekey import IkeRekey

        if self.rekey_at is not None and now >= self.rekey_at and self.replaced_by is None:
            self.rekey_at = None
            self.tasks.queue_task(IkeRekey())
        for c in self.children:
            if c.rekey_at is not None and now >= c.rekey_at:
                c.rekey_at = None
                self.tasks.queue_task(ChildRekey(c))
        self.tasks.initiate(self, now)

    # -- reporting -----------------------------------------------------------------------------
    def as_dict(self) -> dict:
        drivers = dict(self.kdf_drivers)
        if self.crypto is not None:
            drivers.update(self.crypto.drivers())
        return {
            "name": self.name, "id": self.id, "state": self.state.value,
            "initiator": self.initiator,
            "local": {"addr": self.local[0], "port": self.local[1],
                      "id": str(self.local_id) if self.local_id else None},
            "remote": {"addr": self.remote[0], "port": self.remote[1],
                       "id": str(self.remote_id) if self.remote_id else None},
            "spi_i": self.spi_i.hex(), "spi_r": self.spi_r.hex(),
            "nat": {"local": self.nat_local, "remote": self.nat_remote},
            "algorithms": {
                "encr": self.encr.keyword if self.encr else None,
                "integ": self.integ.keyword if self.integ else None,
                "prf": self.prf.keyword if self.prf else None,
                "ke": self.ke_transform.keyword if self.ke_transform else None,
            },
            # issue 15: a transform RFC 8247 rates weak that the peer forced is marked here
            # too, not only in the log line of the negotiation (proposals.warn_if_weak)
            "weak": _weak(self.encr, self.integ, self.prf, self.ke_transform),
            "drivers": drivers,
            "auth": self.auth.as_dict(),
            "children": [self._child_dict(c) for c in self.children],
        }

    @staticmethod
    def _child_dict(c: ChildSa) -> dict:
        s = c.spec
        return {
            "name": c.cfg.name, "unique_id": c.unique_id,
            "spi_in": f"{s.inbound.spi:08x}", "spi_out": f"{s.outbound.spi:08x}",
            "encr": s.encryption, "integ": s.integrity, "esn": s.esn, "mode": s.mode.value,
            "weak": _weak(s.encryption, s.integrity),  # RFC 8221 section 6 (e.g. sha1)
            "local_ts": [str(t) for t in s.local_ts], "remote_ts": [str(t) for t in s.remote_ts],
            "encap": s.encap is not None,
            # no "driver": the dataplane that installed the CHILD_SA knows which serves it,
            # and the daemon adds that (IkeDaemon._cmd_list)
        }


def _weak(*transforms: Transform | str | None) -> list[str]:
    """The negotiated transforms RFC 8247 / RFC 8221 rate weak (proposals.WEAK), in order."""
    words = [t if isinstance(t, str) else t.keyword for t in transforms if t]
    return [w for w in words if w in WEAK]

