"""What the IKE core tells its caller (the daemon, a test). Pulled with IkeEngine.next_event()."""

from __future__ import annotations

from dataclasses import dataclass

from ocfpy.esp.spec import ChildSaSpec

Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class IkeSaEstablished:
    ike_id: int
    name: str


@dataclass(frozen=True, slots=True)
class IkeSaClosed:
    ike_id: int
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class ChildSaEstablished:
    """Install this CHILD_SA (dataplane.install(spec))."""

    ike_id: int
    spec: ChildSaSpec


@dataclass(frozen=True, slots=True)
class ChildSaClosed:
    """Remove this CHILD_SA (dataplane.remove(unique_id))."""

    ike_id: int
    unique_id: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class NegotiationFailed:
    """An IKE or CHILD_SA negotiation failed; ``notify`` is the IKEv2 notify type involved
    (sent or received), None for a timeout; ``explanation`` is for people."""

    name: str
    notify: int | None
    explanation: str


@dataclass(frozen=True, slots=True)
class SendKeepalive:
    """Send one NAT-T keepalive (the single byte 0xff, RFC 3948 2.3) from local to remote.
    Not an IKE message: it gets no non-ESP marker."""

    local: Addr
    remote: Addr


Event = (IkeSaEstablished | IkeSaClosed | ChildSaEstablished | ChildSaClosed | NegotiationFailed
         | SendKeepalive)
