"""sd_notify(3), spoken natively: the daemon's side of a `Type=notify` unit.

The protocol is one datagram of newline-separated ``KEY=VALUE`` assignments sent to the
AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace).
python-systemd would do this too; one sendto() does not justify a C extension as a dependency.
Without ``$NOTIFY_SOCKET`` (not started by systemd) every call is a no-op that returns False,
so the daemon calls these unconditionally.

The states we send (sd_notify(3), systemd.service(5)):

- ``READY=1``: start-up is finished (sockets bound, config loaded); systemd then considers the
  unit started and `systemctl start` returns.
- ``RELOADING=1`` + ``MONOTONIC_USEC=``: a reload began (``Type=notify-reload`` requires the
  timestamp, and plain ``notify`` accepts it); READY=1 again ends it.
- ``STOPPING=1``: shutdown began.
- ``STATUS=...``: a one-line status shown by `systemctl status`.
- ``WATCHDOG=1``: keep-alive; with ``WatchdogSec=`` set, systemd passes ``$WATCHDOG_USEC``
  (and ``$WATCHDOG_PID``) and kills the service when no ping arrives within that interval.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from ocfpy.crypto.errors import OcfError

__all__ = ["Notifier", "NotifyError", "status_line", "unit_text", "watchdog_interval"]


class NotifyError(OcfError, ValueError):
    """$NOTIFY_SOCKET names something that is not a usable socket address."""


def _address(value: str) -> str | bytes:
    """$NOTIFY_SOCKET -> an AF_UNIX address. '@name' is the abstract namespace (a leading NUL
    byte, sd_notify(3)); anything else must be an absolute path."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    # systemd >= 254 may also hand out vsock:CID:PORT (for VMs); we do not run in one.
    raise NotifyError(f"NOTIFY_SOCKET={value!r}: not an absolute path or @abstract name")


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds within which systemd expects WATCHDOG=1, or None when the watchdog is off or not
    ours. Like sd_watchdog_enabled(3): $WATCHDOG_USEC must be a positive integer, and when
    $WATCHDOG_PID is set it must be our pid (a child that inherited the environment must not
    ping on its parent's behalf)."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    wpid = env.get("WATCHDOG_PID")
    if wpid:
        try:
            if int(wpid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return value / 1_000_000


class Notifier:
    """The notify socket of this process. Build it once at start-up (``Notifier.from_env()``);
    every method returns whether a datagram was sent."""

    def __init__(self, address: str | bytes | None, watchdog: float | None = None):
        self.address = address
        #: seconds between the deadlines systemd enforces; ping at half of it (sd_watchdog_enabled(3))
        self.watchdog = watchdog

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, unset: bool = True) -> Notifier:
        """Read $NOTIFY_SOCKET and the watchdog variables. With ``unset`` (the default, as
        sd_notify's unset_environment) they are removed from os.environ so that processes we
        spawn (charon in the lab, a helper) do not talk to systemd as if they were us."""
        source = os.environ if env is None else env
        raw = source.get("NOTIFY_SOCKET") or None
        notifier = cls(_address(raw) if raw else None, watchdog_interval(source))
        if unset and env is None:
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(name, None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_period(self) -> float | None:
        """How often to send WATCHDOG=1: half the interval, as systemd recommends."""
        return None if self.watchdog is None else self.watchdog / 2

    def notify(self, **fields: str | int) -> bool:
        """Send one datagram of KEY=VALUE lines (keys upper-cased). A failure to send is not
        fatal (systemd may be restarting): it returns False."""
        if self.address is None or not fields:
            return False
        lines = []
        for key, value in fields.items():
            text = str(value)
            if "\n" in text:  # one assignment per line: a newline would forge another key
                text = text.replace("\n", " ")
            lines.append(f"{key.upper()}={text}")
        payload = ("\n".join(lines) + "\n").encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, self.address)
        except OSError:
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) finished."""
        return self.notify(READY=1, **({"STATUS": status} if status else {}))

    def reloading(self, status: str | None = None) -> bool:
        """A reload began; MONOTONIC_USEC is CLOCK_MONOTONIC in microseconds (systemd.service(5),
        Type=notify-reload)."""
        fields: dict[str, str | int] = {"RELOADING": 1,
                                        "MONOTONIC_USEC": time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}
        if status:
            fields["STATUS"] = status
        return self.notify(**fields)

    def stopping(self, status: str | None = None) -> bool:
        return self.notify(STOPPING=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def watchdog_ping(self) -> bool:
        """WATCHDOG=1; only when systemd asked for it (sending it otherwise is harmless, but
        it would be noise)."""
        if self.watchdog is None:
            return False
        return self.notify(WATCHDOG=1)

    async def run_watchdog(self) -> None:
        """Ping every half interval until cancelled: run it as an asyncio task next to the
        event loop's work, so that a wedged loop (the thing the watchdog exists to catch) stops
        the pings."""
        import asyncio

        period = self.watchdog_period
        if period is None or not self.enabled:
            return
        while True:
            self.watchdog_ping()
            await asyncio.sleep(period)


def status_line(ike_up: int, child_up: int, connections: int, half_open: int = 0) -> str:
    """The STATUS= text: what `systemctl status` shows under the unit."""
    text = f"{ike_up} IKE_SA(s), {child_up} CHILD_SA(s) up; {connections} connection(s) loaded"
    if half_open:
        text += f"; {half_open} half-open"
    return text


# -- the unit file -----------------------------------------------------------------------------
UNIT_NAME = "ocfpy-iked.service"
_TEMPLATE_EXEC = "/usr/local/bin/ocfpy"
_TEMPLATE_CONFIG = "/etc/ocfpy/iked.toml"


def unit_text(executable: str | None = None, config: str | None = None) -> str:
    """The shipped unit (package data ocfpy/iked/ocfpy-iked.service) with ExecStart naming
    this installation's `ocfpy` (pip puts it in /usr/local/bin, a venv's bin/ or ~/.local/bin,
    and systemd needs the absolute path) and, if given, another config file."""
    import shutil
    import sys
    from importlib.resources import files
    from pathlib import Path

    text = (files("ocfpy.iked") / UNIT_NAME).read_text(encoding="utf-8")
    if executable is None:
        beside = Path(sys.executable).parent / "ocfpy"  # the script of this interpreter's env
        found = str(beside) if beside.exists() else shutil.which("ocfpy")
        executable = found or f"{sys.executable} -m ocfpy"
    if not executable.startswith("/"):
        raise NotifyError(f"ExecStart needs an absolute path, got {executable!r}")
    text = text.replace(f"ExecStart={_TEMPLATE_EXEC} ", f"ExecStart={executable} ")
    if config:
        text = text.replace(f"--config {_TEMPLATE_CONFIG}", f"--config {config}")
    return text


def main(argv: list[str] | None = None) -> int:
    """``python -m ocfpy.iked.systemd unit [--ocfpy PATH] [--config FILE]``: print the unit,
    for ``> /etc/systemd/system/ocfpy-iked.service``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m ocfpy.iked.systemd",
                                description="Print the systemd unit of the IKE daemon.")
    p.add_argument("what", choices=["unit"])
    p.add_argument("--ocfpy", metavar="PATH", help="the ocfpy executable (default: this one's)")
    p.add_argument("--config", metavar="FILE", help=f"config file (default {_TEMPLATE_CONFIG})")
    args = p.parse_args(argv)
    try:
        print(unit_text(args.ocfpy, args.config), end="")
    except NotifyError as exc:
        p.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
