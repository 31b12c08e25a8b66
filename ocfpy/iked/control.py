"""The daemon's control socket: JSON lines over a unix socket (what vici is to charon).

One request per line, one answer per line, in order; a client may send several on one
connection::

    {"cmd": "list"}                                -> {"ok": true, "result": [...]}
    {"cmd": "initiate", "name": "home", "wait": 5} -> {"ok": true, "result": {...}}
    {"cmd": "terminate", "name": "home"}
    {"cmd": "why", "name": "home"}                 -> {"ok": true, "result": "...or null"}
    {"cmd": "stats"} / {"cmd": "drivers"}
    {"cmd": "subscribe"}                           -> {"ok": true, "result": {"queue": 256}}
                                                      then one event object per line
    anything wrong                                 -> {"ok": false, "error": "reason"}

A subscription turns its connection into a stream of the daemon's events (`ocfpy sa monitor`,
like vici's event registration). Each subscriber has a bounded queue: the daemon only ever
puts into it without waiting, and an event that does not fit is dropped and counted (the next
event delivered carries ``"dropped": N``, the subscriber's total so far), so a slow or
vanished subscriber never blocks the daemon.

The server knows nothing of IKE: it maps a command name to a handler the daemon gives it. The
socket is created mode 0600 (it can start and stop tunnels), in a directory made 0700 if it
has to create it. A client that sends garbage gets an error line, never takes the daemon down.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ocfpy.crypto.errors import OcfError

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024  # a request is a few hundred bytes; refuse anything absurd
SUBSCRIBER_QUEUE = 256  # events buffered per subscriber before new ones are dropped
DEFAULT_PATH = "/run/ocfpy/iked.sock"

Handler = Callable[[dict[str, Any]], Any | Awaitable[Any]]


class ControlError(OcfError):
    """A request the daemon refused, or a daemon that could not be reached. The message says why."""


class CommandError(ControlError):
    """Raised by a handler: the request was understood but cannot be done (unknown name...)."""


class _Subscriber:
    __slots__ = ("queue", "dropped", "writer")

    def __init__(self, size: int, writer: asyncio.StreamWriter):
        self.queue: asyncio.Queue[dict | None] = asyncio.Queue(size)
        self.dropped = 0
        self.writer = writer


class ControlServer:
    def __init__(self, path: str | Path, handlers: Mapping[str, Handler], *,
                 queue_size: int = SUBSCRIBER_QUEUE):
        self.path = Path(path)
        self.handlers = dict(handlers)
        self._server: asyncio.AbstractServer | None = None
        self.requests = 0
        self.bad_requests = 0
        self.queue_size = queue_size
        self.subscribers: list[_Subscriber] = []
        self.events_dropped = 0  # over all subscribers, for `ocfpy sa stats`

    async def start(self) -> None:
        directory = self.path.parent
        if not directory.exists():
            directory.mkdir(parents=True, mode=0o700)
        _check_directory(directory)
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise ControlError(f"{self.path} exists and is not a socket: refusing to "
                                   "replace it")
            if _is_live(self.path):
                raise ControlError(f"{self.path}: another daemon is listening there "
                                   "(stop it, or give this one --control PATH)")
            self.path.unlink()  # left behind by a daemon that died
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=str(self.path),
                                                           limit=MAX_LINE)
        finally:
            os.umask(old)
        log.info("control socket at %s", self.path)

    def publish(self, event: dict[str, Any]) -> None:
        """Queue an event for every subscriber, never waiting: a full queue drops it."""
        for sub in self.subscribers:
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.dropped += 1
                self.events_dropped += 1

    async def close(self) -> None:
        # subscribers get what is queued (the daemon's last events), briefly, then the end
        for sub in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(None)
        for _ in range(20):
            if not self.subscribers:
                break
            await asyncio.sleep(0.05)
        for sub in list(self.subscribers):
            sub.writer.close()  # a subscriber that does not read: its drain() fails now
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._reply(writer, {"ok": False, "error":
                                               f"request longer than {MAX_LINE} bytes"})
                    break
                if not line:
                    break
                if _is_subscribe(line):
                    self.requests += 1
                    await self._reply(writer, {"ok": True, "result": {"queue": self.queue_size}})
                    await self._stream(reader, writer)
                    break
                answer = await self.handle_line(line)
                await self._reply(writer, answer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Write the subscriber's events until it goes away (EOF) or the server closes."""
        sub = _Subscriber(self.queue_size, writer)
        self.subscribers.append(sub)
        gone = asyncio.ensure_future(reader.read())  # a subscriber sends nothing: EOF = gone
        try:
            while True:
                get = asyncio.ensure_future(sub.queue.get())
                done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    return
                event = get.result()
                if event is None:  # the server is closing
                    return
                if sub.dropped:
                    event = {**event, "dropped": sub.dropped}
                writer.write(json.dumps(event, default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            gone.cancel()
            self.subscribers.remove(sub)

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, answer: dict) -> None:
        writer.write(json.dumps(answer, default=str).encode() + b"\n")
        await writer.drain()

    async def handle_line(self, line: bytes) -> dict[str, Any]:
        """One request line -> one answer (exposed for tests and in-process callers)."""
        self.requests += 1
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # deep nesting
            self.bad_requests += 1
            return {"ok": False, "error": f"not a JSON request: {exc}"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            self.bad_requests += 1
            return {"ok": False, "error": 'a request is a JSON object with a "cmd" string'}
        handler = self.handlers.get(request["cmd"])
        if handler is None:
            self.bad_requests += 1
            return {"ok": False, "error": f"unknown command {request['cmd']!r}; commands: "
                    + ", ".join(sorted(self.handlers))}
        try:
            result = handler(request)
            if inspect.isawaitable(result):
                result = await result
        except CommandError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a handler bug must not kill the daemon; say it happened
            log.exception("control command %s failed", request["cmd"])
            return {"ok": False, "error": f"internal error in {request['cmd']}: "
                    f"{type(exc).__name__}: {exc}"}
        return {"ok": True, "result": result}


def _is_subscribe(line: bytes) -> bool:
    try:
        request = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(request, dict) and request.get("cmd") == "subscribe"


def _is_live(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _check_directory(directory: Path) -> None:
    """Whoever can write the socket's directory can replace the socket and take the
    commands meant for us (or feed answers to `ocfpy sa`): it must be ours and writable by
    nobody else (issue 13 finding 9). Refuse to start otherwise, saying why."""
    st = directory.stat()
    euid = os.geteuid()
    if st.st_uid != euid:
        raise ControlError(f"control socket directory {directory} is owned by uid {st.st_uid}, "
                           f"not by this daemon's user (uid {euid}): refusing to serve there "
                           "(chown it, or give --control a directory of ours)")
    writable = st.st_mode & 0o022
    if writable:
        who = {0o022: "group and others", 0o020: "group", 0o002: "others"}[writable]
        raise ControlError(f"control socket directory {directory} is writable by {who} "
                           f"(mode {stat.S_IMODE(st.st_mode):04o}): refusing to serve there "
                           "(chmod go-w it)")


class ControlClient:
    """Blocking client for the CLI and the tests: ``ControlClient(path).call("list")``."""

    def __init__(self, path: str | Path = DEFAULT_PATH, timeout: float = 10.0):
        self.path = str(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect(self.path)
            except FileNotFoundError:
                s.close()
                raise ControlError(f"no daemon control socket at {self.path} (is `ocfpy iked` "
                                   "running? its --control PATH?)") from None
            except OSError as exc:
                s.close()
                raise ControlError(f"cannot reach the daemon at {self.path}: "
                                   f"{exc.strerror or exc}") from None
            self._sock = s
        return self._sock

    def call(self, cmd: str, *, timeout: float | None = None, **params: Any) -> Any:
        """Send one command and return its result; ControlError with the daemon's reason if not ok."""
        sock = self._connect()
        if timeout is not None:
            sock.settimeout(timeout)
        request = {"cmd": cmd, **{k: v for k, v in params.items() if v is not None}}
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            while b"\n" not in self._buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ControlError("the daemon closed the control connection")
                self._buffer += chunk
        except TimeoutError:
            self.close()
            raise ControlError(f"no answer from the daemon within {sock.gettimeout()} s") from None
        except OSError as exc:
            self.close()
            raise ControlError(f"control connection failed: {exc.strerror or exc}") from None
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise ControlError(answer.get("error", "the daemon refused without a reason"))
        return answer.get("result")

    def events(self) -> Iterator[dict[str, Any]]:
        """Subscribe, then yield the daemon's events as they come (no timeout between them).
        Ends when the daemon closes the stream (after a "shutdown" event when it stops);
        ControlError if the connection fails."""
        self.call("subscribe")
        sock = self._connect()
        sock.settimeout(None)
        while True:
            while b"\n" not in self._buffer:
                try:
                    chunk = sock.recv(65536)
                except OSError as exc:
                    self.close()
                    raise ControlError(f"event stream failed: {exc.strerror or exc}") from None
                if not chunk:
                    return
                self._buffer += chunk
            line, _, self._buffer = self._buffer.partition(b"\n")
            yield json.loads(line)
