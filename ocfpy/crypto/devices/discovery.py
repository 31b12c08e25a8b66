"""Finding crypto accelerators: which devices are present, which kernel driver holds them, and
what that driver registered with the kernel crypto API.

Three sources, joined here:
  * a table of known accelerator families (`KNOWN`), keyed by PCI vendor:device or device-tree
    ``compatible`` string, with the kernel driver each binds and how its algorithms are named
    in /proc/crypto (collected from the kernel's own ID tables and algorithm definitions);
  * device records (`DeviceRecord`): what udev says about one device. `enumerate_records()`
    reads them from the running system through pyudev; tests and bug reports feed recorded
    ones instead (`load_records()`), because pyudev always reads the real /sys (it ignores
    SYSFS_PATH and rejects a fake tree), so the table can only be exercised through this seam;
  * /proc/crypto (`read_proc_crypto()`), the kernel's list of registered algorithms.

`discover(records, algorithms)` joins them into `FoundDevice`s, each either usable (its kernel
driver registered algorithms ocfpy can use) or not, with the reason in words a person can act
on ("0 algorithms registered: firmware not loaded", "no kernel driver bound"). It only reads;
the drivers in ocfpy.drivers.* decide what to build from it.

One fact shapes everything downstream: the kernel crypto API names algorithms per *kernel
driver*, not per device. Two QAT cards behind one qat_c62x driver register one `qat_aes_cbc`,
and the kernel spreads requests across them. So "the algorithms of a device" means those of its
kernel driver, and reaching "exactly this device" through AF_ALG means reaching this driver.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..catalogue import all_transforms
from ..catalogue import get as get_transform
from . import proc_crypto
from .proc_crypto import CryptoAlg

log = logging.getLogger(__name__)

PROC_CRYPTO = str(proc_crypto.PROC_CRYPTO)

# Attributes worth recording per device: enough to match, to explain, and to replay in a test.
_RECORDED_ATTRIBUTES = (
    "vendor", "device", "class", "subsystem_vendor", "subsystem_device", "revision",
    "modalias", "numa_node", "sriov_numvfs", "sriov_totalvfs",
    "qat/state", "qat/cfg_services",  # QAT (Linux 6.x): "up"/"down", "sym;asym"/"dc"
)
_RECORDED_PROPERTIES = (
    "DEVPATH", "SUBSYSTEM", "DRIVER", "MODALIAS", "PCI_ID", "PCI_SUBSYS_ID", "PCI_SLOT_NAME",
    "PCI_CLASS", "OF_NAME", "OF_FULLNAME", "OF_COMPATIBLE_N", "ID_VENDOR_FROM_DATABASE",
    "ID_MODEL_FROM_DATABASE",
)


# --------------------------------------------------------------------------------------------
# The table of known accelerators
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AcceleratorFamily:
    """One family of crypto accelerators and how Linux drives it."""

    key: str  # short stable name, e.g. "qat-c62x"
    vendor: str
    model: str
    bus: str  # "pci" or "platform"
    ids: tuple[str, ...]  # PCI "vvvv:dddd" (lower case) or device-tree compatible strings
    kernel_drivers: tuple[str, ...]  # the bus driver name as it appears in sysfs/udev DRIVER=
    module: str  # the module that provides the driver doing the crypto (what to modprobe)
    crypto_driver: str  # regex on /proc/crypto "driver" names this family registers
    crypto_modules: tuple[str, ...] = ()  # /proc/crypto "module" values, when built as modules
    child_subsystem: str = ""  # the device's functional child (virtio) carries the real driver
    virtual_function: bool = False
    crypto_engine: bool = True  # False: the device has no crypto API engine at all
    when_empty: str = ""  # the likely reason a bound driver registered nothing
    notes: str = ""

    @property
    def name(self) -> str:
        return f"{self.vendor} {self.model}"


_QAT_EMPTY = ("firmware not loaded or the device is not up: check `dmesg | grep -i qat`, "
              "/lib/firmware/{fw} and the device's qat/state in sysfs")
_QAT_GEN4_EMPTY = ("firmware not loaded, or the device is configured for compression only: "
                   "check `dmesg | grep -i qat`, /lib/firmware/{fw} and the device's "
                   "qat/cfg_services in sysfs (needs sym)")
_QAT_RE = r"^qat[_-]"
_VF_EMPTY = ("a virtual function registers algorithms only once its physical function is up "
             "and SR-IOV is enabled on the host")


def _qat(model: str, pf: str, vf: str | None, drv: str, fw: str, gen4: bool = False
         ) -> list[AcceleratorFamily]:
    empty = (_QAT_GEN4_EMPTY if gen4 else _QAT_EMPTY).format(fw=fw)
    out = [AcceleratorFamily(
        f"qat-{model}", "Intel", f"QAT {model}", "pci", (f"8086:{pf}",), (drv,),
        f"qat_{'c62x' if drv == 'c6xx' else drv}", _QAT_RE, ("intel_qat",), when_empty=empty,
    )]
    if vf:
        # Gen 4 VFs have no in-tree kernel driver: they are meant for vfio-pci (a guest, QATlib).
        vf_drivers = (f"{drv}vf",) if not gen4 else ()
        vf_module = f"qat_{'c62x' if drv == 'c6xx' else drv}vf" if not gen4 else ""
        out.append(AcceleratorFamily(
            f"qat-{model}-vf", "Intel", f"QAT {model} virtual function", "pci", (f"8086:{vf}",),
            vf_drivers, vf_module, _QAT_RE, ("intel_qat",), virtual_function=True,
            when_empty=_VF_EMPTY,
            notes="" if not gen4 else "no in-kernel driver: gen 4 VFs are used through vfio-pci",
        ))
    return out


_CCP_EMPTY = ("the ccp-crypto module, which registers the CCP's algorithms with the crypto "
              "API, is not loaded (modprobe ccp-crypto)")
_PSP_ONLY = ("this is the Platform Security Processor function only (SEV/TEE); it has no "
             "cryptographic coprocessor queues and registers no algorithms")


def _ccp(device: str, model: str, engine: bool) -> AcceleratorFamily:
    return AcceleratorFamily(
        f"amd-ccp-{device}", "AMD", model, "pci", (f"1022:{device}",), ("ccp",), "ccp",
        r"-ccp$", ("ccp_crypto",), crypto_engine=engine,
        when_empty=_CCP_EMPTY if engine else _PSP_ONLY,
    )


# Sources: drivers/crypto/virtio/virtio_crypto_core.c and _skcipher_algs.c; drivers/crypto/
# intel/qat/qat_common/adf_accel_devices.h, qat_*/adf_drv.c and qat_algs.c; drivers/crypto/
# ccp/sp-pci.c (dev_vdata: which IDs carry a CCP engine) and ccp-crypto-*.c; drivers/crypto/
# hisilicon/{sec2,hpre,zip}; drivers/crypto/caam (caam + caam_jr, algorithms "*-caam").
KNOWN: tuple[AcceleratorFamily, ...] = (
    AcceleratorFamily(
        "virtio-crypto", "QEMU/virtio", "virtio-crypto", "pci", ("1af4:1054",), ("virtio-pci",),
        "virtio_crypto", r"^virtio[_-]crypto", ("virtio_crypto",), child_subsystem="virtio",
        when_empty="the virtio_crypto driver is bound but registered nothing: the host's "
                   "cryptodev backend offers no service this kernel supports",
        notes="the PCI function binds virtio-pci; its virtio child binds virtio_crypto",
    ),
    *_qat("dh895xcc", "0435", "0443", "dh895xcc", "qat_895xcc.bin"),
    *_qat("c62x", "37c8", "37c9", "c6xx", "qat_c62x.bin"),
    *_qat("c3xxx", "19e2", "19e3", "c3xxx", "qat_c3xxx.bin"),
    *_qat("4xxx", "4940", "4941", "4xxx", "qat_4xxx.bin", gen4=True),
    *_qat("401xx", "4942", "4943", "4xxx", "qat_4xxx.bin", gen4=True),
    *_qat("402xx", "4944", "4945", "4xxx", "qat_402xx.bin", gen4=True),
    *_qat("420xx", "4946", "4947", "420xx", "qat_420xx.bin", gen4=True),
    _ccp("1537", "CCP v3", True),
    _ccp("1456", "CCP v5a + PSP (EPYC Naples)", True),
    _ccp("1468", "CCP v5b (EPYC, CCP only)", True),
    _ccp("1486", "CCP v5a + PSP (EPYC Rome/Milan)", True),
    _ccp("15df", "CCP v5a + PSP (Ryzen Raven/Renoir)", True),
    _ccp("14ca", "PSP (EPYC Genoa)", False),
    _ccp("15c7", "PSP", False),
    _ccp("1649", "PSP (Ryzen Cezanne/Van Gogh)", False),
    _ccp("1134", "PSP", False),
    _ccp("17e0", "PSP", False),
    _ccp("156e", "PSP", False),
    _ccp("17d8", "PSP", False),
    AcceleratorFamily(
        "hisi-sec2", "HiSilicon", "SEC2 (Kunpeng)", "pci", ("19e5:a255",), ("hisi_sec2",),
        "hisi_sec2", r"^hisi_sec_", ("hisi_sec2",),
        when_empty="hisi_sec2 bound but registered nothing: check `dmesg | grep -i sec` "
                   "(queue allocation, uacce_mode)",
    ),
    AcceleratorFamily(
        "hisi-sec2-vf", "HiSilicon", "SEC2 virtual function", "pci", ("19e5:a256",),
        ("hisi_sec2",), "hisi_sec2", r"^hisi_sec_", ("hisi_sec2",), virtual_function=True,
        when_empty=_VF_EMPTY,
    ),
    AcceleratorFamily(
        "hisi-hpre", "HiSilicon", "HPRE (Kunpeng)", "pci", ("19e5:a258", "19e5:a259"),
        ("hisi_hpre",), "hisi_hpre", r"^hpre-", ("hisi_hpre",),
        when_empty="hisi_hpre bound but registered nothing: check `dmesg | grep -i hpre`",
        notes="public-key engine (RSA, DH, ECDH, curve25519)",
    ),
    AcceleratorFamily(
        "hisi-zip", "HiSilicon", "ZIP (Kunpeng)", "pci", ("19e5:a250", "19e5:a251"),
        ("hisi_zip",), "hisi_zip", r"^hisi-", ("hisi_zip",), crypto_engine=False,
        when_empty="a compression engine: it registers no cipher, MAC or key exchange",
    ),
    AcceleratorFamily(
        "nxp-caam", "NXP", "CAAM (SEC v4+)", "platform",
        ("fsl,sec-v4.0", "fsl,sec-v5.0", "fsl,sec-v6.0"),
        ("caam",), "caam_jr", r"-caam(-qi2?)?$", ("caam_jr", "caamalg_desc", "dpaa2_caam"),
        when_empty="caam_jr registered nothing: no job ring is bound to caam_jr (they may be "
                   "reserved for the secure world) or the CAAM's RNG failed to instantiate; "
                   "see dmesg",
        notes="the controller binds caam; its job rings bind caam_jr, which registers the "
              "algorithms",
    ),
)

_BY_ID: dict[str, AcceleratorFamily] = {i: f for f in KNOWN for i in f.ids}


def family_for(record: DeviceRecord) -> AcceleratorFamily | None:
    """The known family this device belongs to, or None."""
    if record.subsystem == "pci":
        return _BY_ID.get(record.pci_id)
    if record.subsystem == "platform":
        for compatible in record.of_compatible:
            family = _BY_ID.get(compatible)
            if family is not None:
                return family
    return None


# --------------------------------------------------------------------------------------------
# Device records: the seam between pyudev and the matching code
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceRecord:
    """What udev knows about one device (live from pyudev, or recorded)."""

    sys_path: str
    subsystem: str
    properties: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)
    children: tuple[DeviceRecord, ...] = ()

    @property
    def sys_name(self) -> str:
        return self.sys_path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def driver(self) -> str:
        return self.properties.get("DRIVER", "")

    @property
    def pci_id(self) -> str:
        """'vvvv:dddd' in lower case ('' for non-PCI devices)."""
        pci_id = self.properties.get("PCI_ID", "")
        if not pci_id and self.attributes.get("vendor") and self.attributes.get("device"):
            pci_id = f"{self.attributes['vendor'][2:]}:{self.attributes['device'][2:]}"
        return pci_id.lower()

    @property
    def of_compatible(self) -> list[str]:
        props = self.properties
        count = int(props.get("OF_COMPATIBLE_N", "0") or 0)
        return [props[f"OF_COMPATIBLE_{i}"] for i in range(count) if f"OF_COMPATIBLE_{i}" in props]

    def as_dict(self) -> dict[str, Any]:
        return {
            "sys_path": self.sys_path,
            "subsystem": self.subsystem,
            "properties": dict(self.properties),
            "attributes": dict(self.attributes),
            "children": [c.as_dict() for c in self.children],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeviceRecord:
        try:
            return cls(
                sys_path=str(data["sys_path"]),
                subsystem=str(data["subsystem"]),
                properties={str(k): str(v) for k, v in data.get("properties", {}).items()},
                attributes={str(k): str(v) for k, v in data.get("attributes", {}).items()},
                children=tuple(cls.from_dict(c) for c in data.get("children", ())),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a device record ({type(exc).__name__}: {exc}): "
                             f"{str(data)[:120]}") from None

    @classmethod
    def from_pyudev(cls, device: Any) -> DeviceRecord:
        """Capture one pyudev.Device (and its children on the virtio bus)."""
        props = {k: device.properties[k] for k in device.properties
                 if k in _RECORDED_PROPERTIES or k.startswith("OF_COMPATIBLE_")}
        if device.driver and "DRIVER" not in props:
            props["DRIVER"] = device.driver
        attrs = {}
        for name in _RECORDED_ATTRIBUTES:
            try:
                value = device.attributes.asstring(name)
            except (KeyError, UnicodeDecodeError, OSError):
                continue
            attrs[name] = value.strip()
        children = tuple(
            cls.from_pyudev(child) for child in device.children
            if child.subsystem == "virtio" and child.parent == device
        )
        return cls(device.sys_path, device.subsystem or "", props, attrs, children)


def enumerate_records(context: Any = None) -> list[DeviceRecord]:
    """Records of every present device that the table knows (PCI and platform), via pyudev."""
    import pyudev

    context = context or pyudev.Context()
    found = []
    for device in context.list_devices(subsystem="pci"):
        pci_id = (device.properties.get("PCI_ID") or "").lower()
        if pci_id in _BY_ID:
            found.append(DeviceRecord.from_pyudev(device))
    for device in context.list_devices(subsystem="platform"):
        if "OF_COMPATIBLE_N" not in device.properties:
            continue
        if any(device.properties.get(k) in _BY_ID for k in device.properties
               if k.startswith("OF_COMPATIBLE_") and k != "OF_COMPATIBLE_N"):
            found.append(DeviceRecord.from_pyudev(device))
    return found


def load_records(path: str | Path) -> tuple[list[DeviceRecord], list[CryptoAlg] | None]:
    """Recorded devices (and, if the recording has it, /proc/crypto) from a JSON file."""
    data = json.loads(Path(path).read_text())
    records = [DeviceRecord.from_dict(d) for d in data.get("devices", [])]
    proc = data.get("proc_crypto")
    return records, (parse_proc_crypto(proc) if proc is not None else None)


def record_system(context: Any = None, proc_crypto: str = PROC_CRYPTO) -> dict[str, Any]:
    """A recording of this machine (devices + /proc/crypto), for fixtures and bug reports."""
    try:
        proc_text = Path(proc_crypto).read_text()
    except OSError as exc:
        proc_text = ""
        log.warning("cannot read %s: %s", proc_crypto, exc)
    return {
        "source": f"recorded by `ocfpy devices --record` on {_uname()}",
        "devices": [r.as_dict() for r in enumerate_records(context)],
        "proc_crypto": proc_text,
    }


def _uname() -> str:
    import os

    u = os.uname()
    return f"{u.sysname} {u.release} {u.machine}"


# --------------------------------------------------------------------------------------------
# /proc/crypto
# --------------------------------------------------------------------------------------------
# The parser is shared with the af_alg backend (ocfpy.crypto.devices.proc_crypto); this module only
# reads the fields it needs.


def parse_proc_crypto(text: str) -> list[CryptoAlg]:
    return proc_crypto.parse(text)


def read_proc_crypto(path: str = PROC_CRYPTO) -> list[CryptoAlg]:
    try:
        return proc_crypto.parse(Path(path).read_text())
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return []


def _keysizes(alg: CryptoAlg) -> tuple[int | None, int | None]:
    def num(key: str) -> int | None:
        try:
            return int(alg.fields[key])
        except (KeyError, ValueError):
            return None

    return num("min keysize"), num("max keysize")


def describe(alg: CryptoAlg) -> str:
    return (f"{alg.name} as {alg.driver} (priority {alg.priority}, "
            f"selftest {alg.selftest or 'n/a'})")


# Kernel crypto API names ocfpy can map to catalogue keywords. The value lists candidates; key
# sizes from /proc/crypto narrow AES variants down to what the implementation accepts.
_AES = (16, 24, 32)
KERNEL_NAMES: dict[str, tuple[str, ...]] = {
    "cbc(aes)": ("aes128", "aes192", "aes256"),
    "rfc3686(ctr(aes))": ("aes128ctr", "aes192ctr", "aes256ctr"),
    "rfc4106(gcm(aes))": tuple(f"aes{b}gcm{i}" for b in (128, 192, 256) for i in (8, 12, 16)),
    "gcm(aes)": tuple(f"aes{b}gcm{i}" for b in (128, 192, 256) for i in (8, 12, 16)),
    "rfc7539esp(chacha20,poly1305)": ("chacha20poly1305",),
    "hmac(sha1)": ("sha1", "prfsha1"),
    "hmac(sha256)": ("sha256", "prfsha256"),
    "hmac(sha384)": ("sha384", "prfsha384"),
    "hmac(sha512)": ("sha512", "prfsha512"),
    "xcbc(aes)": ("aesxcbc",),
    "cmac(aes)": ("prfaescmac",),
    "sha1": ("hashsha1",),
    "sha256": ("hashsha256",),
    "sha384": ("hashsha384",),
    "sha512": ("hashsha512",),
}


def catalogue_keywords(alg: CryptoAlg) -> list[str]:
    """The catalogue keywords this kernel algorithm could serve (key sizes permitting)."""
    candidates = KERNEL_NAMES.get(alg.name, ())
    lo, hi = _keysizes(alg)
    out = []
    for keyword in candidates:
        t = get_transform(keyword)
        if t.key_size in _AES and t.keyword.startswith("aes") and lo is not None and hi is not None:
            # rfc4106/rfc3686 report key sizes including the 4-byte salt/nonce
            size = t.key_size + (t.salt_size if alg.name.startswith("rfc") else 0)
            if not lo <= size <= hi:
                continue
        out.append(keyword)
    return out


# --------------------------------------------------------------------------------------------
# Joining them
# --------------------------------------------------------------------------------------------
@dataclass
class FoundDevice:
    """One known accelerator found on this machine, and what it can do for ocfpy."""

    family: AcceleratorFamily
    record: DeviceRecord
    kernel_driver: str  # the driver that does the crypto ('' if none bound)
    algorithms: list[CryptoAlg]  # what that driver registered (usable or not)
    usable: dict[str, CryptoAlg]  # catalogue keyword -> the kernel algorithm serving it
    reason: str = ""  # why it is not usable ('' if it is)
    notes: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.record.sys_name

    @property
    def device_id(self) -> str:
        return self.record.pci_id or (self.record.of_compatible or [""])[0]

    @property
    def is_usable(self) -> bool:
        return bool(self.usable)

    def summary(self) -> str:
        fam = self.family
        who = f"{fam.name} {self.device_id} at {self.address}"
        if not self.kernel_driver or (not fam.child_subsystem
                                      and self.kernel_driver not in fam.kernel_drivers):
            return f"{who}: {self.reason}"
        drv = f"kernel driver {self.kernel_driver}"
        if fam.module and fam.module.replace("_", "-") != self.kernel_driver.replace("_", "-"):
            drv += f" ({fam.module})"
        n = len(self.algorithms)
        head = f"{who}, {drv}, {n} algorithm{'s' if n != 1 else ''} registered"
        if self.is_usable:
            return f"{head}; usable: {', '.join(sorted(self.usable, key=_keyword_order))}"
        return f"{head}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "family": self.family.key,
            "name": self.family.name,
            "bus": self.family.bus,
            "address": self.address,
            "sys_path": self.record.sys_path,
            "device_id": self.device_id,
            "kernel_driver": self.kernel_driver,
            "module": self.family.module,
            "usable": self.is_usable,
            "reason": self.reason,
            "algorithms": [
                {"name": a.name, "driver": a.driver, "module": a.module, "priority": a.priority,
                 "selftest": a.selftest, "type": a.type,
                 "keywords": catalogue_keywords(a) if _healthy(a) else []}
                for a in self.algorithms
            ],
            "offers": {k: a.driver for k, a in sorted(self.usable.items())},
            "notes": self.notes,
            "summary": self.summary(),
        }


def _keyword_order(keyword: str) -> int:
    return _CATALOGUE_ORDER.get(keyword, len(_CATALOGUE_ORDER))


_CATALOGUE_ORDER = {t.keyword: i for i, t in enumerate(all_transforms())}


def _healthy(alg: CryptoAlg) -> bool:
    # "unknown": not (yet) tested by the kernel; ocfpy runs its own known-answer tests anyway.
    return not alg.internal and alg.selftest in ("passed", "unknown", "")


def _crypto_driver(record: DeviceRecord, family: AcceleratorFamily) -> str:
    """The driver doing the crypto: the virtio child's for virtio, else the device's own."""
    if family.child_subsystem:
        for child in record.children:
            if child.subsystem == family.child_subsystem and child.driver:
                return child.driver
        return ""
    return record.driver


def algorithms_of(family: AcceleratorFamily, algorithms: Iterable[CryptoAlg]
                  ) -> list[CryptoAlg]:
    """The /proc/crypto entries this family's kernel driver registered."""
    pattern = re.compile(family.crypto_driver)
    out = []
    for alg in algorithms:
        # A driver built into the kernel shows module "kernel": then its name is all we have.
        if alg.module in family.crypto_modules or (
                alg.module == "kernel" and pattern.search(alg.driver)):
            out.append(alg)
    return sorted(out, key=lambda a: (a.type, a.name, -a.priority))


