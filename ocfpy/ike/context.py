"""What an IKE SA and its tasks may reach beyond their own state: the collaborators the engine
owns, handed to every SA as one object, so that an SA never calls back into the engine.

Randomness (nonces, SPIs, NAT-D fakes, rekey jitter, IV-less padding) comes from one callable,
``IkeContext.random``. Its default is ``os.urandom``: the kernel CSPRNG, which is where Linux
hardware RNGs already feed, so routing it through crypto drivers would add a hop and no
entropy. It stays injectable because deterministic tests need a seeded source."""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ocfpy.ike.config import DaemonOptions
from ocfpy.ike.connections import Connections
from ocfpy.ike.credentials import Credentials
from ocfpy.ike.events import Addr, Event, NegotiationFailed
from ocfpy.ike.sa_table import SaTable
from ocfpy.ike.spi import SpiAllocator


class Outbox:
    """Everything that leaves the sans-I/O core: datagrams, events, counters, and the last
    failure per connection (``why``)."""

    __slots__ = ("datagrams", "events", "stats", "why")

    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, Addr, Addr]] = []
        self.events: deque[Event] = deque()
        self.stats: Counter[str] = Counter()
        self.why: dict[str, str] = {}

    def send(self, raw: bytes, local: Addr, remote: Addr) -> None:
        self.stats["sent"] += 1
        self.datagrams.append((raw, local, remote))

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def count(self, what: str) -> None:
        self.stats[what] += 1

    def record_failure(self, name: str, notify: int | None, explanation: str) -> None:
        self.why[name] = explanation
        self.stats["negotiation_failures"] += 1
        self.emit(NegotiationFailed(name, notify, explanation))


@dataclass(eq=False, slots=True)
class IkeContext:
    dispatcher: object
    options: DaemonOptions
    random: Callable[[int], bytes]
    out: Outbox
    table: SaTable
    spis: SpiAllocator
    connections: Connections
    credentials: Credentials
    sha1: object  # a hashsha1 session (NAT-D hashes, RFC 7296 2.23)
    _child_ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def next_child_id(self) -> int:
        return next(self._child_ids)
