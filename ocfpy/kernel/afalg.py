"""The AF_ALG transport: the Linux kernel crypto API over sockets.

One *transform* socket is bound to an algorithm (``bind(("aead", "gcm(aes)"))``) and keyed
once; one *operation* socket is accepted from it and kept for the life of the context, so an
operation costs one ``sendmsg`` and one ``recv`` (strongSwan's af-alg plugin accepts per call
and pays for it). The name given to bind may be an algorithm name (the kernel picks the
highest-priority tested implementation) or an exact kernel driver name such as
``virtio_crypto_aes_cbc`` (that implementation, and no other): accelerator drivers in
drivers/ rely on the latter.

Errors are translated once, here, into the framework's vocabulary:

- ``socket(AF_ALG)`` fails (EAFNOSUPPORT): `AfAlgUnavailable` (a DriverUnavailable) whose
  message names the missing kernel option;
- bind fails (ENOENT): `Unsupported` with Reason.NOT_IN_KERNEL;
- EBADMSG on decrypt: `AuthenticationError`;
- EINVAL / EMSGSIZE on a request: `InvalidInput`;
- anything else on a request (EIO, ENODEV from a vanished device, a timeout):
  `DriverFailure`, so the dispatcher migrates the session. The operation socket is then
  re-accepted so the next request starts from a clean kernel context.

Facts this relies on (measured in the VM lane, see docs/af_alg.md): AEAD input is
AAD || PT (encrypt) or AAD || CT || TAG (decrypt) and the output repeats the AAD region;
a recv() with a zero-length buffer does not run the request at all (so an AEAD open whose
output is empty must still offer a 1-byte buffer, or a forged tag would pass);
ALG_SET_KEY and ALG_SET_AEAD_AUTHSIZE go on the bound socket before accept(); the kernel
serves one request at a time per operation socket. Linux 7.2 deprecates AF_ALG, so callers
must probe at run time (`available()`), never assume.

API stability: `available`, `type_available`, `HashOp`, `SkcipherOp`, `AeadOp`,
`AfAlgUnavailable`, `DEFAULT_TIMEOUT` are used by drivers/ and keep their signatures (the one
change so far: `AeadOp.seal`/`open` moved from (iv, aad, payload) to the driver contract's
(iv, payload, aad=...), with ``aad`` keyword-only so that an old call fails loudly).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
import socket
from collections import deque
from functools import cached_property

from ocfpy.crypto.devices import proc_crypto
from ocfpy.crypto.errors import (
    AuthenticationError,
    DriverFailure,
    DriverUnavailable,
    InvalidInput,
    InvalidKey,
    Reason,
    Unsupported,
)

log = logging.getLogger(__name__)

HAS_AF_ALG = hasattr(socket, "AF_ALG")
SOL_ALG = getattr(socket, "SOL_ALG", 279)
ALG_SET_KEY = getattr(socket, "ALG_SET_KEY", 1)
ALG_SET_AEAD_AUTHSIZE = getattr(socket, "ALG_SET_AEAD_AUTHSIZE", 5)
ALG_OP_DECRYPT = getattr(socket, "ALG_OP_DECRYPT", 0)
ALG_OP_ENCRYPT = getattr(socket, "ALG_OP_ENCRYPT", 1)

DEFAULT_TIMEOUT: float | None = None
"""Operation sockets block by default. A socket timeout puts the fd in non-blocking mode and
makes CPython poll() it, but AF_ALG hash sockets implement no poll (it never reports ready),
and the kernel waits for a crypto request uninterruptibly anyway, so a timeout cannot rescue
a hung device. We avoid the one socket-level hang (a request larger than the socket buffer
blocks sendmsg until a recv that never comes) by checking `max_request` before sending."""

_WANTED_BUFFER = 4 << 20  # the kernel caps this at 2 * net.core.{w,r}mem_max

# Config options per socket type, for messages that tell the user what to enable.
CONFIG = {
    "hash": "CONFIG_CRYPTO_USER_API_HASH (module algif_hash)",
    "skcipher": "CONFIG_CRYPTO_USER_API_SKCIPHER (module algif_skcipher)",
    "aead": "CONFIG_CRYPTO_USER_API_AEAD (module algif_aead)",
    "rng": "CONFIG_CRYPTO_USER_API_RNG (module algif_rng)",
}
# Something every kernel with the socket type has, to tell "type missing" from "alg missing".
_PROBE_ALG = {"hash": "sha256", "skcipher": "cbc(aes)", "aead": "gcm(aes)", "rng": "stdrng"}


class AfAlgUnavailable(DriverUnavailable):
    """AF_ALG (or one socket type of it) cannot be used on this kernel. Says why."""


def _errname(err: int | None) -> str:
    return errno.errorcode.get(err or 0, str(err))


def available() -> str | None:
    """None if AF_ALG sockets can be created here, else the reason, ready for a user."""
    if not HAS_AF_ALG:
        return "this Python has no socket.AF_ALG (not built on Linux)"
    try:
        socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET, 0).close()
    except OSError as exc:
        if exc.errno == errno.EAFNOSUPPORT:
            return ("kernel built without CONFIG_CRYPTO_USER_API "
                    "(socket(AF_ALG) fails: EAFNOSUPPORT)")
        return f"socket(AF_ALG) fails: {_errname(exc.errno)} ({exc.strerror})"
    return None


def type_available(alg_type: str) -> str | None:
    """None if sockets of this type ("hash", "skcipher", "aead") can be bound, else why."""
    reason = available()
    if reason:
        return reason
    probe = _PROBE_ALG.get(alg_type)
    if probe is None:
        return f"unknown AF_ALG type {alg_type!r}"
    try:
        with socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET, 0) as s:
            s.bind((alg_type, probe))
    except OSError as exc:
        option = CONFIG.get(alg_type, alg_type)
        if exc.errno == errno.ENOENT and proc_crypto.resolve(probe):
            return f"kernel has {probe} but no AF_ALG {alg_type!r} sockets: enable {option}"
        return (f"bind(({alg_type!r}, {probe!r})) fails: {_errname(exc.errno)}; "
                f"needs {option}")
    return None


def bind(alg_type: str, name: str) -> socket.socket:
    """A transform socket bound to ``name`` (algorithm or exact kernel driver name)."""
    if not HAS_AF_ALG:
        raise AfAlgUnavailable("this Python has no socket.AF_ALG")
    try:
        tfm = socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET, 0)
    except OSError as exc:
        raise AfAlgUnavailable(available() or f"socket(AF_ALG): {exc}") from None
    try:
        tfm.bind((alg_type, name))
    except OSError as exc:
        tfm.close()
        if exc.errno == errno.ENOENT:
            raise Unsupported(f"{alg_type} {name}", Reason.NOT_IN_KERNEL,
                              "no such algorithm or driver registered (ENOENT); "
                              f"or {CONFIG.get(alg_type, alg_type)} is missing") from None
        raise Unsupported(f"{alg_type} {name}", Reason.NOT_IN_KERNEL,
                          f"bind: {_errname(exc.errno)} ({exc.strerror})") from None
    return tfm


class _Op:
    """A bound, keyed transform and its accepted operation socket."""

    alg_type = ""

    def __init__(self, name: str, key: bytes | None = None, *, authsize: int | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT):
        self.name = name
        self.timeout = timeout
        self._tfm = bind(self.alg_type, name)
        try:
            if key is not None:
                self._tfm.setsockopt(SOL_ALG, ALG_SET_KEY, key)
            if authsize is not None:
                self._tfm.setsockopt(SOL_ALG, ALG_SET_AEAD_AUTHSIZE, None, authsize)
            self._op = self._accept()
        except OSError as exc:
            self._tfm.close()
            if exc.errno == errno.EINVAL:
                what = "key" if key is not None else "parameters"
                raise InvalidKey(f"{name}: the kernel rejected the {what} "
                                 f"({len(key or b'')}-byte key, authsize {authsize})") from None
            raise DriverFailure(f"{name}: set up failed: {_errname(exc.errno)} "
                                f"({exc.strerror})") from None

    def _accept(self) -> socket.socket:
        op, _ = self._tfm.accept()
        # Room for one whole request in each direction: the kernel holds the request until
        # recv(), and a request larger than the send buffer would block sendmsg forever.
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                op.setsockopt(socket.SOL_SOCKET, opt, _WANTED_BUFFER)
            except OSError:
                pass
        if self.timeout is not None:
            op.settimeout(self.timeout)
        return op

    @cached_property
    def max_request(self) -> int:
        """Largest input (AAD included) one request may carry on this socket."""
        snd = self._op.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        rcv = self._op.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        page = os.sysconf("SC_PAGE_SIZE")
        return (min(snd, rcv) & ~(page - 1)) - page

    @cached_property
    def implementation(self) -> proc_crypto.CryptoAlg | None:
        """The /proc/crypto entry serving this socket (read after bind created it)."""
        return proc_crypto.resolve(self.name, self.alg_type)

    def _fail(self, exc: OSError, what: str) -> Exception:
        """Translate a request's OSError, and reset the operation socket if needed."""
        if exc.errno == errno.EBADMSG:
            return AuthenticationError(f"{self.name}: authentication failed (EBADMSG)")
        self._reset()
        if isinstance(exc, TimeoutError) or exc.errno is None:
            return DriverFailure(f"{self.name}: {what} timed out after {self.timeout} s")
        if exc.errno in (errno.EINVAL, errno.EMSGSIZE):
            return InvalidInput(f"{self.name}: kernel rejected the {what} request: "
                                f"{_errname(exc.errno)} ({exc.strerror})")
        return DriverFailure(f"{self.name}: {what} failed: {_errname(exc.errno)} "
                             f"({exc.strerror})")

    def _reset(self) -> None:
        try:
            self._op.close()
            self._op = self._accept()
        except OSError:
            log.debug("re-accept on %s failed", self.name, exc_info=True)

    def close(self) -> None:
        for s in (getattr(self, "_op", None), getattr(self, "_tfm", None)):
            if s is not None:
                s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class HashOp(_Op):
    """A hash or keyed MAC (``sha256``, ``hmac(sha256)``, ``xcbc(aes)``, ``cmac(aes)``)."""

    alg_type = "hash"
    _RECV = 128  # larger than any digest; the kernel returns exactly the digest size

    def __init__(self, name: str, key: bytes | None = None, *,
                 timeout: float | None = DEFAULT_TIMEOUT):
        super().__init__(name, key, timeout=timeout)

    def digest(self, data: bytes) -> bytes:
        op = self._op
        try:
            if data:
                # MSG_MORE: a partial send cannot restart the hash; recv() finalises it.
                op.sendall(data, socket.MSG_MORE)
            # (with nothing sent, recv() yields the digest of the empty message)
            return op.recv(self._RECV)
        except OSError as exc:
            raise self._fail(exc, "hash") from None


