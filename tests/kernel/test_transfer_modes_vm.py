"""Issue 17's transfer rows that need the VM lane's stock kernel (tests/net/transfer_modes.py
has the whole table; the host rows run in tests/net/test_transfer_modes.py): two `ocfpy iked`
daemons on XFRM ESP (raw and over UDP 4500), and on the userspace dataplane with the ESP
sessions forced onto af_alg, the asynchronous driver (kernel AIO on the operation socket), so
every burst goes through Session.submit/collect.

Sizes are smaller than the host's 50 MB: the guest runs under QEMU TCG (no KVM here), where
Python runs about 6x slower and so does the emulated AES; docs/testing.md has the measured
row times. Run: scripts/vm-lane.sh -- tests/kernel/test_transfer_modes_vm.py
"""

from __future__ import annotations

import pytest

pytest.importorskip("ocfpy.ike.engine", reason="the IKE engine (branch ike-core) is not merged")

from tests.kernel.test_xfrm import _needs_af_alg, _no_kernel_esp  # noqa: E402,F401 - the skip
from tests.net.ike_harness import ike_lab  # noqa: E402
from tests.net.transfer_modes import VM_MODES, run_row  # noqa: E402

# bytes each way, per dataplane: the kernel's ESP is quick even under TCG, a Python
# dataplane in the emulated guest is not. Sized for CI's budget (the whole VM lane runs
# beside the host lanes and is the longest one): 20 MB / 4 MB took 117-119 s per XFRM row and
# 177-237 s per af_alg row (2026-12-03, load 2.4-4.0), most of a row beyond its daemons'
# start being the transfer; 4 MB / 1 MB still carry thousands of ESP packets each way.
SIZE = {"xfrm": 4 * 10**6, "userspace": 1 * 10**6}


@pytest.mark.parametrize("mode", VM_MODES, ids=[m.id for m in VM_MODES])
def test_transfer_each_way_through_every_vm_mode(mode, record_property):
    with ike_lab("otv") as pair:
        # VM lane: a daemon's first pyroute2 import alone takes 20-35 s in the guest
        result = run_row(pair, mode, SIZE[mode.dataplane], start_timeout=240,
                         establish_timeout=60, transfer_timeout=600)
    for way, seconds in result.seconds.items():
        record_property(f"{way} seconds", seconds)
        record_property(f"{way} Mbit/s", result.mbit_per_s[way])
        print(f"{mode.id} {way}: {SIZE[mode.dataplane]} bytes in {seconds} s "
              f"({result.mbit_per_s[way]} Mbit/s)")
