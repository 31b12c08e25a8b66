"""Sessions: what consumers hold. One transform, one key, served by whichever driver the
dispatcher chose, and moved to another driver if that one fails, invisibly to the consumer.

Hot paths (seal/open) stay short on purpose: the per-operation overhead over a direct
`cryptography` call is a measured target (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, NamedTuple

from .catalogue import Primitive, Transform
from .driver import Context
from .errors import AuthenticationError, DriverFailure, InvalidInput

if TYPE_CHECKING:
    from .dispatcher import Dispatcher
    from .registry import DriverRecord


# Batch byte counts are sum(map(len, map(_second, items))): the payload lengths of
# (iv, payload, ...) items at C speed, written out where used to spare a Python frame.
_second = itemgetter(1)


class Completion(NamedTuple):
    """One asynchronous request's outcome (`Session.collect`): its ticket, the tag given to
    `Session.submit`, and either the result or the request's own error."""

    ticket: int
    tag: Any
    result: Any
    error: BaseException | None


# The per-packet methods a session takes asynchronously, and which argument is the payload
# (counted in ``bytes``, as the synchronous path counts it).
_ASYNC_METHODS: dict[Primitive, dict[str, int]] = {
    Primitive.AEAD: {"seal": 1, "open": 1},
    Primitive.CIPHER: {"encrypt": 1, "decrypt": 1},
    Primitive.INTEG: {"compute": 0},
}


