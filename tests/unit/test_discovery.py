"""The accelerator table, fed through the record seam, and the parts that read the real system.

pyudev cannot be pointed at a fake /sys, so the table is exercised with device records in
tests/fixtures/devices/ (each file says where its data comes from); the live enumeration is
exercised here against this machine's real /sys, and against a real virtio-crypto device in
the VM lane (tests/kernel/test_virtio_crypto.py).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from ocfpy.crypto.catalogue import get as get_transform
from ocfpy.crypto.devices import discovery
from ocfpy.crypto.devices.discovery import DeviceRecord, discover, load_records, parse_proc_crypto

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "devices"


def found(name: str) -> list[discovery.FoundDevice]:
    records, algorithms = load_records(FIXTURES / f"{name}.json")
    assert algorithms is not None
    return discover(records, algorithms)


# -- the table ---------------------------------------------------------------------------------
def test_table_ids_are_unique_and_well_formed():
    seen: dict[str, str] = {}
    for family in discovery.KNOWN:
        for ident in family.ids:
            assert ident not in seen, f"{ident} in both {seen[ident]} and {family.key}"
            seen[ident] = family.key
            if family.bus == "pci":
                assert re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{4}", ident), ident
        re.compile(family.crypto_driver)


@pytest.mark.parametrize("ident,family", [
    ("1af4:1054", "virtio-crypto"),
    ("8086:0435", "qat-dh895xcc"), ("8086:0443", "qat-dh895xcc-vf"),
    ("8086:37c8", "qat-c62x"), ("8086:37c9", "qat-c62x-vf"),
    ("8086:19e2", "qat-c3xxx"), ("8086:4940", "qat-4xxx"), ("8086:4942", "qat-401xx"),
    ("8086:4944", "qat-402xx"),
    ("1022:1456", "amd-ccp-1456"), ("1022:1468", "amd-ccp-1468"), ("1022:1486", "amd-ccp-1486"),
    ("1022:15df", "amd-ccp-15df"), ("1022:1649", "amd-ccp-1649"), ("1022:14ca", "amd-ccp-14ca"),
    ("19e5:a255", "hisi-sec2"), ("19e5:a258", "hisi-hpre"), ("19e5:a250", "hisi-zip"),
    ("fsl,sec-v4.0", "nxp-caam"),
])
def test_known_ids(ident, family):
    if ":" in ident:
        record = DeviceRecord("/sys/devices/pci0000:00/0000:00:01.0", "pci",
                              {"PCI_ID": ident.upper()})
    else:
        record = DeviceRecord("/sys/devices/platform/x.crypto", "platform",
                              {"OF_COMPATIBLE_N": "1", "OF_COMPATIBLE_0": ident})
    match = discovery.family_for(record)
    assert match is not None and match.key == family


def test_unknown_device_is_ignored():
    nic = DeviceRecord("/sys/devices/pci0000:00/0000:00:03.0", "pci",
                       {"PCI_ID": "1AF4:1041", "DRIVER": "virtio-pci"})
    assert discovery.family_for(nic) is None
    assert discover([nic], []) == []


# -- Intel QAT ---------------------------------------------------------------------------------
def test_qat_c62x_up_offers_cbc_through_qat_aes_cbc():
    devices = found("qat-c62x-up")
    assert [d.address for d in devices] == ["0000:3d:00.0", "0000:3f:00.0"]
    for d in devices:
        assert d.kernel_driver == "c6xx"
        assert d.is_usable and d.reason == ""
        assert {k: a.driver for k, a in d.usable.items()} == {
            "aes128": "qat_aes_cbc", "aes192": "qat_aes_cbc", "aes256": "qat_aes_cbc"}
        # ctr(aes) is not RFC 3686, authenc() and xts are not IKE/ESP transforms ocfpy maps
        assert len(d.algorithms) == 8
        assert "Intel QAT c62x 8086:37c8" in d.summary()
        assert "kernel driver c6xx (qat_c62x), 8 algorithms registered" in d.summary()
    # the generic aesni cbc(aes) of the same machine is not the device's
    assert all(a.module == "intel_qat" for a in devices[0].algorithms)


def test_qat_without_firmware_says_so():
    (d,) = found("qat-c62x-no-firmware")
    assert not d.is_usable
    assert d.summary().startswith(
        "Intel QAT c62x 8086:37c8 at 0000:3d:00.0, kernel driver c6xx (qat_c62x), "
        "0 algorithms registered: firmware not loaded")


def test_qat_gen4_compression_only_and_vf_on_vfio():
    pf, vf = found("qat-4xxx-dc-and-vfio-vf")
    assert pf.family.key == "qat-4xxx" and not pf.is_usable
    assert "configured for 'dc' only" in pf.reason and "sym;asym" in pf.reason
    assert vf.family.virtual_function and vf.kernel_driver == "vfio-pci"
    assert vf.summary() == (
        "Intel QAT 4xxx virtual function 8086:4941 at 0000:6b:00.1: bound to vfio-pci: the "
        "device is reserved for a guest VM or a user-space library, not the kernel crypto API")


# -- AMD CCP -----------------------------------------------------------------------------------
def test_ccp_maps_its_algorithms_and_the_psp_has_none():
    ccp, psp = found("ccp-epyc")
    assert ccp.family.key == "amd-ccp-1468" and ccp.kernel_driver == "ccp"
    offers = {k: a.driver for k, a in ccp.usable.items()}
    assert offers["aes256"] == "cbc-aes-ccp"
    assert offers["aes128ctr"] == offers["aes256ctr"] == "rfc3686-ctr-aes-ccp"
    assert offers["aes256gcm16"] == "gcm-aes-ccp"
    assert offers["sha256"] == offers["prfsha256"] == "hmac-sha256-ccp"
    assert offers["hashsha512"] == "sha512-ccp"
    assert offers["prfaescmac"] == "cmac-aes-ccp"
    assert "aesxcbc" not in offers  # the CCP has no xcbc(aes)
    # every usable keyword names a catalogue transform
    for keyword in offers:
        get_transform(keyword)
    assert psp.family.key == "amd-ccp-14ca" and not psp.is_usable
    assert psp.algorithms == []
    assert "Platform Security Processor function only" in psp.reason


def test_ccp_without_ccp_crypto():
    (d,) = found("ccp-no-crypto-module")
    assert d.kernel_driver == "ccp" and not d.is_usable
    assert "0 algorithms registered: the ccp-crypto module" in d.summary()
    assert "modprobe ccp-crypto" in d.reason


# -- virtio-crypto, HiSilicon, CAAM --------------------------------------------------------------
def test_virtio_crypto_uses_the_child_driver():
    (d,) = found("virtio-crypto")
    assert d.record.driver == "virtio-pci" and d.kernel_driver == "virtio_crypto"
    assert {k: a.driver for k, a in d.usable.items()} == {
        "aes128": "virtio_crypto_aes_cbc", "aes192": "virtio_crypto_aes_cbc",
        "aes256": "virtio_crypto_aes_cbc"}
    assert {a.driver for a in d.algorithms} >= {"virtio_crypto_aes_cbc"}


def test_virtio_crypto_child_without_driver():
    (d,) = found("virtio-crypto-no-driver")
    assert not d.is_usable and d.kernel_driver == ""
    assert "modprobe virtio_crypto" in d.reason


def test_unbound_and_compression_only_devices():
    sec, zip_ = found("hisi-unbound")
    assert sec.summary() == ("HiSilicon SEC2 (Kunpeng) 19e5:a255 at 0000:76:00.0: no kernel "
                             "driver bound (expected hisi_sec2; try modprobe hisi_sec2)")
    assert zip_.kernel_driver == "hisi_zip" and not zip_.is_usable
    assert "compression engine" in zip_.reason


def test_caam_platform_device_prefers_the_esp_template():
    (d,) = found("caam-imx8")
    assert d.family.bus == "platform" and d.kernel_driver == "caam"
    assert d.usable["aes128gcm16"].driver == "rfc4106-gcm-aes-caam"  # over gcm-aes-caam
    assert d.usable["aes256"].driver == "cbc-aes-caam"


def test_failed_selftest_is_not_usable():
    records, algorithms = load_records(FIXTURES / "virtio-crypto.json")
    assert algorithms is not None
    broken = [a if a.driver != "virtio_crypto_aes_cbc" else
              dataclasses.replace(a, selftest="failed")
              for a in algorithms]
    (d,) = discover(records, broken)
    assert not d.is_usable
    assert "failed the kernel self-test: virtio_crypto_aes_cbc" in d.reason


def test_json_report_is_complete():
    data = json.loads(discovery.as_json(found("qat-c62x-up") + found("ccp-epyc")))
    assert {d["family"] for d in data} == {"qat-c62x", "amd-ccp-1468", "amd-ccp-14ca"}
    qat = next(d for d in data if d["family"] == "qat-c62x")
    assert qat["offers"] == {"aes128": "qat_aes_cbc", "aes192": "qat_aes_cbc",
                             "aes256": "qat_aes_cbc"}
    assert qat["usable"] is True and qat["kernel_driver"] == "c6xx"


# -- parsing and the seam's own errors -----------------------------------------------------------
def test_parse_proc_crypto_fields():
    text = (FIXTURES / "virtio-crypto.json").read_text()
    algs = parse_proc_crypto(json.loads(text)["proc_crypto"])
    (virtio,) = [a for a in algs if a.driver == "virtio_crypto_aes_cbc"]
    assert (virtio.name, virtio.module, virtio.priority, virtio.selftest, virtio.type) == (
        "cbc(aes)", "virtio_crypto", 150, "passed", "skcipher")
    assert discovery._keysizes(virtio) == (16, 32)


def test_malformed_record_is_a_clear_error(tmp_path):
    bad = tmp_path / "ocfpy-drv-bad.json"
    bad.write_text(json.dumps({"devices": [{"subsystem": "pci"}]}))
    with pytest.raises(ValueError, match="not a device record"):
        load_records(bad)


# -- the real system ---------------------------------------------------------------------------
def test_real_proc_crypto_parses():
    path = Path(discovery.PROC_CRYPTO)
    if not path.exists():
        pytest.skip("no /proc/crypto on this machine")
    algs = discovery.read_proc_crypto()
    assert algs, "/proc/crypto parsed to nothing"
    assert all(a.name and a.driver for a in algs)
    assert any(a.name in ("sha256", "cbc(aes)", "ecb(aes)") for a in algs)


def test_real_pyudev_records_round_trip():
    pyudev = pytest.importorskip("pyudev")
    context = pyudev.Context()
    devices = list(context.list_devices(subsystem="pci"))
    if not devices:
        pytest.skip("no PCI devices visible in /sys")
    record = DeviceRecord.from_pyudev(devices[0])
    assert record.sys_path == devices[0].sys_path and record.subsystem == "pci"
    assert record.pci_id == devices[0].properties["PCI_ID"].lower()
    assert DeviceRecord.from_dict(json.loads(json.dumps(record.as_dict()))) == record
    # whatever this machine holds, live enumeration only returns what the table knows
    for rec in discovery.enumerate_records(context):
        assert discovery.family_for(rec) is not None
