"""Hot-plug: udev events turned into registry changes.

One monitor thread per process listens to udev (pyudev) on the pci, virtio and platform
buses. Two things use it:

* removal: a driver's ``watch(on_gone)`` registers its device's sys_path; an ``unbind`` or
  ``remove`` of that device or of anything below it (the virtio child first, then the PCI
  function) calls ``on_gone(reason)`` once. The registry then marks the driver gone and the
  dispatcher moves its sessions (registry.remove -> dispatcher._on_registry_event).
* arrival: `attach(registry)` makes every ``bind`` of a known accelerator re-run the
  hot-pluggable driver factories (those marked ``ocfpy_hotplug = True``, e.g.
  ocfpy.drivers.kernel_accel:detect) and ``registry.add`` each driver that is not already
  active, so new sessions land on the new device.

`HotplugMonitor.handle(event)` is where the monitor thread delivers events; tests and tools
can deliver recorded ones there too (the same seam as ocfpy.crypto.devices.discovery's device records).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import discovery

if TYPE_CHECKING:
    from ..registry import Registry

log = logging.getLogger(__name__)

SUBSYSTEMS = ("pci", "virtio", "platform")
GONE_ACTIONS = ("unbind", "remove")


@dataclass(frozen=True)
class HotplugEvent:
    action: str  # add, bind, unbind, remove, change
    sys_path: str
    subsystem: str
    driver: str = ""
    record: discovery.DeviceRecord | None = None  # for add/bind of a known device
    when: float = field(default_factory=time.time, compare=False)

    def describe(self) -> str:
        fam = discovery.family_for(self.record) if self.record else None
        what = f"{fam.name} " if fam else ""
        drv = f" ({self.driver})" if self.driver else ""
        return f"{self.action} {what}{self.subsystem} {self.sys_path}{drv}"


Listener = Callable[[HotplugEvent], None]


class HotplugMonitor:
    def __init__(self, *, context: Any = None, source: str | None = None,
                 subsystems: Iterable[str] = SUBSYSTEMS, autostart: bool = True):
        self._context = context
        self.autostart = autostart  # False: events arrive only through handle() (tests, tools)
        # udev's re-broadcast carries the properties udev computed; without udevd (a minimal
        # guest) the kernel's own uevents still say add/bind/unbind/remove.
        self.source = source or ("udev" if Path("/run/udev/control").exists() else "kernel")
        self.subsystems = tuple(subsystems)
        self._watches: dict[str, list[Callable[[str], None]]] = {}
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: str = ""

    # -- registration ------------------------------------------------------------------------
    def watch_removal(self, sys_path: str, on_gone: Callable[[str], None]) -> None:
        with self._lock:
            self._watches.setdefault(sys_path.rstrip("/"), []).append(on_gone)
        if self.autostart:
            self.start()

    def unwatch(self, sys_path: str) -> None:
        with self._lock:
            self._watches.pop(sys_path.rstrip("/"), None)

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)
        if self.autostart:
            self.start()

    def unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    # -- the seam ----------------------------------------------------------------------------
    def handle(self, event: HotplugEvent) -> None:
        """Deliver one event: removal callbacks first, then listeners."""
        if event.action in GONE_ACTIONS:
            path = event.sys_path.rstrip("/")
            with self._lock:
                hits = [p for p in self._watches if path == p or path.startswith(p + "/")]
                callbacks = [(p, cb) for p in hits for cb in self._watches.pop(p)]
            for watched, cb in callbacks:
                reason = f"{event.action} of {event.sys_path}" + (
                    f" ({event.driver})" if event.driver else "")
                log.warning("device %s gone: %s", watched, reason)
                try:
                    cb(reason)
                except Exception:  # one bad callback must not stop the others
                    log.exception("hot-unplug callback for %s failed", watched)
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("hot-plug listener failed on %s", event.describe())

    # -- the thread --------------------------------------------------------------------------
    def start(self, wait: float = 2.0) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._ready.clear()
            self._thread = threading.Thread(target=self._run, name="ocfpy-hotplug", daemon=True)
            self._thread.start()
        self._ready.wait(wait)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self.error

    def _run(self) -> None:
        try:
            import pyudev

            context = self._context or pyudev.Context()
            monitor = pyudev.Monitor.from_netlink(context, source=self.source)
            for subsystem in self.subsystems:
                monitor.filter_by(subsystem)
            monitor.start()
        except Exception as exc:  # no netlink (container), no permission for kernel source
            self.error = f"cannot listen to {self.source} events: {type(exc).__name__}: {exc}"
            log.error("hot-plug monitor: %s", self.error)
            self._ready.set()
            return
        self._ready.set()
        log.info("hot-plug monitor listening to %s events on %s", self.source,
                 ", ".join(self.subsystems))
        while not self._stop.is_set():
            try:
                device = monitor.poll(timeout=0.5)
            except Exception:
                log.exception("hot-plug monitor poll failed")
                time.sleep(0.5)
                continue
            if device is None:
                continue
            self.handle(_event_from(device))


def _event_from(device: Any) -> HotplugEvent:
    action = device.action or ""
    record = None
    if action in ("add", "bind", "change"):
        try:
            base = device
            if device.subsystem == "virtio" and device.parent is not None:
                base = device.parent  # the accelerator is the PCI function above it
            record = discovery.DeviceRecord.from_pyudev(base)
        except Exception:
            log.debug("cannot record %s", device.sys_path, exc_info=True)
    driver = device.properties.get("DRIVER", "") or (device.driver or "")
    return HotplugEvent(action, device.sys_path, device.subsystem or "", driver, record)


_shared: HotplugMonitor | None = None
_shared_lock = threading.Lock()


def shared() -> HotplugMonitor:
    """The process-wide monitor (started on first use)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = HotplugMonitor()
        return _shared