class SkcipherOp(_Op):
    """A symmetric cipher (``cbc(aes)``, ``rfc3686(ctr(aes))``, or a driver name)."""

    alg_type = "skcipher"

    def __init__(self, name: str, key: bytes, *, timeout: float | None = DEFAULT_TIMEOUT):
        super().__init__(name, key, timeout=timeout)

    def _run(self, op_code: int, iv: bytes, data: bytes, what: str) -> bytes:
        if len(data) > self.max_request:
            raise InvalidInput(f"{self.name}: {len(data)} bytes exceed the AF_ALG request "
                               f"limit of {self.max_request}")
        op = self._op
        try:
            op.sendmsg_afalg([data], op=op_code, iv=iv)
            out = op.recv(len(data))
            while len(out) < len(data):  # the kernel may hand back a long result in parts
                more = op.recv(len(data) - len(out))
                if not more:
                    raise OSError(errno.EIO, "short read from AF_ALG")
                out += more
            return out
        except OSError as exc:
            raise self._fail(exc, what) from None

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        return self._run(ALG_OP_ENCRYPT, iv, data, "encrypt")

    def decrypt(self, iv: bytes, data: bytes) -> bytes:
        return self._run(ALG_OP_DECRYPT, iv, data, "decrypt")


class AeadOp(_Op):
    """An AEAD (``gcm(aes)``, ``rfc4106(gcm(aes))``, ``rfc7539esp(chacha20,poly1305)``).

    `seal(iv, plaintext, aad=...)`/`open(iv, ciphertext, aad=...)` take the payload and the
    AAD separately and return only the payload part of the kernel's output. The order is the
    driver contract's (iv, payload, aad); ``aad`` is keyword-only because both are bytes, so
    a swapped call would otherwise run and silently authenticate the wrong data. With
    ``iv_in_aad`` (the ESP forms rfc4106 and rfc7539esp) the IV is also placed after the AAD
    in the request, where those templates expect it (it is counted in assoclen but not
    authenticated); the caller still passes AAD without it.
    """

    alg_type = "aead"

    def __init__(self, name: str, key: bytes, authsize: int, *, iv_in_aad: bool = False,
                 timeout: float | None = DEFAULT_TIMEOUT):
        self.authsize = authsize
        self.iv_in_aad = iv_in_aad
        super().__init__(name, key, authsize=authsize, timeout=timeout)

    def _check(self, total: int) -> None:
        if total > self.max_request:
            raise InvalidInput(f"{self.name}: {total} bytes exceed the AF_ALG request "
                               f"limit of {self.max_request}")

    def seal(self, iv: bytes, plaintext: bytes, *, aad: bytes) -> bytes:
        """ciphertext || tag."""
        if self.iv_in_aad:
            n = len(aad) + len(iv)
            parts = [aad, iv, plaintext]
        else:
            n = len(aad)
            parts = [aad, plaintext]
        self._check(n + len(plaintext))
        op = self._op
        try:
            op.sendmsg_afalg(parts, op=ALG_OP_ENCRYPT, iv=iv, assoclen=n)
            out = op.recv(n + len(plaintext) + self.authsize or 1)
        except OSError as exc:
            raise self._fail(exc, "encrypt") from None
        return out[n:]

    def open(self, iv: bytes, ciphertext: bytes, *, aad: bytes) -> bytes:
        """The plaintext of ciphertext || tag; AuthenticationError if the tag is wrong."""
        if len(ciphertext) < self.authsize:
            raise AuthenticationError(f"{self.name}: input shorter than the "
                                      f"{self.authsize}-byte tag")
        if self.iv_in_aad:
            n = len(aad) + len(iv)
            parts = [aad, iv, ciphertext]
        else:
            n = len(aad)
            parts = [aad, ciphertext]
        self._check(n + len(ciphertext))
        op = self._op
        try:
            op.sendmsg_afalg(parts, op=ALG_OP_DECRYPT, iv=iv, assoclen=n)
            # Never recv into an empty buffer: the kernel then skips the request entirely
            # (returns 0 bytes, tag unchecked) and leaves it queued, so an empty-AAD,
            # empty-payload open would "succeed" with any tag (measured, Linux 6.1).
            out = op.recv(n + len(ciphertext) - self.authsize or 1)
        except OSError as exc:
            raise self._fail(exc, "decrypt") from None
        return out[n:]



