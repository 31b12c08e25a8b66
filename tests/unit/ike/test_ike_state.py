"""The IKE SA state table: what is allowed is listed, everything else is our bug."""

from __future__ import annotations

import pytest

from ocfpy.ike.constants import ExchangeType as X
from ocfpy.ike.errors import IkeUsageError
from ocfpy.ike.state import REQUESTS_ALLOWED, TRANSITIONS, IkeState, next_state

EVENTS = sorted({e for _, e in TRANSITIONS})


@pytest.mark.parametrize("state", list(IkeState))
@pytest.mark.parametrize("event", EVENTS)
def test_every_pair_is_listed_or_refused(state, event):
    if (state, event) in TRANSITIONS:
        assert next_state(state, event) is TRANSITIONS[(state, event)]
    else:
        with pytest.raises(IkeUsageError, match=state.value):
            next_state(state, event)


def test_closed_is_final_and_everything_can_close():
    assert not [k for k in TRANSITIONS if k[0] is IkeState.CLOSED]
    for s in IkeState:
        if s is not IkeState.CLOSED:
            assert next_state(s, "close") is IkeState.CLOSED


def test_requests_per_state():
    assert REQUESTS_ALLOWED[IkeState.ESTABLISHED] == {X.CREATE_CHILD_SA, X.INFORMATIONAL}
    assert X.IKE_AUTH in REQUESTS_ALLOWED[IkeState.CONNECTING]
    assert not REQUESTS_ALLOWED[IkeState.CLOSED]
