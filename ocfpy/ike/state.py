"""IKE SA states as one table (h11's _state.py idea): every allowed transition is listed here,
and anything else is our bug (IkeUsageError), never silently accepted."""

from __future__ import annotations

from enum import StrEnum

from ocfpy.ike.constants import ExchangeType as X
from ocfpy.ike.errors import IkeUsageError


class IkeState(StrEnum):
    CREATED = "created"  # no message yet
    CONNECTING = "connecting"  # IKE_SA_INIT / IKE_AUTH in progress (responder: half-open)
    ESTABLISHED = "established"
    DELETING = "deleting"  # our Delete is in flight
    CLOSED = "closed"


S = IkeState

TRANSITIONS: dict[tuple[IkeState, str], IkeState] = {
    (S.CREATED, "send_init"): S.CONNECTING,  # initiator
    (S.CREATED, "recv_init"): S.CONNECTING,  # responder, half-open from here
    (S.CONNECTING, "send_init"): S.CONNECTING,  # retry with a COOKIE or another KE group
    (S.CONNECTING, "authenticated"): S.ESTABLISHED,
    (S.ESTABLISHED, "delete"): S.DELETING,
    (S.CREATED, "rekeyed"): S.ESTABLISHED,  # the new SA of an IKE SA rekey
    (S.CREATED, "close"): S.CLOSED,
    (S.CONNECTING, "close"): S.CLOSED,
    (S.ESTABLISHED, "close"): S.CLOSED,
    (S.DELETING, "close"): S.CLOSED,
}


def next_state(state: IkeState, event: str) -> IkeState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IkeUsageError(f"IKE SA in state {state.value} cannot take event {event!r}") from None


# Which requests the peer may send us in each state (as the other side of the exchange).
REQUESTS_ALLOWED: dict[IkeState, frozenset[int]] = {
    S.CREATED: frozenset({X.IKE_SA_INIT}),
    S.CONNECTING: frozenset({X.IKE_SA_INIT, X.IKE_AUTH}),
    S.ESTABLISHED: frozenset({X.CREATE_CHILD_SA, X.INFORMATIONAL}),
    S.DELETING: frozenset({X.INFORMATIONAL}),
    S.CLOSED: frozenset(),
}