# -- asynchronous submission: Linux native AIO on operation sockets ---------------------------
# algif_aead and algif_skcipher run a read submitted with io_submit() asynchronously: the
# crypto request is started with a completion callback and io_submit returns at once
# (-EIOCBQUEUED inside the kernel), and the completion arrives as an io_event. An asynchronous
# kernel driver (virtio_crypto, ccp, qat) therefore holds as many requests as were submitted,
# in its queue, at once; a synchronous one (AES-NI, generic) completes each inside io_submit,
# and what we save there is system calls (one io_submit and one io_getevents per batch).
#
# One operation socket per request in flight, never two requests on one socket: the request
# data (TX scatterlist) and the IV belong to the socket, and the kernel's crypto request reads
# the socket's IV when the driver processes it, which for a queued request is after the next
# sendmsg on the same socket would have replaced it. Sockets are accepted from the op's keyed
# transform socket (the key is the transform's; accept() is cheap) as depth demands.
_AIO_SYSCALLS = {  # io_setup, io_destroy, io_getevents, io_submit
    "x86_64": (206, 207, 208, 209),
    "aarch64": (0, 1, 4, 2),
}
_IOCB_CMD_PREAD = 0


class _IoCb(ctypes.Structure):  # struct iocb (linux/aio_abi.h), little-endian layout
    _fields_ = [("aio_data", ctypes.c_uint64), ("aio_key", ctypes.c_uint32),
                ("aio_rw_flags", ctypes.c_int32), ("aio_lio_opcode", ctypes.c_uint16),
                ("aio_reqprio", ctypes.c_int16), ("aio_fildes", ctypes.c_uint32),
                ("aio_buf", ctypes.c_uint64), ("aio_nbytes", ctypes.c_uint64),
                ("aio_offset", ctypes.c_int64), ("aio_reserved2", ctypes.c_uint64),
                ("aio_flags", ctypes.c_uint32), ("aio_resfd", ctypes.c_uint32)]


