"""tests/kernel: tests that need the real kernel crypto API (AF_ALG, keyctl DH).

They carry the ``kernel`` marker and run inside the VM lane (scripts/vm-lane.sh). On a host
without AF_ALG they skip with a reason that says where they run; they never pass silently.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ocfpy.kernel import afalg
from tests.vm.guest import HOST_SKIP_REASON, in_vm_lane

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    reason = afalg.available()
    skip = pytest.mark.skip(reason=f"{HOST_SKIP_REASON} ({reason})") if reason else None
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.kernel)
            if skip is not None:
                item.add_marker(skip)
    # Tests that unplug or plug the guest's devices go last, in their own order: on Linux 6.1
    # an unplug leaves virtio_crypto's transforms pointing at freed memory (see
    # test_virtio_crypto.py), and no other test should run on a kernel in that state.
    last = [item for item in items if item.get_closest_marker("unplug")]
    if last:
        items[:] = [item for item in items if not item.get_closest_marker("unplug")] + last


@pytest.fixture(scope="session")
def vm_lane() -> bool:
    return in_vm_lane()


@pytest.fixture(scope="session")
def registry():
    """One registry for the whole run: loading it runs every driver's self-tests, which
    costs seconds in the (slow, emulated) guest."""
    from ocfpy.crypto.registry import Registry

    return Registry.load()