# -- arrival -----------------------------------------------------------------------------------
class Attachment:
    """Adds drivers for devices that appear (see `attach`)."""

    def __init__(self, registry: Registry, factories: dict[str, Callable[[], Any]],
                 monitor: HotplugMonitor, settle: float = 3.0):
        self.registry = registry
        self.factories = factories
        self.monitor = monitor
        self.settle = settle  # how long a bound device may take to register its algorithms
        self.added: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, event: HotplugEvent) -> None:
        if event.action != "bind" or event.record is None:
            return
        if discovery.family_for(event.record) is None:
            return
        deadline = time.monotonic() + self.settle
        while True:
            new = self.rescan()
            if new or time.monotonic() >= deadline:
                return
            time.sleep(0.2)

    def rescan(self) -> list[str]:
        """Run the hot-pluggable factories; add what is not active yet. Returns new names."""
        from ..driver import Driver
        from ..errors import DriverUnavailable
        from ..registry import DriverStatus

        new: list[str] = []
        with self._lock:
            for name, factory in self.factories.items():
                try:
                    made = factory()
                except DriverUnavailable as exc:  # the usual answer: no device of its kind yet
                    log.debug("hot-plug rescan: %s: %s", name, exc)
                    continue
                except Exception:  # a broken factory must not stop the others; say so
                    log.warning("hot-plug rescan: factory %s failed", name, exc_info=True)
                    continue
                drivers = [made] if isinstance(made, Driver) else list(made or [])
                for driver in drivers:
                    current = self.registry.get(driver.name)
                    if current is not None and current.status is DriverStatus.ACTIVE:
                        continue
                    record = self.registry.add(driver, entry_point=f"{name} (hot-plug)")
                    if record.status is DriverStatus.ACTIVE:
                        log.warning("driver %s added: device appeared", driver.name)
                        new.append(driver.name)
                        self.added.append(driver.name)
        return new

    def detach(self) -> None:
        self.monitor.unsubscribe(self)


def hotplug_factories(namespace: str | None = None) -> dict[str, Callable[[], Any]]:
    """Entry-point factories that declare themselves hot-pluggable, read like the registry
    reads them (one that fails to import is logged there)."""
    from ..registry import NAMESPACE, load_factories

    return {name: factory for name, factory, _ in load_factories(namespace or NAMESPACE)
            if getattr(factory, "ocfpy_hotplug", False)}


def attach(registry: Registry, factories: dict[str, Callable[[], Any]] | None = None,
           monitor: HotplugMonitor | None = None) -> Attachment:
    """Make devices that appear from now on become active drivers in ``registry``."""
    monitor = monitor or shared()
    attachment = Attachment(registry, hotplug_factories() if factories is None else factories,
                            monitor)
    monitor.subscribe(attachment)
    return attachment