class _IoEvent(ctypes.Structure):  # struct io_event
    _fields_ = [("data", ctypes.c_uint64), ("obj", ctypes.c_uint64),
                ("res", ctypes.c_int64), ("res2", ctypes.c_int64)]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def aio_unavailable() -> str | None:
    """None if native AIO can be used from here, else why not."""
    if platform.machine() not in _AIO_SYSCALLS:
        return f"no AIO system call numbers known for {platform.machine()}"
    return None


class _Slot:
    """One operation socket of an AioQueue and its own iocb, filled in once: a request only
    sets the read length (and the buffer when it grows). The per-request ctypes work (a
    memset, six fields, a new pointer, a list search for the slot's index) was a large part
    of what a request cost at depth 32 in the VM lane's guest (docs/performance.md)."""

    __slots__ = ("sock", "buf", "ticket", "skip", "want", "request", "index", "iocb", "ptr")

    def __init__(self, sock: socket.socket, index: int, iocb: _IoCb):
        self.sock = sock
        self.buf = ctypes.create_string_buffer(0)
        self.ticket = -1
        self.skip = self.want = 0
        self.request: tuple | None = None
        self.index = index
        self.iocb = iocb  # a view into the queue's iocb array: stays where io_submit reads it
        self.ptr = ctypes.pointer(iocb)
        ctypes.memset(ctypes.byref(iocb), 0, ctypes.sizeof(_IoCb))
        iocb.aio_data = index
        iocb.aio_lio_opcode = _IOCB_CMD_PREAD
        self.attach()

    def attach(self) -> None:
        """Point the iocb at the current socket and buffer (after either changed)."""
        self.iocb.aio_fildes = self.sock.fileno()
        self.iocb.aio_buf = ctypes.addressof(self.buf)


