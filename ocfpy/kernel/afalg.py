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

import errno
import logging
import os
import socket
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