class Session:
    """Base of all sessions. ``driver`` names who serves it right now."""

    __slots__ = (
        "transform", "_key", "_dispatcher", "_record", "_ctx", "_policy",
        "ops", "bytes", "errors", "auth_failures", "migrations", "batches", "time_ns",
        "_pending", "_sub_ctx", "_next_ticket", "__weakref__",
    )

    def __init__(
        self, dispatcher: Dispatcher, transform: Transform, key: bytes | None,
        record: DriverRecord, ctx: Context, policy: Any,
    ):
        self.transform = transform
        self._key = key
        self._dispatcher = dispatcher
        self._record = record
        self._ctx = ctx
        self._policy = policy
        self.ops = self.bytes = self.errors = self.auth_failures = 0
        self.migrations = self.batches = self.time_ns = 0
        # asynchronous requests: ticket -> [method, args, tag, done, result, error], in
        # ticket order; _sub_ctx is the context they were submitted to
        self._pending: dict[int, list] = {}
        self._sub_ctx: Context | None = None
        self._next_ticket = 0
        self._bind(ctx)

    def _bind(self, ctx: Context) -> None:
        """Called with each new context (at open and after a migration)."""
        self._ctx = ctx

    @property
    def driver(self) -> str:
        return self._record.name

    @property
    def algorithm(self) -> str:
        return self.transform.keyword

    def counters(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in (
            "ops", "bytes", "errors", "auth_failures", "migrations", "batches", "time_ns")}

    def close(self) -> None:
        if self._ctx is not None:
            self._dispatcher._session_closed(self)
            try:
                self._ctx.close()
            finally:
                self._ctx = None  # type: ignore[assignment]

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.transform.keyword} on {self.driver}>"

    # -- the one failure path -------------------------------------------------------------
    # Every operation, single or batch, reaches a context in one of three shapes: inline in
    # the per-packet methods (seal/open, encrypt/decrypt, compute/verify), where a helper's
    # Python frame would be a measured share of the cost; through _call (control-plane
    # operations: prf, digest, key exchange); through _batch (every *_batch method). All
    # three hand a DriverFailure to _retry, the only place that moves, retries and counts it.
    def _retry(self, failure: DriverFailure, ctx: Context, method: str, args: tuple):
        """The driver failed this request: move to the next driver and run it again there,
        as often as drivers fail, until one serves it or none is left (then _migrate raises
        DriverFailure; for a strict forced backend it names the driver).

        ``ctx`` is the context the request failed on. If the session already left it while
        the request was in flight (a hot-unplug seen by the registry, or a driver reporting
        itself gone from inside the failing call), it is not moved again, only retried.
        Authentication failures never come here: they are the peer's fault, not the driver's.
        """
        failed: set[str] = set()
        while True:
            self.errors += 1
            if self._ctx is ctx:
                failed.add(self._record.name)
            self._dispatcher._migrate(self, failure, failed, ctx)  # rebinds through _bind()
            ctx = self._ctx
            try:
                return getattr(ctx, method)(*args)
            except DriverFailure as again:
                failure = again

    def _call(self, method: str, args: tuple, nbytes: int):
        """One control-plane operation, counted once it is served."""
        ctx = self._ctx
        try:
            out = getattr(ctx, method)(*args)
        except DriverFailure as failure:
            out = self._retry(failure, ctx, method, args)
        self.ops += 1
        self.bytes += nbytes
        return out

    # -- asynchronous submission (OCF's crypto_dispatch / crypto_done) ----------------------
    # The consumer submits requests and collects completions later; on an asynchronous driver
    # (AF_ALG with kernel AIO, a device queue) many are in flight at once. The session keeps
    # every request until its completion is handed out, so a driver failure with requests in
    # flight moves the session and resubmits exactly the ones not yet completed (nothing lost),
    # and a completion is handed out once, in ticket order (nothing duplicated, no reordering).
    @property
    def asynchronous(self) -> bool:
        """Whether the serving driver runs requests asynchronously (several in flight)."""
        return bool(self._ctx.asynchronous)

    @property
    def in_flight(self) -> int:
        """Submitted requests whose completion was not handed out yet."""
        return len(self._pending)

    def submit(self, method: str, items: Sequence[tuple], tags: Sequence | None = None
               ) -> range:
        """Submit one request per item (the arguments of ``method``, e.g. (iv, pt, aad) for
        "seal"); returns their tickets. ``tags`` (one per item) come back in the completions."""
        allowed = _ASYNC_METHODS.get(self.transform.primitive, {})
        if method not in allowed:
            raise InvalidInput(f"{self.transform.keyword}: {method!r} cannot be submitted "
                               f"(asynchronous methods: {', '.join(allowed) or 'none'})")
        if tags is not None and len(tags) != len(items):
            raise InvalidInput(f"{len(items)} requests but {len(tags)} tags")
        first = self._next_ticket
        self._next_ticket = end = first + len(items)
        pending = self._pending
        tickets = range(first, end)
        if tags is None:
            for t, args in zip(tickets, items):  # noqa: B905 - same length by construction
                pending[t] = [method, args, None, False, None, None]
        else:
            for t, args, tag in zip(tickets, items, tags):  # noqa: B905 - checked above
                pending[t] = [method, args, tag, False, None, None]
        ctx = self._ctx
        if ctx is not self._sub_ctx:  # first use, or moved since: everything pending goes
            self._resubmit(None, None)
            return tickets
        try:
            ctx.submit([(t, method, args) for t, args in zip(tickets, items)])  # noqa: B905
        except DriverFailure as failure:
            self._resubmit(failure, ctx)
        return tickets

    def collect(self, wait: bool = True) -> list[Completion]:
        """Completions in ticket order. With ``wait``, at least one if any request is in
        flight; without, only what is done now (possibly nothing)."""
        pending = self._pending
        if not pending:
            return []
        if self._ctx is not self._sub_ctx:  # a registry event moved the session meanwhile
            self._resubmit(None, None)
        while True:
            ctx = self._ctx
            try:
                done = ctx.collect(wait)
                if wait and not done:
                    raise DriverFailure(f"{self._record.name}: collect() returned nothing "
                                        f"with {len(pending)} requests in flight")
            except DriverFailure as failure:
                self._resubmit(failure, ctx)
                continue
            for ticket, result, error in done:
                entry = pending.get(ticket)
                if entry is not None and not entry[3]:
                    entry[3], entry[4], entry[5] = True, result, error
            out = []
            for ticket, entry in pending.items():
                if not entry[3]:
                    break
                out.append(Completion(ticket, entry[2], entry[4], entry[5]))
            if out or not wait:
                break
        if out:
            payload = _ASYNC_METHODS[self.transform.primitive]
            nbytes = failures = 0
            for c in out:
                entry = pending.pop(c.ticket)
                nbytes += len(entry[1][payload[entry[0]]])
                if isinstance(c.error, AuthenticationError):
                    failures += 1
            self.ops += len(out)
            self.bytes += nbytes
            self.auth_failures += failures
            self.batches += 1
        return out

    def drain(self) -> list[Completion]:
        """Every outstanding completion, in ticket order."""
        out: list[Completion] = []
        while self._pending:
            out += self.collect(True)
        return out

    def _async_batch(self, method: str, items: Sequence, t0: int) -> list:
        """A batch on an asynchronous driver: every item in flight at once (submit, then
        drain), so the ESP dataplane's batches use the driver's queue without a change of its
        own. Results and errors as the synchronous batch gives them: None for a failed tag in
        open_batch (counted there), the first other error raised. Counted by collect."""
        before = self.auth_failures
        self.submit(method[:-6], items)  # "seal_batch" -> "seal"
        done = self.drain()
        self.auth_failures = before
        self.time_ns += perf_counter_ns() - t0
        out = []
        for c in done:
            if c.error is None:
                out.append(c.result)
            elif isinstance(c.error, AuthenticationError) and method == "open_batch":
                out.append(None)
            else:
                raise c.error
        return out

    def _resubmit(self, failure: DriverFailure | None, failed_ctx: Context | None) -> None:
        """Submit every request not yet completed to the current context, after moving the
        session off ``failed_ctx`` if given (as _retry does, as often as drivers fail)."""
        failed: set[str] = set()
        ctx = failed_ctx
        while True:
            if failure is not None:
                self.errors += 1
                if self._ctx is ctx:
                    failed.add(self._record.name)
                self._dispatcher._migrate(self, failure, failed, ctx)
            ctx = self._sub_ctx = self._ctx
            redo = [(t, e[0], e[1]) for t, e in self._pending.items() if not e[3]]
            try:
                if redo:
                    ctx.submit(redo)
                return
            except DriverFailure as again:
                failure = again

    def _batch(self, method: str, items: Sequence, nbytes: int):
        """One batch, timed and counted once per call (never per item)."""
        t0 = perf_counter_ns()
        ctx = self._ctx
        if ctx.asynchronous and len(items) > 1 and not self._pending:
            return self._async_batch(method, items, t0)
        try:
            out = getattr(ctx, method)(items)
        except DriverFailure as failure:
            out = self._retry(failure, ctx, method, (items,))
        self.time_ns += perf_counter_ns() - t0
        self.batches += 1
        self.ops += len(items)
        self.bytes += nbytes
        return out