class AioQueue:
    """Up to ``depth`` requests of one keyed AF_ALG transform in the kernel at once.

    ``submit`` takes requests ``(ticket, op_code, iv, parts, assoclen, outlen, skip)``: what
    one sendmsg_afalg carries, the bytes to read back and how many of them to drop (the AAD
    region the kernel repeats). Requests beyond the depth wait here and go in as slots free.
    ``collect`` returns ``(ticket, payload, error)`` in completion order; a request's own
    failure (EBADMSG: AuthenticationError; EINVAL/EMSGSIZE: InvalidInput) is its error, while
    any other failure raises DriverFailure (the queue is then unusable: the dispatcher moves
    the session and resubmits what it had not collected).
    """

    def __init__(self, op: _Op, depth: int = 32):
        why = aio_unavailable()
        if why:
            raise AfAlgUnavailable(why)
        self.name = op.name
        self.depth = depth
        # Lowered when the kernel refuses a request for a full queue: af_alg starts AIO
        # requests without CRYPTO_TFM_REQ_MAY_BACKLOG, so a driver queue shorter than our
        # depth (a crypto_engine's qlen) answers ENOSPC/EBUSY instead of holding it.
        self.limit = depth
        self._op = op
        self._setup, self._destroy, self._getevents, self._submit = \
            _AIO_SYSCALLS[platform.machine()]
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long
        self._ctx = ctypes.c_ulong(0)
        if self._libc.syscall(ctypes.c_long(self._setup), ctypes.c_long(depth),
                              ctypes.byref(self._ctx)) < 0:
            err = ctypes.get_errno()
            raise DriverFailure(f"{self.name}: io_setup({depth}) failed: {_errname(err)}")
        self._slots: list[_Slot] = []
        self._free: list[_Slot] = []
        self._busy: dict[int, _Slot] = {}  # slot index (aio_data) -> slot
        self._backlog: deque = deque()
        self._done: list[tuple[int, bytes | None, Exception | None]] = []
        self._iocbs = (_IoCb * depth)()
        self._iocbpp = (ctypes.POINTER(_IoCb) * depth)()
        self._events = (_IoEvent * depth)()
        self.broken = False

    @property
    def in_flight(self) -> int:
        return len(self._busy) + len(self._backlog)

    def _slot(self) -> _Slot | None:
        if len(self._busy) >= self.limit:
            return None
        if self._free:
            return self._free.pop()
        if len(self._slots) < self.depth:
            index = len(self._slots)
            slot = _Slot(self._op._accept(), index, self._iocbs[index])
            self._slots.append(slot)
            return slot
        return None

    def submit(self, requests) -> None:
        self._backlog.extend(requests)
        self._push()

    def reject(self, ticket: int, error: Exception | None, result: bytes | None = None) -> None:
        """Complete a request without the kernel: its own error found before sending (a bad
        IV), or a result known without work (an empty cipher request)."""
        self._done.append((ticket, result, error))

    def _push(self) -> None:
        """Send as many waiting requests as there are free slots, then one io_submit."""
        if self.broken:
            raise DriverFailure(f"{self.name}: AIO queue failed earlier")
        n = 0
        iocbpp, busy = self._iocbpp, self._busy
        backlog = self._backlog
        while backlog:
            slot = self._slot()
            if slot is None:
                break
            request = backlog.popleft()
            ticket, op_code, iv, parts, assoclen, outlen, skip = request
            try:
                slot.sock.sendmsg_afalg(parts, op=op_code, iv=iv, assoclen=assoclen)
            except OSError as exc:
                self._free.append(self._fresh(slot))
                self._done.append((ticket, None, self._request_error(exc, "send")))
                continue
            if len(slot.buf) < outlen:
                slot.buf = ctypes.create_string_buffer(max(outlen, 2 * len(slot.buf)))
                slot.attach()
            slot.ticket, slot.skip, slot.want, slot.request = ticket, skip, outlen, request
            slot.iocb.aio_nbytes = outlen
            iocbpp[n] = slot.ptr
            busy[slot.index] = slot
            n += 1
        if not n:
            return
        got = self._libc.syscall(ctypes.c_long(self._submit), self._ctx, ctypes.c_long(n),
                                 iocbpp)
        if got != n:
            self.broken = True
            err = ctypes.get_errno() if got < 0 else 0
            raise DriverFailure(f"{self.name}: io_submit took {got} of {n} requests"
                                + (f": {_errname(err)}" if err else ""))

    def collect(self, wait: bool = True, timeout: float | None = None
                ) -> list[tuple[int, bytes | None, Exception | None]]:
        """Completions available now; with ``wait`` at least one if any is in flight.
        ``timeout``: raise DriverFailure if a wait finds nothing within it (a lost request)."""
        if self._backlog:
            self._push()
        out, self._done = self._done, []
        while self._busy:
            # Completions in batches: a wait takes at least half of what is in flight (at
            # least one), so a full queue costs one io_getevents, one pass back through the
            # session and one io_submit of the refills per several requests instead of per
            # request, while the other half keeps the device busy (what interrupt coalescing
            # does for a NIC). Nothing waits longer than the requests ahead of it take.
            min_nr = max(1, len(self._busy) // 2) if wait and not out else 0
            self._harvest(out, min_nr, timeout)
            if self._backlog:
                self._push()
            if out or not wait:
                break
            out, self._done = out + self._done, []
        return out

    def _harvest(self, out: list, min_nr: int, timeout: float | None) -> None:
        if timeout is not None and min_nr:
            ts = _Timespec(int(timeout), int((timeout % 1) * 1e9))
        elif min_nr:
            ts = None  # block
        else:
            ts = _Timespec(0, 0)
        tsp = ctypes.byref(ts) if ts is not None else None
        while True:
            got = self._libc.syscall(ctypes.c_long(self._getevents), self._ctx,
                                     ctypes.c_long(min_nr), ctypes.c_long(self.depth),
                                     self._events, tsp)
            if got >= 0:
                break
            err = ctypes.get_errno()
            if err != errno.EINTR:
                self.broken = True
                raise DriverFailure(f"{self.name}: io_getevents failed: {_errname(err)}")
        if min_nr and not got:  # a timed wait that saw nothing: a request was lost
            self.broken = True
            raise DriverFailure(f"{self.name}: no completion within {timeout:g} s "
                                f"({len(self._busy)} requests in flight)")
        for i in range(got):
            ev = self._events[i]
            slot = self._busy.pop(ev.data)
            res = ev.res
            if res in (-errno.ENOSPC, -errno.EBUSY) and self._busy:
                # the driver's queue is full (see ``limit``): run it again once others left
                self.limit = max(1, len(self._busy))
                self._backlog.appendleft(slot.request)
                self._free.append(slot)
                continue
            if res < 0:
                error = self._request_error(OSError(-res, os.strerror(-res)), "request")
                if not isinstance(error, (AuthenticationError, InvalidInput)):
                    self.broken = True
                    raise error
                if isinstance(error, InvalidInput):
                    slot = self._fresh(slot)
                out.append((slot.ticket, None, error))
            elif res < slot.want and not (slot.want == 1 and res == 0):
                self.broken = True
                raise DriverFailure(f"{self.name}: short AIO read ({res} of {slot.want})")
            else:
                out.append((slot.ticket, ctypes.string_at(
                    ctypes.addressof(slot.buf) + slot.skip, max(res - slot.skip, 0)), None))
            self._free.append(slot)

    def _request_error(self, exc: OSError, what: str) -> Exception:
        if exc.errno == errno.EBADMSG:
            return AuthenticationError(f"{self.name}: authentication failed (EBADMSG)")
        if exc.errno in (errno.EINVAL, errno.EMSGSIZE):
            return InvalidInput(f"{self.name}: kernel rejected the {what}: "
                                f"{_errname(exc.errno)} ({exc.strerror})")
        return DriverFailure(f"{self.name}: asynchronous {what} failed: "
                             f"{_errname(exc.errno)} ({exc.strerror})")

    def _fresh(self, slot: _Slot) -> _Slot:
        """A slot whose socket may hold a half-sent request gets a new operation socket."""
        try:
            slot.sock.close()
        finally:
            slot.sock = self._op._accept()
            slot.attach()
        return slot

    def close(self) -> None:
        """Wait for what is in flight (io_destroy does), then release the sockets."""
        if self._ctx.value:
            self._libc.syscall(ctypes.c_long(self._destroy), self._ctx)
            self._ctx = ctypes.c_ulong(0)
        for slot in self._slots:
            slot.sock.close()
        self._slots.clear()
        self._free.clear()
        self._busy.clear()
        self._backlog.clear()

    # request builders, the same layout as AeadOp.seal/open and SkcipherOp._run
    @staticmethod
    def aead_request(op: AeadOp, ticket: int, encrypt: bool, iv: bytes, payload: bytes,
                     aad: bytes):
        if op.iv_in_aad:
            n = len(aad) + len(iv)
            parts = [aad, iv, payload]
        else:
            n = len(aad)
            parts = [aad, payload]
        op._check(n + len(payload))
        if encrypt:
            return (ticket, ALG_OP_ENCRYPT, iv, parts, n, n + len(payload) + op.authsize, n)
        if len(payload) < op.authsize:
            raise AuthenticationError(f"{op.name}: input shorter than the "
                                      f"{op.authsize}-byte tag")
        # never a zero-length read (see AeadOp.open: the kernel would skip the request)
        return (ticket, ALG_OP_DECRYPT, iv, parts, n, n + len(payload) - op.authsize or 1, n)

    @staticmethod
    def skcipher_request(op: SkcipherOp, ticket: int, encrypt: bool, iv: bytes, data: bytes):
        if len(data) > op.max_request:
            raise InvalidInput(f"{op.name}: {len(data)} bytes exceed the AF_ALG request "
                               f"limit of {op.max_request}")
        return (ticket, ALG_OP_ENCRYPT if encrypt else ALG_OP_DECRYPT, iv, [data], 0,
                len(data), 0)
