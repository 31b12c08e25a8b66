"""The driver registry: loads every ``ocfpy.drivers`` entry point and admits drivers.

stevedore's ExtensionManager finds the entry points (ours are registered exactly like a third
party's). A driver that fails to import, construct or probe is listed *unavailable* with the
reason; one that fails a known-answer test for an algorithm has that algorithm *quarantined*
(the whole driver, if nothing passes). Nothing here raises for a bad driver.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from . import selftest
from .catalogue import Transform
from .catalogue import get as get_transform
from .driver import Driver, DriverKind, Offer
from .errors import DriverUnavailable, UnknownAlgorithm
from .stats import Counters

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger(__name__)

NAMESPACE = "ocfpy.drivers"


class DriverStatus(StrEnum):
    """Where a driver stands in admission (what `ocfpy drivers` shows in its status column)."""

    ACTIVE = "active"
    QUARANTINED = "quarantined"
    UNAVAILABLE = "unavailable"
    GONE = "gone"  # was active; its device disappeared or it was unregistered


@dataclass
class DriverRecord:
    name: str
    kind: DriverKind | None
    status: DriverStatus
    reason: str = ""
    driver: Driver | None = None
    entry_point: str = ""
    admitted: dict[str, Offer] = field(default_factory=dict)
    quarantined: dict[str, str] = field(default_factory=dict)  # keyword -> reason
    closed: Counters = field(default_factory=Counters)  # totals of closed sessions
    sessions: weakref.WeakSet[Session] = field(default_factory=weakref.WeakSet)
    order: int = 0

    def serves(self, transform: Transform) -> bool:
        return self.status is DriverStatus.ACTIVE and transform.keyword in self.admitted

    def counters(self) -> Counters:
        total = Counters()
        total.add(self.closed)
        for s in list(self.sessions):
            total.add(Counters(**s.counters()))
        return total

    def as_dict(self) -> dict:
        d = self.driver
        return {
            "name": self.name,
            "kind": str(self.kind) if self.kind else None,
            "status": self.status.value,
            "reason": self.reason,
            "entry_point": self.entry_point,
            "description": d.description if d else "",
            "device": (vars(d.device) if d and d.device else None),
            "algorithms": sorted(self.admitted),
            "implementations": {k: o.implementation for k, o in sorted(self.admitted.items())
                                if o.implementation},
            "quarantined": dict(sorted(self.quarantined.items())),
            "sessions": len(self.sessions),
            "counters": self.counters().as_dict(),
        }


Listener = Callable[[str, DriverRecord], None]  # ("added" | "removed", record)
LoadFailure = Callable[[str, str, BaseException], None]  # (name, "module:attr", exception)


def load_factories(namespace: str = NAMESPACE, *, on_failure: LoadFailure | None = None
                   ) -> list[tuple[str, Callable, str]]:
    """(name, factory, "module:attr") for every entry point of the group, by name.

    The one place entry points are read (stevedore's ExtensionManager): the registry at load
    and hot-plug rescans (ocfpy.crypto.devices.hotplug) must see the same drivers. An entry
    point that fails to import goes to ``on_failure``; without one it is logged as a warning,
    never dropped silently.
    """
    from stevedore import ExtensionManager

    def failed(_manager, entry_point, exc) -> None:
        if on_failure is not None:
            on_failure(entry_point.name, str(entry_point.value), exc)
        else:
            log.warning("driver entry point %s (%s) failed to load: %s", entry_point.name,
                        entry_point.value, _describe(exc))

    manager = ExtensionManager(namespace, invoke_on_load=False, on_load_failure_callback=failed)
    return [(e.name, e.plugin, str(e.entry_point.value))
            for e in sorted(manager.extensions, key=lambda e: e.name)]


class Registry:
    """Drivers known to this process, and their admission state."""

    def __init__(self, *, run_selftests: bool = True):
        self._records: dict[str, DriverRecord] = {}
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._run_selftests = run_selftests
        self._order = 0
        self.generation = 0  # bumped on every change of any driver's state (for caches)

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, namespace: str = NAMESPACE, *, run_selftests: bool = True) -> Registry:
        """Every driver registered through the entry point group, probed and self-tested."""
        registry = cls(run_selftests=run_selftests)

        def failed(name: str, value: str, exc: BaseException) -> None:
            registry._unavailable(name, f"import failed: {_describe(exc)}", value)

        for name, factory, value in load_factories(namespace, on_failure=failed):
            registry.add_factory(name, factory, value)
        return registry

    @classmethod
    def from_drivers(cls, drivers: Iterable[Driver], *, run_selftests: bool = True) -> Registry:
        """A registry built in memory (tests, embedding), like stevedore's make_test_instance."""
        registry = cls(run_selftests=run_selftests)
        for d in drivers:
            registry.add(d)
        return registry

    def add_factory(self, name: str, factory: Callable, entry_point: str = "") -> list[DriverRecord]:
        try:
            made = factory()
        except DriverUnavailable as exc:
            return [self._unavailable(name, str(exc), entry_point)]
        except Exception as exc:  # a broken third-party driver must not take us down
            log.warning("driver %s failed to construct: %s (traceback with -vv)", name, exc)
            log.debug("driver %s construction traceback", name, exc_info=True)
            return [self._unavailable(name, f"construction failed: {_describe(exc)}", entry_point)]
        drivers = [made] if isinstance(made, Driver) else list(made or [])
        if not drivers:
            return [self._unavailable(name, "no device found", entry_point)]
        return [self.add(d, entry_point=entry_point) for d in drivers]

    def add(self, driver: Driver, *, entry_point: str = "") -> DriverRecord:
        """Probe, self-test and admit one driver; listeners hear of it if it becomes active."""
        name = driver.name or type(driver).__name__
        record = DriverRecord(name, driver.kind, DriverStatus.UNAVAILABLE, driver=driver,
                              entry_point=entry_point)
        try:
            driver.probe()
            offers = {get_transform(o.keyword).keyword: o for o in driver.offers()}
        except DriverUnavailable as exc:
            record.reason = str(exc)
        except UnknownAlgorithm as exc:
            record.reason = f"offers an algorithm ocfpy does not know: {exc}"
        except Exception as exc:
            log.warning("driver %s failed to probe: %s (traceback with -vv)", name, exc)
            log.debug("driver %s probe traceback", name, exc_info=True)
            record.reason = f"probe failed: {_describe(exc)}"
        else:
            if self._run_selftests:
                failures = selftest.run(driver, list(offers))
            else:
                failures = {}
            record.quarantined = failures
            record.admitted = {k: o for k, o in offers.items() if k not in failures}
            if record.admitted:
                record.status = DriverStatus.ACTIVE
                if failures:
                    record.reason = f"{len(failures)} algorithm(s) quarantined"
            elif failures:
                record.status = DriverStatus.QUARANTINED
                record.reason = "every algorithm failed its known-answer test: " + "; ".join(
                    f"{k}: {v}" for k, v in sorted(failures.items())[:3])
            else:
                record.reason = "offers no algorithm"
        with self._lock:
            self._order += 1
            record.order = self._order
            self._records[name] = record
            self.generation += 1
        if record.status is DriverStatus.ACTIVE:
            log.info("driver %s (%s) active with %d algorithms", name, driver.kind,
                     len(record.admitted))
            driver.watch(lambda reason, n=name: self.remove(n, reason))
            self._notify("added", record)
        else:
            log.info("driver %s %s: %s", name, record.status.value, record.reason)
        return record

    def _unavailable(self, name: str, reason: str, entry_point: str) -> DriverRecord:
        record = DriverRecord(name, None, DriverStatus.UNAVAILABLE, reason, entry_point=entry_point)
        with self._lock:
            self._order += 1
            record.order = self._order
            self._records[name] = record
            self.generation += 1
        log.info("driver %s unavailable: %s", name, reason)
        return record

    # -- run time --------------------------------------------------------------------------
    def remove(self, name: str, reason: str) -> None:
        """The driver is gone (device unplugged, unregistered): its sessions must move."""
        with self._lock:
            record = self._records.get(name)
            if record is None or record.status is not DriverStatus.ACTIVE:
                return
            record.status = DriverStatus.GONE
            record.reason = reason
            self.generation += 1
        log.warning("driver %s gone: %s", name, reason)
        self._notify("removed", record)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _notify(self, event: str, record: DriverRecord) -> None:
        for listener in list(self._listeners):
            listener(event, record)

    # -- queries ---------------------------------------------------------------------------
    def records(self) -> list[DriverRecord]:
        with self._lock:
            return sorted(self._records.values(), key=lambda r: r.order)

    def get(self, name: str) -> DriverRecord | None:
        return self._records.get(name)

    def active(self) -> list[DriverRecord]:
        return [r for r in self.records() if r.status is DriverStatus.ACTIVE]

    def names(self) -> list[str]:
        return [r.name for r in self.records()]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
