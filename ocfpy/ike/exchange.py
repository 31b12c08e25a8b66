"""Message IDs, the request window (size 1 each way), retransmission with exponential back-off
and give-up, answering retransmitted requests from a cache, and running tasks per exchange
(strongSwan's task_manager_v2). One per IKE SA.

IKE fragmentation (RFC 7383) happens here too: a message protected by SK that is too big for
the path goes out as SKF fragments (kept as the unit of retransmission, 2.6.1), and fragments
coming in are authenticated one by one and reassembled within bounds (ocfpy.ike.fragments)
before the message is handed to the tasks like any decrypted one."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ocfpy.ike import fragments
from ocfpy.ike.codec import rules
from ocfpy.ike.codec.buffer import Buffer, Writer
from ocfpy.ike.codec.header import pull_header
from ocfpy.ike.codec.message import Message, _xname, encode
from ocfpy.ike.codec.payloads import NotifyPayload, pull_payloads, push_payloads
from ocfpy.ike.codec.sk import IntegrityCheckFailed, Unauthenticated
from ocfpy.ike.constants import ExchangeType, NotifyType, PayloadType
from ocfpy.ike.errors import DecodeError, IkeProtocolError
from ocfpy.ike.state import REQUESTS_ALLOWED
from ocfpy.ike.tasks.base import Status, Task
from ocfpy.ike.tasks.child_create import ChildCreate
from ocfpy.ike.tasks.delete import Informational
from ocfpy.ike.tasks.ike_auth import IkeAuth
from ocfpy.ike.tasks.ike_init import IkeInit
from ocfpy.ike.tasks.ike_rekey import CreateChildSa

if TYPE_CHECKING:
    from ocfpy.ike.events import Addr
    from ocfpy.ike.sa import IkeSa

log = logging.getLogger(__name__)


def responder_tasks(exchange: int) -> list[Task] | None:
    if exchange == ExchangeType.IKE_SA_INIT:
        return [IkeInit()]
    if exchange == ExchangeType.IKE_AUTH:
        return [IkeAuth(), ChildCreate()]
    if exchange == ExchangeType.CREATE_CHILD_SA:
        return [CreateChildSa()]
    if exchange == ExchangeType.INFORMATIONAL:
        return [Informational()]
    return None


@dataclass(frozen=True, slots=True)
class GiveUp:
    """A request went unanswered after every retransmit. ``pending``: the tasks it carried
    and those queued behind it (a new attempt takes their CHILD_SAs along)."""

    tries: int
    pending: list[Task]


def drop_unauthenticated(sa: IkeSa, exc: Exception) -> None:
    """Count a message that failed before or at its integrity check, by reason, and log it
    at debug only: a spoofer must not be able to fill the log either."""
    why = exc.why if isinstance(exc, Unauthenticated) else "integrity"
    out = sa.ctx.out
    out.count("dropped_unauthenticated")
    out.count("dropped_integrity" if why == "integrity" else f"dropped_unauth_{why}")
    log.debug("%s: unauthenticated message dropped: %s", sa.name, exc)


class Outstanding:
    __slots__ = ("mid", "raws", "local", "remote", "tries", "deadline", "exchange")

    def __init__(self, mid: int, raws: list[bytes], local: Addr, remote: Addr, deadline: float,
                 exchange: int):
        self.mid = mid
        self.raws = raws  # one message, or all its fragments (retransmitted together)
        self.local = local
        self.remote = remote
        self.tries = 0
        self.deadline = deadline
        self.exchange = exchange


class TaskManager:
    __slots__ = ("my_mid", "peer_mid", "queue", "active", "out", "last_req_hash", "last_resp",
                 "peer_fragments", "_reassembly")

    def __init__(self) -> None:
        self.my_mid = 0
        self.peer_mid = 0
        self.queue: list[Task] = []
        self.active: list[Task] = []
        self.out: Outstanding | None = None
        self.last_req_hash: int | None = None
        self.last_resp: list[bytes] | None = None
        self.peer_fragments = False  # both announced IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383)
        self._reassembly: dict[bool, fragments.Reassembler] = {}  # by "is a response"

    @property
    def busy(self) -> bool:
        return bool(self.active)

    def queue_task(self, task: Task) -> None:
        self.queue.append(task)

    def abort(self, sa: IkeSa) -> None:
        """The SA is closing: no task will complete; each gives back what it holds."""
        tasks, self.active, self.queue = self.active + self.queue, [], []
        for t in tasks:
            t.abort(sa)

    # -- as initiator of exchanges --------------------------------------------------------
    def initiate(self, sa: IkeSa, now: float) -> None:
        if self.active or not self.queue or sa.is_closed:
            return
        exchange = self.queue[0].exchange
        n = 0
        while n < len(self.queue) and self.queue[n].exchange == exchange:
            n += 1
        if exchange == ExchangeType.CREATE_CHILD_SA:
            # one SA per CREATE_CHILD_SA exchange (RFC 7296 1.3); IKE_AUTH shares its message
            # with the first CHILD_SA and INFORMATIONAL carries several Deletes (1.4.1)
            n = 1
        self.active, self.queue = self.queue[:n], self.queue[n:]
        self._send_request(sa, now)

    def _send_request(self, sa: IkeSa, now: float) -> None:
        exchange = self.active[0].exchange
        msg = Message(sa.spi_i, sa.spi_r, exchange, self.my_mid, False, sa.initiator)
        try:
            for t in self.active:
                t.build_i(sa, msg)
        except IkeProtocolError as exc:
            sa.fail(exc.notify, exc.reason)  # closing the SA aborts the tasks built so far
            self.active = []
            return
        if exchange == ExchangeType.IKE_SA_INIT:
            raws = [encode(msg)]
            sa.init_request = raws[0]
            sa.transition("send_init")
        else:
            raws = self._encode_sk(sa, msg)
        rt = sa.conn.retransmit
        self.out = Outstanding(self.my_mid, raws, sa.local, sa.remote, now + rt.timeout, exchange)
        for raw in raws:
            sa.send(raw, sa.local, sa.remote, now)

    def on_response(self, sa: IkeSa, msg: Message, now: float) -> None:
        out = self.out
        if out is None or msg.message_id != out.mid or msg.exchange != out.exchange:
            sa.ctx.out.count("dropped_unexpected_response")
            return
        if _is_fragment(msg):
            if not self._reassemble(sa, msg, True, now):
                return  # more fragments to come, or dropped (counted)
        try:
            if msg.exchange == ExchangeType.IKE_SA_INIT:
                msg.check_plain()
            elif sa.crypto is None:
                raise Unauthenticated("encrypted response before keys exist", "no_keys")
            elif not msg.encrypted:  # a reassembled message is already open
                msg.decrypt(sa.crypto)
        except (IntegrityCheckFailed, Unauthenticated) as exc:
            drop_unauthenticated(sa, exc)
            return
        except DecodeError as exc:
            log.info("%s: malformed response dropped: %s", sa.name, exc)
            sa.ctx.out.count("dropped_malformed")
            return
        if msg.exchange == ExchangeType.IKE_SA_INIT:
            sa.init_response = msg.raw
        last_in = sa.last_in
        sa.heard_from_peer(now)  # before the tasks: what they make is timed from it
        need_more = False
        for t in self.active:
            st = t.process_i(sa, msg)
            if sa.is_closed:
                # the IKE SA failed or was deleted: the exchange's other tasks are moot (closing
                # aborted them). A FAILED CHILD_SA task leaves the IKE SA and its peers be.
                return
            if st is Status.WAIT:
                # an unprotected IKE_SA_INIT error, noted: the request stays outstanding and
                # nothing else changes (RFC 7296 2.21.1)
                sa.init_response = b""
                sa.last_in = last_in
                return
            if st is Status.NEED_MORE:
                need_more = True
        self.out = None
        if need_more:
            self._send_request(sa, now)  # same message ID (COOKIE / INVALID_KE retry)
            return
        self.active = []
        self.my_mid += 1
        self.initiate(sa, now)

    def on_timer(self, sa: IkeSa, now: float) -> GiveUp | None:
        """Retransmit the outstanding request when due (RFC 7296 2.1); once the tries are
        used up, drop it and say so: what follows (retry, or the SA's end) is not this
        class's decision."""
        out = self.out
        if out is None or now < out.deadline:
            return None
        rt = sa.conn.retransmit
        if out.tries < rt.tries:
            out.tries += 1
            out.deadline = now + rt.timeout * rt.base ** out.tries
            sa.ctx.out.count("retransmits")
            log.debug("%s: retransmit %d of message %d", sa.name, out.tries, out.mid)
            for raw in out.raws:  # all fragments again (RFC 7383 2.6.1)
                sa.send(raw, out.local, out.remote, now)
            return None
        for t in self.active:
            if isinstance(t, IkeInit) and t.act_on_noted(sa, out.tries):
                # RFC 7296 2.21.1: an unprotected IKE_SA_INIT error stands only once the
                # retransmissions are spent without a valid response (issue 13 finding 4):
                # until then a genuine answer to any retransmission wins over a forged error
                return None
        pending = self.active + self.queue
        for t in pending:
            t.abort(sa)
        self.out = None
        self.active = []
        return GiveUp(out.tries, pending)

    # -- as responder ---------------------------------------------------------------------
    def on_request(self, sa: IkeSa, msg: Message, local: Addr, remote: Addr, now: float) -> None:
        """A request from the peer. Until it has passed its integrity check (RFC 7296 2.21.2,
        3.14) it may change nothing: not the message IDs, the cached answer, the liveness
        clock, the peer's address (2.23: only authenticated messages move it), nor the SA's
        state; it gets no answer. Only the answer cache is consulted first: a byte-identical
        retransmission of the last request gets the identical response again (2.1)."""
        if msg.exchange == ExchangeType.IKE_SA_INIT and \
                (sa.initiator or self.peer_mid != 0 or msg.message_id != 0):
            # IKE_SA_INIT is the first exchange or nothing (finding 2): on an SA that is
            # past it, a request carrying its SPIs is a forgery or a stale duplicate. The
            # engine answers genuine retransmissions of a half-open SA's request itself.
            sa.ctx.out.count("dropped_init_on_sa")
            return
        h = hash(msg.raw)
        fragment = _is_fragment(msg)
        if msg.message_id == self.peer_mid - 1 and self.last_resp is not None:
            if fragment:
                # RFC 7383 2.6.1: a retransmitted fragmented request is answered once, on its
                # first fragment, and only if that fragment is authentic
                if self._first_fragment_authentic(sa, msg):
                    sa.ctx.out.count("retransmits_answered")
                    for raw in self.last_resp:
                        sa.send(raw, local, remote, now)
                return
            if h == self.last_req_hash:
                sa.ctx.out.count("retransmits_answered")
                for raw in self.last_resp:
                    sa.send(raw, local, remote, now)
            else:
                sa.ctx.out.count("dropped_invalid_mid")
            return
        if msg.message_id != self.peer_mid:
            sa.ctx.out.count("dropped_invalid_mid")
            return
        if fragment and (sa.crypto is None or not self._reassemble(sa, msg, False, now)):
            return  # more fragments to come, or dropped (counted)
        encrypted = msg.exchange != ExchangeType.IKE_SA_INIT
        resp = Message(sa.spi_i, sa.spi_r, msg.exchange, msg.message_id, True, sa.initiator)
        error: IkeProtocolError | None = None
        try:
            if encrypted:
                if sa.crypto is None:
                    raise Unauthenticated(f"{_xname(msg.exchange)} before IKE_SA_INIT "
                                          "completed", "no_keys")
                if not msg.encrypted:  # a reassembled message is already open
                    msg.decrypt(sa.crypto)
            else:
                msg.check_plain()
        except (IntegrityCheckFailed, Unauthenticated) as exc:
            drop_unauthenticated(sa, exc)
            return
        except DecodeError as exc:
            sa.ctx.out.count("dropped_malformed")
            if not encrypted:
                return  # nothing authenticated it: answering would help a spoofer
            error = exc  # it passed the ICV: the authenticated peer sent garbage inside
        if not encrypted:
            sa.init_request = msg.raw
        else:
            sa.heard_from_peer(now)
            sa.local, sa.remote = local, remote  # RFC 7296 2.23: follow the authenticated peer
        tasks = responder_tasks(msg.exchange) if error is None else []
        if error is None and (msg.exchange not in REQUESTS_ALLOWED[sa.state] or
                              (sa.initiator and msg.exchange == ExchangeType.IKE_AUTH)):
            sa.ctx.out.count("dropped_wrong_state")
            error = IkeProtocolError(NotifyType.INVALID_SYNTAX,
                                     f"{_xname(msg.exchange)} request in state "
                                     f"{sa.state.value}")
        if tasks is None:
            error = IkeProtocolError(NotifyType.INVALID_SYNTAX, f"exchange {msg.exchange} unknown")
        if error is None:
            try:
                for t in tasks:  # type: ignore[union-attr]
                    t.process_r(sa, msg)
                for t in tasks:  # type: ignore[union-attr]
                    t.build_r(sa, resp)
            except IkeProtocolError as exc:
                error = exc
            except Exception:
                # our bug, met by an authenticated request: answer it (an exchange must
                # never stall, finding 7) and give back what the tasks took, so the SA
                # stays as it was before the request
                sa.ctx.out.count("internal_errors")
                log.exception("%s: internal error handling a %s request", sa.name,
                              _xname(msg.exchange))
                error = IkeProtocolError(NotifyType.INVALID_SYNTAX, "internal error")
        if error is not None:
            for t in tasks or []:
                t.abort(sa)  # refused: nothing a task took for this request stays held
            resp.payloads = [NotifyPayload(error.notify, error.data)]
            if not encrypted:  # RFC 7296 2.6 / 1.2: HDR(SPIi, 0) for a refused IKE_SA_INIT
                resp.spi_r = bytes(8)
        if encrypted:
            raws = self._encode_sk(sa, resp)
        else:
            raws = [encode(resp)]
            sa.init_response = raws[0]
        self.last_req_hash = h
        self.last_resp = raws
        self.peer_mid += 1
        for raw in raws:
            sa.send(raw, local, remote, now)
        if error is not None:
            sa.responder_error(msg.exchange, error)
        sa.after_response()

    # -- fragmentation (RFC 7383) -----------------------------------------------------------
    def _encode_sk(self, sa: IkeSa, msg: Message) -> list[bytes]:
        """The message protected by SK, or its SKF fragments when it is too big for the path
        and both sides announced support (2.3); never IKE_SA_INIT, which is not encrypted."""
        raw = encode(msg, sa.crypto)
        opts = sa.ctx.options
        ipv6 = ":" in sa.remote[0]
        nat_t = sa.local[1] != 500 or sa.remote[1] != 500  # the non-ESP marker on 4500
        if not fragments.should_fragment(sa.conn.fragmentation, self.peer_fragments, len(raw),
                                         opts.fragment_size, ipv6=ipv6, nat_t=nat_t):
            return [raw]
        w = Writer()
        first_inner = push_payloads(w, msg.payloads)
        capacity = fragments.chunk_capacity(sa.crypto, opts.fragment_size, ipv6=ipv6,
                                            nat_t=nat_t)
        raws = fragments.split(pull_header(raw), first_inner, w.getvalue(), sa.crypto,  # type: ignore[arg-type]
                               capacity)
        sa.ctx.out.count("fragmented_messages")
        log.debug("%s: %s of %d bytes sent as %d fragments", sa.name, _xname(msg.exchange),
                  len(raw), len(raws))
        return raws

    def _reassembler(self, sa: IkeSa, response: bool) -> fragments.Reassembler:
        r = self._reassembly.get(response)
        if r is None:
            o = sa.ctx.options
            r = self._reassembly[response] = fragments.Reassembler(
                max_fragments=o.fragment_max_count, max_bytes=o.fragment_max_bytes,
                timeout=o.fragment_timeout)
        return r

    def _reassemble(self, sa: IkeSa, msg: Message, response: bool, now: float) -> bool:
        """Offer a fragment; True once ``msg`` holds the whole reassembled message (its
        payloads in place, rules checked), False while fragments are missing or when this one
        was dropped (unsupported, forged, over a bound: counted in the SA stats)."""
        out = sa.ctx.out
        if not self.peer_fragments or sa.crypto is None:
            out.count("dropped_fragments")  # 2.3: fragments only after both announced them
            return False
        try:
            skf = fragments.parse_fragment_message(msg.raw, pull_header(msg.raw))
        except DecodeError:
            out.count("dropped_malformed")
            return False
        r = self._reassembler(sa, response)
        before = dict(r.counters)
        done = r.add(msg.raw, msg.message_id, skf, fragments.open_with(sa.crypto), now)
        for key, value in r.counters.items():
            if value != before[key]:
                out.count(f"fragments_{key}")
        if done is None:
            return False
        try:
            # the daemon's limits, as Message.decrypt applies them to an unfragmented one
            msg.payloads = pull_payloads(Buffer(done.inner), done.first_inner, msg.limits)
            msg.encrypted = True
            rules.check(msg.exchange, msg.is_response, msg.payloads)
        except DecodeError as exc:
            log.info("%s: reassembled message dropped: %s", sa.name, exc)
            out.count("dropped_malformed")
            return False
        return True

    def _first_fragment_authentic(self, sa: IkeSa, msg: Message) -> bool:
        try:
            skf = fragments.parse_fragment_message(msg.raw, pull_header(msg.raw))
            if skf.number != 1 or sa.crypto is None:
                return False
            fragments.open_with(sa.crypto)(msg.raw, skf)
            return True
        except Exception:  # noqa: BLE001 - malformed or forged: not a reason to answer
            return False


def _is_fragment(msg: Message) -> bool:
    return len(msg.payloads) == 1 and msg.payloads[0].TYPE == PayloadType.SKF
