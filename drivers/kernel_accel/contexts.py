"""Contexts over a transport handle: the IKE/ESP conventions on top of kernel algorithms.

Every request goes through a runner and is fenced by the device's `Presence`: a request is
refused before it starts if the device is already gone, and its result is thrown away
(DriverFailure, so the dispatcher retries it on another driver) if the device went while it
ran. A result is returned only if the device was present from start to finish, so a vanishing
device never yields wrong bytes. `GuardedRunner` also stops waiting for a request the device
lost (see there).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from ocfpy.crypto.catalogue import Transform
from ocfpy.crypto.driver import AeadContext, CipherContext, HashContext, MacContext, PrfContext
from ocfpy.crypto.errors import DriverFailure, InvalidInput, InvalidKey

from .transport import AeadHandle, CipherHandle, HashHandle, Transport


class Presence:
    """Whether a device is still there, shared by its driver and every context on it."""

    def __init__(self, label: str):
        self.label = label
        self.reason = ""
        self._gone = threading.Event()
        self._generation = 0  # bumped on every departure; a request compares before/after

    def depart(self, reason: str) -> None:
        self.reason = reason
        self._generation += 1
        self._gone.set()

    @property
    def gone(self) -> bool:
        return self._gone.is_set()

    def enter(self) -> int:
        if self._gone.is_set():
            raise DriverFailure(f"{self.label}: device gone ({self.reason})")
        return self._generation

    def leave(self, ticket: int) -> None:
        if self._gone.is_set() or self._generation != ticket:
            raise DriverFailure(f"{self.label}: device went away during the request "
                                f"({self.reason}); result discarded")


class DirectRunner:
    """Runs each request on the caller's thread, fenced by the device's presence.

    A request the device fails (DriverFailure: ESHUTDOWN, EIO, ENODEV, ...) marks the runner
    broken and gives the whole device up through ``on_failure``: measured with virtio_crypto,
    such errors come from a device on its way out, and every session should move now rather
    than each discovering it, or worse, closing its transform on it (see _Fenced.close).
    """

    def __init__(self, presence: Presence, on_failure: Callable[[str], None] | None = None):
        self.presence = presence
        self.on_failure = on_failure
        self.broken = False

    def _failed(self, exc: DriverFailure) -> None:
        self.broken = True
        if self.on_failure is not None and not self.presence.gone:
            self.on_failure(f"the device failed a request: {exc}")

    def call(self, fn, *args, **kwargs):
        ticket = self.presence.enter()
        try:
            out = fn(*args, **kwargs)
        except DriverFailure as exc:
            self._failed(exc)
            raise
        self.presence.leave(ticket)
        return out

    def close(self) -> None:
        pass


class _Job:
    __slots__ = ("fn", "args", "kwargs", "done", "result", "error")

    def __init__(self, fn, args, kwargs):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None


class GuardedRunner(DirectRunner):
    """Runs each request on a helper thread and waits for it with a deadline.

    For devices whose kernel driver can lose a request: virtio_crypto (Linux 6.1, measured in
    the VM lane) frees in-flight requests on hot-unplug without completing them, so the
    AF_ALG caller would sleep in the kernel forever, uninterruptibly. Here the caller stops
    waiting when the device is reported gone or the deadline passes (then the whole device is
    declared gone through ``on_failure``), raises DriverFailure, and the dispatcher retries the
    request elsewhere; the helper thread stays behind in the kernel. Costs a thread hand-off
    per request, which is why it is only used where the driver needs it.
    """

    POLL = 0.05

    def __init__(self, presence: Presence, deadline: float,
                 on_failure: Callable[[str], None] | None = None):
        super().__init__(presence, on_failure)
        self.deadline = deadline
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.stuck = False

    def _worker(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job.result = job.fn(*job.args, **job.kwargs)
            except BaseException as exc:  # handed to the caller
                job.error = exc
            job.done.set()

    def call(self, fn, *args, **kwargs):
        ticket = self.presence.enter()
        if self.stuck:
            raise DriverFailure(f"{self.presence.label}: a request is stuck in the device")
        if self._thread is None:
            self._thread = threading.Thread(target=self._worker, daemon=True,
                                            name=f"ocfpy-accel-{self.presence.label}")
            self._thread.start()
        job = _Job(fn, args, kwargs)
        self._jobs.put(job)
        limit = time.monotonic() + self.deadline
        while not job.done.wait(self.POLL):
            if self.presence.gone or time.monotonic() > limit:
                self.stuck = self.broken = True
                why = (f"device gone ({self.presence.reason})" if self.presence.gone else
                       f"no answer within {self.deadline:g} s")
                if not self.presence.gone and self.on_failure is not None:
                    self.on_failure(f"a request got no answer within {self.deadline:g} s")
                raise DriverFailure(f"{self.presence.label}: request abandoned: {why}")
        if job.error is not None:
            if isinstance(job.error, DriverFailure):
                self._failed(job.error)
            raise job.error
        self.presence.leave(ticket)
        return job.result

    def close(self) -> None:
        if self._thread is not None and not self.stuck:
            self._jobs.put(None)


# Handles of a vanished or failing device are never closed: closing destroys the kernel
# transform, and virtio_crypto (6.1) then sends a close-session request to the device and
# waits for its answer forever, uninterruptibly (measured: virtio_crypto_skcipher_exit ->
# virtio_crypto_ctrl_vq_request, task in D state). Keeping them referenced also keeps the
# garbage collector from closing them.
_ABANDONED: list[object] = []


def _key_check(transform: Transform, key: bytes | None) -> bytes:
    if key is None or len(key) != transform.keymat_size:
        got = 0 if key is None else len(key)
        raise InvalidKey(f"{transform.keyword} takes {transform.keymat_size} bytes of keying "
                         f"material, not {got}")
    return key


class _Fenced:
    _handle: CipherHandle | AeadHandle | HashHandle
    _runner: DirectRunner

    def close(self) -> None:
        handle, self._handle = self._handle, None  # type: ignore[assignment]
        if handle is None:
            return
        if self._runner.presence.gone or self._runner.broken:
            _ABANDONED.append(handle)
            return
        self._runner.close()
        handle.close()


class CbcContext(_Fenced, CipherContext):
    """AES-CBC (RFC 3602) on ``cbc(aes)``: 16-byte IV, whole blocks.

    Asynchronous where the transport has a queue (AF_ALG: kernel AIO), so that up to
    max_depth requests sit in the device's queue together. The fence is the same as for one
    request: nothing is submitted to a device already gone, and a collect after the device
    went (or a wait past the runner's deadline, a request the device lost) discards what it
    had and raises DriverFailure; the session resubmits everything uncollected elsewhere.
    """

    max_depth = 32

    def __init__(self, transform: Transform, key: bytes | None, transport: Transport,
                 implementation: str, runner: DirectRunner):
        self.transform = transform
        self._runner = runner
        self._handle = transport.cipher(implementation, _key_check(transform, key))
        self._transport = transport
        self._queue = None
        self._fence = 0
        self.asynchronous = type(transport).cipher_queue is not Transport.cipher_queue

    def _check_request(self, iv: bytes, data: bytes) -> None:
        if len(iv) != 16:
            raise InvalidInput(f"{self.transform.keyword} takes a 16-byte IV, not {len(iv)}")
        if len(data) % 16:
            raise InvalidInput(f"{self.transform.keyword}: {len(data)} bytes is not a whole "
                               "number of 16-byte blocks")

    def submit(self, requests) -> None:
        if not self.asynchronous:
            return super().submit(requests)
        from ocfpy.kernel.afalg import AioQueue

        handle = self._handle
        if handle is None:
            raise DriverFailure(f"{self._runner.presence.label}: context closed")
        fence = self._runner.presence.enter()
        q = self._queue
        if q is None:
            q = self._queue = self._transport.cipher_queue(handle, self.max_depth)
        if not q.in_flight:
            self._fence = fence
        built = []
        for ticket, method, (iv, data) in requests:
            try:
                self._check_request(iv, data)
                if data:
                    built.append(AioQueue.skcipher_request(handle, ticket, method == "encrypt",
                                                           iv, data))
                else:
                    q.reject(ticket, None, b"")
            except InvalidInput as exc:  # this request's own fault, reported as its error
                q.reject(ticket, exc)
        q.submit(built)

    def collect(self, wait: bool = True):
        if not self.asynchronous:
            return super().collect(wait)
        q = self._queue
        if q is None:
            return []
        runner = self._runner
        try:
            out = q.collect(wait, getattr(runner, "deadline", None))
        except DriverFailure as exc:
            runner._failed(exc)
            raise
        runner.presence.leave(self._fence)  # the device went meanwhile: results discarded
        return out

    def close(self) -> None:
        q, self._queue = self._queue, None
        if q is not None:
            if self._runner.presence.gone or self._runner.broken:
                _ABANDONED.append(q)  # io_destroy would wait for what the device lost
            else:
                q.close()
        super().close()

    def _run(self, encrypt: bool, iv: bytes, data: bytes) -> bytes:
        if len(iv) != 16:
            raise InvalidInput(f"{self.transform.keyword} takes a 16-byte IV, not {len(iv)}")
        if len(data) % 16:
            raise InvalidInput(f"{self.transform.keyword}: {len(data)} bytes is not a whole "
                               "number of 16-byte blocks")
        if not data:
            return b""
        handle = self._handle
        if handle is None:
            raise DriverFailure(f"{self._runner.presence.label}: context closed")
        return self._runner.call(handle.encrypt if encrypt else handle.decrypt, iv, data)

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        return self._run(True, iv, data)

    def decrypt(self, iv: bytes, data: bytes) -> bytes:
        return self._run(False, iv, data)


class CtrContext(CbcContext):
    """AES-CTR for ESP (RFC 3686) on ``rfc3686(ctr(aes))``: key || 4-byte nonce, 8-byte IV."""

    def _check_request(self, iv: bytes, data: bytes) -> None:
        if len(iv) != 8:
            raise InvalidInput(f"{self.transform.keyword} takes an 8-byte IV, not {len(iv)}")

    def _run(self, encrypt: bool, iv: bytes, data: bytes) -> bytes:
        if len(iv) != 8:
            raise InvalidInput(f"{self.transform.keyword} takes an 8-byte IV, not {len(iv)}")
        if not data:
            return b""
        handle = self._handle
        if handle is None:
            raise DriverFailure(f"{self._runner.presence.label}: context closed")
        return self._runner.call(handle.encrypt if encrypt else handle.decrypt, iv, data)


class EspAeadContext(_Fenced, AeadContext):
    """``rfc4106(gcm(aes))`` / ``rfc7539esp(chacha20,poly1305)``: the kernel takes key || salt
    and the 8-byte IV, which also travels at the end of the associated data (counted in
    assoclen, not authenticated)."""

    def __init__(self, transform: Transform, key: bytes | None, transport: Transport,
                 implementation: str, runner: DirectRunner):
        self.transform = transform
        self._runner = runner
        self._handle = transport.aead(implementation, _key_check(transform, key),
                                      transform.icv_size)

    def _iv(self, iv: bytes) -> bytes:
        if len(iv) != 8:
            raise InvalidInput(f"{self.transform.keyword} takes an 8-byte IV, not {len(iv)}")
        return iv

    def seal(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        iv = self._iv(iv)
        return self._runner.call(self._handle.seal, iv, plaintext, aad=aad + iv)  # type: ignore[union-attr]

    def open(self, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        iv = self._iv(iv)
        return self._runner.call(self._handle.open, iv, ciphertext, aad=aad + iv)  # type: ignore[union-attr]


class GcmContext(EspAeadContext):
    """Plain ``gcm(aes)`` (what the CCP offers): the key without the salt, a 12-byte nonce
    salt || IV. The kernel cannot take an empty request, which ESP never makes."""

    def __init__(self, transform: Transform, key: bytes | None, transport: Transport,
                 implementation: str, runner: DirectRunner):
        self.transform = transform
        self._runner = runner
        key = _key_check(transform, key)
        self._salt = key[transform.key_size:]
        self._handle = transport.aead(implementation, key[: transform.key_size],
                                      transform.icv_size)

    def seal(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        nonce = self._salt + self._iv(iv)
        if not plaintext and not aad:
            raise InvalidInput(f"{self.transform.keyword}: the kernel's gcm(aes) takes no "
                               "empty request")
        return self._runner.call(self._handle.seal, nonce, plaintext, aad=aad)  # type: ignore[union-attr]

    def open(self, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        nonce = self._salt + self._iv(iv)
        return self._runner.call(self._handle.open, nonce, ciphertext, aad=aad)  # type: ignore[union-attr]


class _Digest(_Fenced):
    def _digest(self, data: bytes) -> bytes:
        handle = self._handle
        if handle is None:
            raise DriverFailure(f"{self._runner.presence.label}: context closed")
        return self._runner.call(handle.digest, data)  # type: ignore[union-attr]


class MacContextOnHash(_Digest, MacContext):
    """HMAC-SHA1/SHA2 (RFC 2404, RFC 4868) or AES-XCBC-MAC-96 (RFC 3566), truncated."""

    def __init__(self, transform: Transform, key: bytes | None, transport: Transport,
                 implementation: str, runner: DirectRunner):
        self.transform = transform
        self._runner = runner
        self._handle = transport.hash(implementation, _key_check(transform, key))

    def compute(self, data: bytes) -> bytes:
        return self._digest(data)[: self.transform.icv_size]


class HmacPrfContext(_Digest, PrfContext):
    """PRF-HMAC-SHA1/SHA2: keys of any length (RFC 2104 hashes long keys itself)."""

    def __init__(self, transform: Transform, key: bytes | None, transport: Transport,
                 implementation: str, runner: DirectRunner):
        if key is None:
            raise InvalidKey(f"{transform.keyword} needs a key")
        self.transform = transform
        self._runner = runner
        self._handle = transport.hash(implementation, key)

    def prf(self, data: bytes) -> bytes:
        return self._digest(data)


class CmacPrfContext(HmacPrfContext):
    """AES-CMAC-PRF-128 (RFC 4615): a key that is not 16 bytes is first condensed to
    AES-CMAC(0^128, key), on the same device."""

    def __init__(self, transform: Transform, key: bytes | None, transport: Transport,
                 implementation: str, runner: DirectRunner):
        if key is None:
            raise InvalidKey(f"{transform.keyword} needs a key")
        if len(key) != 16:
            condense = transport.hash(implementation, bytes(16))
            try:
                key = runner.call(condense.digest, key)
            finally:
                condense.close()
        super().__init__(transform, key, transport, implementation, runner)


class HashContextOnHash(_Digest, HashContext):
    def __init__(self, transform: Transform, key: bytes | None, transport: Transport,
                 implementation: str, runner: DirectRunner):
        self.transform = transform
        self._runner = runner
        self._handle = transport.hash(implementation, None)

    def digest(self, data: bytes) -> bytes:
        return self._digest(data)
