"""Where the daemon's log goes, and how much of it, per subsystem.

Targets (``[daemon.log] target``):

- ``stderr``: the foreground default, and so the journal's input under systemd. When stderr
  *is* the journal ($JOURNAL_STREAM matches fd 2, systemd.exec(5)), lines carry a ``<N>``
  syslog priority prefix (sd-daemon(3)) instead of a timestamp: journald stamps them itself
  and `journalctl -p warning` then works.
- ``syslog``: the detached default: /dev/log, facility ``daemon``, ident ``ocfpy-iked``.
- ``file``: appended to ``file``; reopened when logrotate moves it (WatchedFileHandler).
- ``auto`` (the default): ``file`` when ``file`` is set, else stderr in the foreground and
  syslog when detached.

Levels, as strongSwan charon's filelog (strongswan.conf(5) ``charon.filelog.<name>.<subsys>``),
0-4 per subsystem, -1 = silent, ``default`` for everything not named:

====  =========================================  ======================
 -1   nothing                                     (above CRITICAL)
  0   audit: SA up/down, failures, warnings       AUDIT (25) and above
  1   control flow (the default)                  INFO
  2   details                                     DEBUG
  3   raw dumps (messages in hex)                 RAW (5)
  4   the same as 3                                RAW (5)
====  =========================================  ======================

charon's level 4 adds key material to its dumps. ocfpy has no such level: **no secret is logged
at any level** (the key classes' repr() is "<secret>", and tests/unit/iked/test_logsetup.py
scans a debug log of a full IKE exchange for every key of it). A filter that redacts things
that look like keys would hide the bug that logged them, so there is none.

Each subsystem maps onto the Python loggers below (module loggers are named after their
module, so the layers' packages are the natural subsystems); a level set on ``ike`` is set on
``logging.getLogger("ocfpy.ike")`` and so on. One line per event: a message (or a traceback)
with newlines is folded onto one line.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ocfpy.crypto.errors import OcfError

__all__ = ["AUDIT", "RAW", "SUBSYSTEMS", "LogOptions", "LogSetupError",
           "check", "configure", "log_schema", "python_level", "subsystem_of"]

#: between INFO and WARNING: SA up/down, the events level 0 keeps (charon's level 0)
AUDIT = 25
#: below DEBUG: raw message dumps (charon's level 3)
RAW = 5
logging.addLevelName(AUDIT, "AUDIT")
logging.addLevelName(RAW, "RAW")

#: subsystem -> the Python loggers it governs. The names are charon's where charon has one.
SUBSYSTEMS: dict[str, tuple[str, ...]] = {
    "ike": ("ocfpy.ike",),
    "esp": ("ocfpy.esp",),
    "crypto": ("ocfpy.crypto", "ocfpy.kernel", "ocfpy.plugins"),
    "device": ("ocfpy.crypto.devices", "ocfpy.drivers"),
    "cfg": ("ocfpy.iked.configfile", "ocfpy.iked.cfg"),
    "net": ("ocfpy.iked.net",),
    "ctl": ("ocfpy.iked.control",),
}
#: the tag printed in each line (charon prints [IKE], [ESP], [CFG], [NET] ...)
_TAGS = {name: name.upper() for name in SUBSYSTEMS} | {"device": "DEV"}

_LEVELS = {-1: logging.CRITICAL + 10, 0: AUDIT, 1: logging.INFO, 2: logging.DEBUG, 3: RAW, 4: RAW}
DEFAULT_LEVEL = 1
TARGETS = ("auto", "stderr", "syslog", "file")
FACILITIES = ("daemon", "user", "auth", "authpriv", *(f"local{i}" for i in range(8)))
SYSLOG_SOCKET = "/dev/log"


class LogSetupError(OcfError, OSError):
    """The log target cannot be opened (no /dev/log, a file we may not write)."""


def python_level(level: int) -> int:
    """charon level (-1..4) -> Python logging level."""
    if level not in _LEVELS:
        raise ValueError(f"log level must be -1..4, got {level}")
    return _LEVELS[level]


def subsystem_of(logger_name: str) -> str | None:
    """The subsystem whose logger prefix is the longest match for logger_name."""
    best, best_len = None, -1
    for subsys, prefixes in SUBSYSTEMS.items():
        for p in prefixes:
            if (logger_name == p or logger_name.startswith(p + ".")) and len(p) > best_len:
                best, best_len = subsys, len(p)
    return best


def log_schema():
    """The ``[daemon.log]`` table for ocfpy.iked.configfile (file:line: key: reason errors)."""
    from ocfpy.iked.configfile import Table, choice, integer, nonempty_string

    level = integer(-1, 4)
    return Table({"target": choice(*TARGETS), "file": nonempty_string,
                  "syslog_facility": choice(*FACILITIES), "default": level,
                  **{name: level for name in SUBSYSTEMS}})


@dataclass
class LogOptions:
    """``[daemon.log]``, checked (log_schema()); the command line's -v/--log-file apply on top."""

    target: str = "auto"
    file: str | None = None
    syslog_facility: str = "daemon"
    default: int = DEFAULT_LEVEL
    levels: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_table(cls, table: Mapping[str, Any] | None) -> LogOptions:
        """From the checked ``[daemon.log]`` table (a dict as the config loader returns it)."""
        t = dict(table or {})
        levels = {name: t.pop(name) for name in list(t) if name in SUBSYSTEMS}
        return cls(levels=levels, **t)

    def resolve_target(self, foreground: bool) -> str:
        if self.target != "auto":
            return self.target
        if self.file:
            return "file"
        return "stderr" if foreground else "syslog"

    def level_of(self, subsystem: str, verbosity: int = 0) -> int:
        """The charon level of a subsystem. -v/-vv/-vvv raise every subsystem to at least
        1/2/3 (info, debug, raw), as `ocfpy -v` means elsewhere; they never lower one."""
        level = self.levels.get(subsystem, self.default)
        if verbosity > 0:
            level = max(level, min(verbosity, 3))
        return level