def examine(record: DeviceRecord, algorithms: Sequence[CryptoAlg]) -> FoundDevice | None:
    """Match one record against the table and explain what it can do (None: not known)."""
    family = family_for(record)
    if family is None:
        return None
    driver = _crypto_driver(record, family)
    notes = [family.notes] if family.notes else []
    if not driver:
        if family.child_subsystem and record.driver:
            reason = (f"{record.driver} is bound but no {family.child_subsystem} child has a "
                      f"driver: try modprobe {family.module}")
        elif family.kernel_drivers:
            reason = (f"no kernel driver bound (expected {' or '.join(family.kernel_drivers)}; "
                      f"try modprobe {family.module})")
        else:
            reason = f"no kernel driver bound; {family.notes or 'no in-kernel driver exists'}"
        return FoundDevice(family, record, "", [], {}, reason, notes)
    if driver not in family.kernel_drivers and not family.child_subsystem:
        if driver in ("vfio-pci", "pci-stub"):
            reason = (f"bound to {driver}: the device is reserved for a guest VM or a user-space "
                      "library, not the kernel crypto API")
        else:
            reason = (f"bound to {driver}, not to {' or '.join(family.kernel_drivers)}: ocfpy "
                      "only reaches devices through their in-kernel crypto driver")
        return FoundDevice(family, record, driver, [], {}, reason, notes)
    if not family.crypto_engine:
        # Its kernel driver may well have registered algorithms, but for other functions it
        # drives (the ccp driver serves CCP and PSP functions alike): none of them run here.
        return FoundDevice(family, record, driver, [], {}, family.when_empty, notes)
    registered = algorithms_of(family, algorithms)
    usable: dict[str, CryptoAlg] = {}
    for alg in registered:
        if not _healthy(alg):
            continue
        for keyword in catalogue_keywords(alg):
            best = usable.get(keyword)
            # prefer the ESP-shaped template (rfc4106 over gcm) and then higher priority
            if best is None or (alg.name.startswith("rfc"), alg.priority) > (
                    best.name.startswith("rfc"), best.priority):
                usable[keyword] = alg
    reason = ""
    if not registered:
        reason = _why_empty(family, record)
    elif not usable:
        failed = [a for a in registered if not _healthy(a) and not a.internal]
        names = sorted({a.name for a in registered if not a.internal})
        reason = "none of its algorithms is one ocfpy uses"
        if names:
            reason += f" (it offers {', '.join(names)})"
        if failed:
            reason += "; failed the kernel self-test: " + ", ".join(a.driver for a in failed)
    return FoundDevice(family, record, driver, registered, usable, reason, notes)


