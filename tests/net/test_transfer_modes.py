"""Issue 17: a 50 MB TCP transfer with SHA-256 check, each way, between two `ocfpy iked`
daemons, through every dataplane mode this host runs (tests/net/transfer_modes.py has the
table). The rows that need the VM lane's kernel (XFRM ESP, AF_ALG's asynchronous driver) are
listed here too and skip with where they run: tests/kernel/test_transfer_modes_vm.py.

Cost (docs/testing.md): about 10-25 s a row on the 2-core CI machine, most of it the
transfers; they run in the net lane, never in the unit tier.
"""

from __future__ import annotations

import pytest

from ocfpy.lab.netlab import can_build_lab

pytestmark = pytest.mark.net

why = can_build_lab()
if why:
    pytest.skip(f"namespace lab unavailable: {why}", allow_module_level=True)
pytest.importorskip("ocfpy.ike.engine", reason="the IKE engine (branch ike-core) is not merged")
pytest.importorskip("ocfpy.esp.dataplane.userspace", reason="no userspace dataplane (esp)")

from tests.net.ike_harness import ike_lab  # noqa: E402
from tests.net.transfer_modes import MODES, run_row  # noqa: E402

SIZE = 50 * 10**6


@pytest.mark.parametrize("mode", MODES, ids=[m.id for m in MODES])
def test_50mb_each_way_through_every_mode(mode, record_property):
    if mode.lane == "vm":
        pytest.skip(f"{mode.id}: needs the VM lane's kernel (XFRM ESP / AF_ALG): "
                    "scripts/vm-lane.sh -- tests/kernel/test_transfer_modes_vm.py")
    with ike_lab("otm") as pair:
        result = run_row(pair, mode, SIZE)
    for way, seconds in result.seconds.items():
        record_property(f"{way} seconds", seconds)
        record_property(f"{way} Mbit/s", result.mbit_per_s[way])
