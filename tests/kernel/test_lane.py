"""The VM lane itself: are we where we think we are, with what we asked for?"""

from __future__ import annotations

from pathlib import Path

import pytest

from ocfpy.crypto.devices import proc_crypto
from ocfpy.kernel import afalg


def test_guest_is_detected_and_has_af_alg(vm_lane):
    if not vm_lane:
        pytest.skip("AF_ALG works here but this is not the VM lane guest")
    assert afalg.available() is None
    for kind in ("hash", "skcipher", "aead"):
        assert afalg.type_available(kind) is None, kind


def test_proc_crypto_names_a_driver_for_what_we_bound():
    with afalg.HashOp("sha256") as op:
        impl = op.implementation
    assert impl is not None and impl.name == "sha256" and impl.priority > 0
    assert impl.driver in {a.driver for a in proc_crypto.read()}


def test_virtio_crypto_device_is_attached(vm_lane):
    if not vm_lane:
        pytest.skip("only the VM lane attaches a virtio-crypto device")
    found = {((d / "vendor").read_text().strip(), (d / "device").read_text().strip())
             for d in Path("/sys/bus/pci/devices").iterdir()}
    assert ("0x1af4", "0x1054") in found


def test_qmp_relay_reaches_qemu_and_sees_the_crypto_device(vm_lane):
    """Hot-unplug tests (drivers/) drive QEMU through this relay; prove it works."""
    if not vm_lane:
        pytest.skip("the QMP relay exists only in the VM lane")
    from tests.vm.qmp import qmp

    reply, _ = qmp("query-status")
    assert reply["return"]["running"] is True
    reply, _ = qmp("query-pci")

    def ids(devices):  # devices behind a bridge or root port are nested under it
        for d in devices:
            yield d.get("qdev_id")
            yield from ids(d.get("pci_bridge", {}).get("devices", []))

    qdev_ids = set(ids(d for bus in reply["return"] for d in bus["devices"]))
    assert "crypto0" in qdev_ids