def _why_empty(family: AcceleratorFamily, record: DeviceRecord) -> str:
    """Why a bound driver registered nothing: sysfs evidence first, the family's hint second."""
    state = record.attributes.get("qat/state")
    services = record.attributes.get("qat/cfg_services")
    if state == "down":
        return ("firmware not loaded: the device is down (qat/state: down); check "
                "`dmesg | grep -i qat` and /lib/firmware")
    if services is not None and "sym" not in services.split(";"):
        return (f"the device is configured for '{services}' only (qat/cfg_services); "
                "write 'sym;asym' there (device down) to get the symmetric crypto service")
    return family.when_empty or "the kernel driver registered no algorithm"


def discover(
    records: Iterable[DeviceRecord] | None = None,
    algorithms: Sequence[CryptoAlg] | None = None,
) -> list[FoundDevice]:
    """Known accelerators present, with what each can do. Defaults read the live system."""
    if records is None:
        records = enumerate_records()
    if algorithms is None:
        algorithms = read_proc_crypto()
    found = []
    for record in records:
        device = examine(record, algorithms)
        if device is not None:
            found.append(device)
    return sorted(found, key=lambda d: (d.family.key, d.address))


def as_json(devices: Iterable[FoundDevice]) -> str:
    return json.dumps([d.as_dict() for d in devices], indent=2, sort_keys=True)


def table_as_dicts() -> list[dict[str, Any]]:
    """The table of known families (for `ocfpy devices --known` and docs)."""
    return [asdict(f) for f in KNOWN]
