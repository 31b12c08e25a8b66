"""The proposal matrix and the failure rows (issue 15), per peer (table.py).

Matrix rows (rows.run_tunnel_row): one IKE/ESP suite configured on the peer in its own words;
ocfpy's matrix connection offers and accepts them all, so the row's suite is what both sides
must end up with: ocfpy's ``sa list --json`` shows it, the peer's kernel holds ocfpy's SPIs with
the same algorithms and ESN setting, a ping crosses, the delete removes the peer's states.

Failure rows (rows.run_failure_row): the peer initiates with a DH group ocfpy does not accept
(NO_PROPOSAL_CHOSEN), another pre-shared key (AUTHENTICATION_FAILED) or other selectors
(TS_UNACCEPTABLE); ocfpy refuses, logs the notify and its ``sa why`` names what did not match.
"""

from __future__ import annotations

import pytest

from tests.kernel.interop.conftest import report
from tests.kernel.interop.table import cases


def _id(peer, row) -> str:
    return f"{peer}-{row.label}-{row.role.split()[0]}".replace(" ", "_")


@pytest.mark.parametrize("peer,row", cases("matrix"), ids=[_id(*c) for c in cases("matrix")])
def test_matrix_row(interop_outcomes, peer, row):
    report(interop_outcomes, peer, row)


@pytest.mark.parametrize("peer,row", cases("failure"), ids=[_id(*c) for c in cases("failure")])
def test_failure_row(interop_outcomes, peer, row):
    report(interop_outcomes, peer, row)


@pytest.mark.parametrize("peer,row", cases("lifecycle"),
                         ids=[_id(*c) for c in cases("lifecycle")])
def test_lifecycle_row(interop_outcomes, peer, row):
    """Rekeys started by each side, delete both ways, DPD (rows.run_lifecycle_row)."""
    report(interop_outcomes, peer, row)
