"""IKE SA states as one table (h11's _state.py idea): every allowed transition is listed here,
and anything else is our bug (IkeUsageError), never silently accepted."""

from __future__ import annotations

from enum import StrEnum

from .errors import IkeUsageError


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
