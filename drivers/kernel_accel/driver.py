"""One HARDWARE driver per detected accelerator whose kernel driver registered algorithms ocfpy
can use, reaching exactly those implementations (by kernel driver name) through a transport."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

from ocfpy.crypto.catalogue import Primitive, Transform
from ocfpy.crypto.catalogue import get as get_transform
from ocfpy.crypto.devices import discovery, hotplug
from ocfpy.crypto.devices.discovery import FoundDevice
from ocfpy.crypto.devices.hotplug import HotplugMonitor
from ocfpy.crypto.driver import Context, DeviceInfo, Driver, DriverKind, Offer
from ocfpy.crypto.errors import DriverUnavailable, Reason, Unsupported

from . import contexts as c
from .transport import AfAlgTransport, Transport

log = logging.getLogger(__name__)

ContextFactory = Callable[[Transform, "bytes | None", Transport, str, c.DirectRunner], Context]

# Kernel drivers known to lose a request in flight when their device goes (measured: Linux 6.1
# virtio_crypto frees it unanswered on hot-unplug); their requests run under a deadline.
LOSES_REQUESTS = frozenset({"virtio_crypto"})
DEFAULT_DEADLINE = float(os.environ.get("OCFPY_ACCEL_DEADLINE", "5"))

# (kernel algorithm name, primitive) -> the context that speaks IKE/ESP on top of it.
CONTEXTS: dict[tuple[str, Primitive], ContextFactory] = {
    ("cbc(aes)", Primitive.CIPHER): c.CbcContext,
    ("rfc3686(ctr(aes))", Primitive.CIPHER): c.CtrContext,
    ("rfc4106(gcm(aes))", Primitive.AEAD): c.EspAeadContext,
    ("rfc7539esp(chacha20,poly1305)", Primitive.AEAD): c.EspAeadContext,
    ("gcm(aes)", Primitive.AEAD): c.GcmContext,
    ("xcbc(aes)", Primitive.INTEG): c.MacContextOnHash,
    ("cmac(aes)", Primitive.PRF): c.CmacPrfContext,
    **{(f"hmac({h})", Primitive.INTEG): c.MacContextOnHash
       for h in ("sha1", "sha256", "sha384", "sha512")},
    **{(f"hmac({h})", Primitive.PRF): c.HmacPrfContext
       for h in ("sha1", "sha256", "sha384", "sha512")},
    **{(h, Primitive.HASH): c.HashContextOnHash for h in ("sha1", "sha256", "sha384", "sha512")},
}


class KernelAccelDriver(Driver):
    """A detected accelerator, served through its kernel driver's registered algorithms."""

    kind = DriverKind.HARDWARE

    def __init__(self, device: FoundDevice, transport: Transport | None = None, *,
                 check_sysfs: bool = True, monitor: HotplugMonitor | None = None,
                 guarded: bool | None = None, deadline: float = DEFAULT_DEADLINE):
        self.found = device
        self._monitor = monitor
        self.guarded = device.kernel_driver in LOSES_REQUESTS if guarded is None else guarded
        self.deadline = deadline
        self._on_gone: Callable[[str], None] | None = None
        self.transport = transport or AfAlgTransport()
        self.name = f"{device.kernel_driver}@{device.address}"
        self.description = (f"{device.family.name} {device.device_id} via the kernel driver "
                            f"{device.kernel_driver} over {self.transport.name}")
        self.device = DeviceInfo(
            sys_path=device.record.sys_path, pci_id=device.record.pci_id,
            kernel_driver=device.kernel_driver, description=device.family.name,
            extra={"family": device.family.key, "transport": self.transport.name,
                   "address": device.address},
        )
        self.presence = c.Presence(self.name)
        self._check_sysfs = check_sysfs
        # keyword -> (kernel algorithm, context factory), for what we can actually implement
        self._serving: dict[str, tuple[discovery.CryptoAlg, ContextFactory]] = {}
        for keyword, alg in device.usable.items():
            factory = CONTEXTS.get((alg.name, get_transform(keyword).primitive))
            if factory is not None:
                self._serving[keyword] = (alg, factory)

    def probe(self) -> None:
        why = self.transport.unavailable()
        if why:
            raise DriverUnavailable(f"{self.found.summary()}; but the {self.transport.name} "
                                    f"transport is unavailable: {why}")
        if self._check_sysfs and not os.path.exists(self.device.sys_path):  # type: ignore[union-attr]
            raise DriverUnavailable(f"{self.device.sys_path} is gone")  # type: ignore[union-attr]
        if not self._serving:
            raise DriverUnavailable(f"{self.found.summary()}; none of it is implemented here")

    def offers(self) -> list[Offer]:
        return [Offer(k, f"{alg.driver} (priority {alg.priority}) on {self.found.address} "
                         f"via {self.transport.name}")
                for k, (alg, _) in self._serving.items()]

    def new_context(self, transform: Transform, key: bytes | None) -> Context:
        entry = self._serving.get(transform.keyword)
        if entry is None:
            raise Unsupported(transform.keyword, Reason.NOT_OFFERED, self.name)
        self.presence.enter()  # a gone device opens nothing: DriverFailure
        alg, factory = entry
        runner = (c.GuardedRunner(self.presence, self.deadline, self._give_up) if self.guarded
                  else c.DirectRunner(self.presence, self._give_up))
        return factory(transform, key, self.transport, alg.driver, runner)

    def _give_up(self, reason: str) -> None:
        """A request failed or got no answer: treat the device as gone; every session moves."""
        if self.presence.gone:
            return
        log.error("%s: %s; giving the device up", self.name, reason)
        self.presence.depart(reason)
        if self._on_gone is not None:
            self._on_gone(reason)

    @property
    def monitor(self) -> HotplugMonitor:
        return self._monitor or hotplug.shared()

    def watch(self, on_gone: Callable[[str], None]) -> None:
        def gone(reason: str) -> None:
            self.presence.depart(reason)  # first: requests in flight now fail, not lie
            on_gone(reason)

        self._on_gone = on_gone
        self.monitor.watch_removal(self.device.sys_path, gone)  # type: ignore[union-attr]

    def close(self) -> None:
        self.monitor.unwatch(self.device.sys_path)  # type: ignore[union-attr]


def detect(transport: Transport | None = None,
           records: Iterable[discovery.DeviceRecord] | None = None,
           algorithms: list[discovery.CryptoAlg] | None = None, *,
           check_sysfs: bool = True, monitor: HotplugMonitor | None = None) -> list[Driver]:
    """The ``ocfpy.drivers`` factory: one driver per usable accelerator present.

    Raises DriverUnavailable with the reason when there is none, so `ocfpy drivers` can say
    what was found and why it is not used.
    """
    devices = discovery.discover(records, algorithms)
    usable = [d for d in devices if d.is_usable]
    if not usable:
        if not devices:
            raise DriverUnavailable(
                f"no known crypto accelerator present (checked PCI and platform devices against "
                f"{sum(len(f.ids) for f in discovery.KNOWN)} known IDs; `ocfpy devices` lists them)")
        raise DriverUnavailable("no usable accelerator: " + "; ".join(d.summary() for d in devices))
    transport = transport or AfAlgTransport()
    return [KernelAccelDriver(d, transport, check_sysfs=check_sysfs, monitor=monitor)
            for d in usable]


# Tells ocfpy.crypto.devices.hotplug.attach() to call this factory again when a device is bound.
detect.ocfpy_hotplug = True  # type: ignore[attr-defined]
