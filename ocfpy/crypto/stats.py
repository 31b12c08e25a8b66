"""Counters kept by every session and, summed, by every driver."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class Counters:
    ops: int = 0
    bytes: int = 0
    errors: int = 0  # driver failures (not authentication failures, which are the peer's fault)
    auth_failures: int = 0
    migrations: int = 0
    batches: int = 0
    time_ns: int = 0  # accounted for batch calls; single ops are too short to time cheaply

    def add(self, other: Counters) -> None:
        self.ops += other.ops
        self.bytes += other.bytes
        self.errors += other.errors
        self.auth_failures += other.auth_failures
        self.migrations += other.migrations
        self.batches += other.batches
        self.time_ns += other.time_ns

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
