"""Zero configuration (issue 15): ocfpy with no ``proposals`` / ``esp_proposals`` against
libreswan, OpenIKED and strongSwan (kernel-netlink), each in its own default configuration (no
algorithm line there either), in both roles, over kernel ESP in the VM guest.

Each row (rows.run_tunnel_row): the IKE_SA and CHILD_SA come up; the SPIs ocfpy reports
(``sa list --json``) are the two ESP states the peer installed in its kernel, with the same
algorithms, ICV length and ESN flag; a ping crosses the tunnel; a weak transform the peer
forced would have to be named in a warning in ocfpy's log; ocfpy deletes the SAs and the peer's
kernel states go too. The rows run in the session fixture ``interop_outcomes`` (all peers at
once); each item here reports one row.
"""

from __future__ import annotations

import pytest

from tests.kernel.interop.conftest import report
from tests.kernel.interop.table import cases


@pytest.mark.parametrize("peer,row", cases("zero-config"),
                         ids=[f"{p}-{r.role.split()[0]}" for p, r in cases("zero-config")])
def test_zero_config(interop_outcomes, peer, row):
    report(interop_outcomes, peer, row)
