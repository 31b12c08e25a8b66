"""What the daemon's parts share: the engine, the dataplane, the config, the event loop, the
daemon's counters and the control socket's event feed, handed to each part as one object (the
daemon's IkeContext, ike/context.py's shape), so that no part calls back into IkeDaemon.

Set at construction: config, engine, dataplane, dispatcher, stats. Set by IkeDaemon.start():
loop, stopped, control. ``service`` is the engine pump's flush (iked/pump.py): every part that
calls into the engine calls it afterwards, so the engine's datagrams, events and timer go out.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ocfpy.crypto.errors import OcfError

if TYPE_CHECKING:
    from ocfpy.esp.dataplane.base import Dataplane
    from ocfpy.ike.config import IkeConfig
    from ocfpy.iked.control import ControlServer


class DaemonError(OcfError):
    """The daemon cannot start (port in use, nothing to listen on...); the message says why."""


def _not_started() -> None:
    raise RuntimeError("the daemon's engine pump is not wired yet")


@dataclass(eq=False)
class DaemonContext:
    config: IkeConfig
    engine: Any
    dataplane: Dataplane
    dispatcher: Any = None
    #: the daemon's own counters (`sa stats` "daemon"): datagrams, drops, installs, events
    stats: Counter[str] = field(default_factory=Counter)
    loop: asyncio.AbstractEventLoop | None = None
    stopped: asyncio.Event | None = None
    control: ControlServer | None = None
    service: Callable[[], None] = _not_started

    def now(self) -> float:
        """The engine's clock: the loop's (time.monotonic() too, also before start())."""
        return self.loop.time() if self.loop is not None else time.monotonic()

    def stopping(self) -> bool:
        """Not started, or stop() was called: nothing new is initiated then."""
        return self.stopped is None or self.stopped.is_set()

    def sa_list(self) -> list[dict]:
        """The engine's SAs as `sa list` shows them; [] if the engine fails to say (a report
        must not take the daemon down)."""
        try:
            return self.engine.sa_list()
        except Exception:
            return []

    def publish(self, kind: str, **fields: Any) -> None:
        """One event for `ocfpy sa monitor` subscribers (never waits: see ControlServer)."""
        if self.control is not None and self.control.subscribers:
            self.control.publish({"event": kind, "time": round(time.time(), 3), **fields})

    def elsewhere(self, callback: Callable[[Any], Any], arg: Any) -> bool:
        """Dataplane callbacks may come from a worker-reader thread: hand them to the event
        loop's thread. True if the call was passed on (or there is no loop: dropped), False
        if the caller is already on the loop and should go on."""
        loop = self.loop
        if loop is None:
            return True
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop:
            loop.call_soon_threadsafe(callback, arg)
            return True
        return False

