"""Control commands that wait for the engine (`sa initiate --wait`): each waiter is a matcher
over engine events and a future that the first verdict resolves. The table holds one entry
per `sa initiate --wait` in progress on the control socket (local, never reachable from the
network); each leaves when it is answered or times out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ocfpy.ike.events import Event

Matcher = Callable[[Event], Any]


class Waiters:
    def __init__(self) -> None:
        self.pending: list[tuple[Matcher, asyncio.Future]] = []

    def add(self, match: Matcher, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
        """A future that ``match(event)`` resolves with the first non-None verdict."""
        fut = loop.create_future()
        self.pending.append((match, fut))
        return fut

    def discard(self, fut: asyncio.Future) -> None:
        # edited in place (one list for the daemon's life); resolve() iterates over a copy
        self.pending[:] = [w for w in self.pending if w[1] is not fut]

    def resolve(self, event: Event) -> None:
        for match, fut in list(self.pending):
            if not fut.done():
                verdict = match(event)
                if verdict is not None:
                    fut.set_result(verdict)

    def fail_all(self, exc: BaseException) -> None:
        for _, fut in self.pending:
            if not fut.done():
                fut.set_exception(exc)