class AeadSession(Session):
    # _enc/_dec/_salt: a context whose seal/open are "salt || iv, then one C call" may expose
    # those calls (AeadContext.one_shot()); the session then makes them itself and saves a
    # Python frame per packet, which was most of the dispatch overhead at 1400 bytes. Such
    # calls cannot fail as a driver (one_shot's contract), so they need no retry.
    __slots__ = ("_enc", "_dec", "_salt")

    def _bind(self, ctx: Context) -> None:
        self._ctx = ctx
        parts = ctx.one_shot()  # type: ignore[attr-defined]
        self._enc, self._dec, self._salt = parts if parts else (None, None, b"")

    def seal(self, iv: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Encrypt and authenticate; returns ciphertext || ICV."""
        enc = self._enc
        if enc is not None and len(iv) == 8:
            try:
                out = enc(self._salt + iv, plaintext, aad)
            except (ValueError, TypeError, OverflowError):
                out = self._ctx.seal(iv, plaintext, aad)  # let the context word the error
        else:
            ctx = self._ctx
            try:
                out = ctx.seal(iv, plaintext, aad)
            except DriverFailure as e:
                out = self._retry(e, ctx, "seal", (iv, plaintext, aad))
        self.ops += 1
        self.bytes += len(plaintext)
        return out

    def open(self, iv: bytes, ciphertext: bytes, aad: bytes = b"") -> bytes:
        """Verify and decrypt ciphertext || ICV; raises AuthenticationError."""
        dec = self._dec
        if dec is not None and len(iv) == 8:
            try:
                out = dec(self._salt + iv, ciphertext, aad)
                self.ops += 1
                self.bytes += len(ciphertext)
                return out
            except Exception:  # InvalidTag and bad input: the context words the error
                pass
        ctx = self._ctx
        try:
            out = ctx.open(iv, ciphertext, aad)
        except DriverFailure as e:
            out = self._retry(e, ctx, "open", (iv, ciphertext, aad))
        except AuthenticationError:
            self.auth_failures += 1
            raise
        self.ops += 1
        self.bytes += len(ciphertext)
        return out

    def seal_batch(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bytes]:
        return self._batch("seal_batch", items, sum(map(len, map(_second, items))))

    def open_batch(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bytes | None]:
        """Per item the plaintext, or None where authentication failed."""
        out = self._batch("open_batch", items, sum(map(len, map(_second, items))))
        self.auth_failures += out.count(None)
        return out


class CipherSession(Session):
    __slots__ = ()

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        ctx = self._ctx
        try:
            out = ctx.encrypt(iv, data)
        except DriverFailure as e:
            out = self._retry(e, ctx, "encrypt", (iv, data))
        self.ops += 1
        self.bytes += len(data)
        return out

    def decrypt(self, iv: bytes, data: bytes) -> bytes:
        ctx = self._ctx
        try:
            out = ctx.decrypt(iv, data)
        except DriverFailure as e:
            out = self._retry(e, ctx, "decrypt", (iv, data))
        self.ops += 1
        self.bytes += len(data)
        return out

    def encrypt_batch(self, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        return self._batch("encrypt_batch", items, sum(map(len, map(_second, items))))

    def decrypt_batch(self, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        return self._batch("decrypt_batch", items, sum(map(len, map(_second, items))))


class MacSession(Session):
    """Integrity: compute returns the truncated ICV; verify compares in constant time."""

    __slots__ = ()

    def compute(self, data: bytes) -> bytes:
        ctx = self._ctx
        try:
            out = ctx.compute(data)
        except DriverFailure as e:
            out = self._retry(e, ctx, "compute", (data,))
        self.ops += 1
        self.bytes += len(data)
        return out

    def verify(self, data: bytes, icv: bytes) -> None:
        ctx = self._ctx
        try:
            ctx.verify(data, icv)
        except DriverFailure as e:
            self._retry(e, ctx, "verify", (data, icv))
        except AuthenticationError:
            self.auth_failures += 1
            raise
        finally:
            self.ops += 1
            self.bytes += len(data)

    def compute_batch(self, items: Sequence[bytes]) -> list[bytes]:
        return self._batch("compute_batch", items, sum(map(len, items)))


class PrfSession(Session):
    __slots__ = ()

    def prf(self, data: bytes) -> bytes:
        return self._call("prf", (data,), len(data))

    def prf_plus(self, seed: bytes, length: int) -> bytes:
        """prf+ (RFC 7296 section 2.13): T1 | T2 | ..., Tn = prf(K, Tn-1 | S | n)."""
        size = self.transform.output_size
        if length > 255 * size:
            raise InvalidInput(f"prf+ can give at most {255 * size} bytes with {self.transform}")
        out = bytearray()
        t = b""
        n = 1
        while len(out) < length:
            t = self.prf(t + seed + bytes((n,)))
            out += t
            n += 1
        return bytes(out[:length])


class KeyExchangeSession(Session):
    __slots__ = ()

    def public_value(self) -> bytes:
        out = self._call("public_value", (), 0)
        if self._key is None:
            # Keep the private value (where the driver lets it go) so that a migration can
            # finish this exchange on another driver with the public value already sent.
            self._key = self._ctx.private_value()
        return out

    def shared_secret(self, peer_public: bytes) -> bytes:
        """The shared secret; raises InvalidPublicValue for a bad peer value (RFC 6989)."""
        return self._call("shared_secret", (peer_public,), len(peer_public))


class HashSession(Session):
    __slots__ = ()

    def digest(self, data: bytes) -> bytes:
        return self._call("digest", (data,), len(data))


SESSION_CLASS: dict[Primitive, type[Session]] = {
    Primitive.AEAD: AeadSession,
    Primitive.CIPHER: CipherSession,
    Primitive.INTEG: MacSession,
    Primitive.PRF: PrfSession,
    Primitive.KE: KeyExchangeSession,
    Primitive.HASH: HashSession,
}


# -- signatures (ocfpy.crypto.signatures). Opened by Dispatcher.open_signer / open_verifier;
# ``_key`` holds the key reference (a file, a PKCS#11 URI) or the PublicKey, never key bytes
# of a token. A migration re-opens the same reference on another driver that can reach it.
class SignSession(Session):
    __slots__ = ()

    def sign(self, data: bytes) -> bytes:
        ctx = self._ctx
        try:
            out = ctx.sign(data)
        except DriverFailure as e:
            out = self._retry(e, ctx, "sign", data)
        self.ops += 1
        self.bytes += len(data)
        return out

    def public_key(self) -> bytes:
        """DER SubjectPublicKeyInfo of the key pair."""
        return self._ctx.public_key()


class VerifySession(Session):
    __slots__ = ()

    def verify(self, data: bytes, signature: bytes) -> None:
        """Return if valid; raise InvalidSignature (counted in auth_failures) if not."""
        from .errors import InvalidSignature

        ctx = self._ctx
        try:
            ctx.verify(data, signature)
        except DriverFailure as e:
            self._retry(e, ctx, "verify", data, signature)
        except InvalidSignature:
            self.auth_failures += 1
            raise
        finally:
            self.ops += 1
            self.bytes += len(data)