class OneLineFormatter(logging.Formatter):
    """``time [TAG] logger: message`` on one line: newlines in the message or a traceback are
    folded to " | ", so that grep, syslog and the journal see one event per line."""

    def __init__(self, timestamps: bool = True, priority_prefix: bool = False):
        super().__init__("%(asctime)s " if timestamps else "")
        self.timestamps = timestamps
        self.priority_prefix = priority_prefix

    def format(self, record: logging.LogRecord) -> str:
        subsys = subsystem_of(record.name)
        tag = _TAGS.get(subsys, "DMN") if subsys else (
            "DMN" if record.name.startswith("ocfpy") else "LIB")
        text = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text = f"{text} | {record.exc_text}"
        if record.stack_info:
            text = f"{text} | {self.formatStack(record.stack_info)}"
        text = " | ".join(part for part in text.splitlines() if part.strip())
        level = "" if record.levelno in (logging.INFO, AUDIT) else f"{record.levelname} "
        line = f"[{tag}] {level}{record.name}: {text}"
        if self.timestamps:
            line = f"{self.formatTime(record)} {line}"
        if self.priority_prefix:
            line = f"<{_syslog_priority(record.levelno)}>{line}"
        return line


def _syslog_priority(levelno: int) -> int:
    # syslog(3) severities: 2 crit, 3 err, 4 warning, 5 notice, 6 info, 7 debug
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= AUDIT:
        return 5
    if levelno >= logging.INFO:
        return 6
    return 7


def stderr_is_journal(env: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """$JOURNAL_STREAM is "device:inode" of the stream systemd connected to the journal; it
    is only ours if fd still is that stream (systemd.exec(5))."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def _handler(target: str, options: LogOptions, stream=None) -> logging.Handler:
    if target == "stderr":
        journal = stream is None and stderr_is_journal()
        handler: logging.Handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(OneLineFormatter(timestamps=not journal, priority_prefix=journal))
        return handler
    if target == "syslog":
        if not os.path.exists(SYSLOG_SOCKET):
            raise LogSetupError(f"cannot log to syslog: {SYSLOG_SOCKET} does not exist (no "
                                "syslog daemon or journald here); use --log-file or "
                                "[daemon.log] file, or --foreground")
        facility = logging.handlers.SysLogHandler.facility_names[options.syslog_facility]
        try:
            handler = logging.handlers.SysLogHandler(SYSLOG_SOCKET, facility)
        except OSError as exc:
            raise LogSetupError(f"cannot log to syslog at {SYSLOG_SOCKET}: "
                                f"{exc.strerror or exc}") from None
        handler.ident = f"ocfpy-iked[{os.getpid()}]: "
        handler.setFormatter(OneLineFormatter(timestamps=False))  # syslog stamps the time
        return handler
    if target == "file":
        if not options.file:
            raise LogSetupError("[daemon.log] target = \"file\" needs file = \"/path\"")
        try:
            handler = logging.handlers.WatchedFileHandler(options.file, encoding="utf-8")
        except OSError as exc:
            raise LogSetupError(f"cannot log to {options.file}: {exc.strerror or exc}") from None
        handler.setFormatter(OneLineFormatter())
        return handler
    raise LogSetupError(f"unknown log target {target!r} (one of {', '.join(TARGETS)})")


_installed: list[logging.Handler] = []


def _effective(options: LogOptions | None, log_file: str | None) -> LogOptions:
    options = options or LogOptions()
    if log_file:  # --log-file wins over the config's target
        options = LogOptions(target="file", file=log_file, syslog_facility=options.syslog_facility,
                             default=options.default, levels=dict(options.levels))
    return options


def check(options: LogOptions | None = None, *, foreground: bool = True,
          log_file: str | None = None) -> str:
    """Open and close the target configure() would use, in the process that still has a
    terminal (before detaching), so that "no /dev/log" or an unwritable file is a start-up
    error on stderr, not a silent daemon. Returns the target's name."""
    options = _effective(options, log_file)
    target = options.resolve_target(foreground)
    _handler(target, options, stream=sys.stderr).close()
    return target


def configure(options: LogOptions | None = None, *, foreground: bool = True,
              verbosity: int = 0, log_file: str | None = None, stream=None) -> logging.Handler:
    """Install the daemon's log handler on the root logger (replacing any earlier one, and
    logging.basicConfig's) and set each subsystem's level. ``log_file`` (--log-file) wins
    over the config's target. Call it in the process that serves (after a fork: a syslog
    socket is per process) and again on reload. Returns the handler."""
    options = _effective(options, log_file)
    handler = _handler(options.resolve_target(foreground), options, stream)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        if h in _installed:
            h.close()
    _installed[:] = [handler]
    root.addHandler(handler)
    # The root passes through the default level (third-party libraries and loggers outside
    # every subsystem); each subsystem's logger carries its own.
    root.setLevel(python_level(options.level_of("default", verbosity)))
    for name, prefixes in SUBSYSTEMS.items():
        level = python_level(options.level_of(name, verbosity))
        for p in prefixes:
            logging.getLogger(p).setLevel(level)
    # device (ocfpy.crypto.devices) sits under crypto's ocfpy.crypto: set after it, it wins.
    return handler
