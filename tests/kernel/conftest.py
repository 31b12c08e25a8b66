"""tests/kernel: tests that need the real kernel crypto API (AF_ALG, keyctl DH).

They carry the ``kernel`` marker and run inside the VM lane (scripts/vm-lane.sh). On a host
without AF_ALG they skip with a reason that says where they run; they never pass silently.
"""

from __future__ import annotations

import pytest

from ocfpy.kernel import afalg
from tests.vm.guest import HOST_SKIP_REASON, in_vm_lane


def pytest_collection_modifyitems(config, items):
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.kernel)


@pytest.fixture(autouse=True)
def _needs_af_alg():
    reason = afalg.available()
    if reason:
        pytest.skip(f"{HOST_SKIP_REASON} ({reason})")


@pytest.fixture(scope="session")
def vm_lane() -> bool:
    return in_vm_lane()
