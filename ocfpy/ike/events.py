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
    """Install this CHILD_SA (dataplane.install(spec)), before any datagram of the same
    engine call is sent: the message that lets the peer use the new inbound SA may be one
    of them (make-before-break, docs/ike.md *Rekeying*).

    ``outbound`` False: install the outbound SA but do not send on it yet (the peer may not
    have the keys): a ChildSaOutbound follows when it can. ``replaces``: the unique id of
    the CHILD_SA this one rekeys or re-establishes from a new IKE SA (ike/succession.py),
    still installed: the xfrm dataplane keeps its reqid."""

    ike_id: int
    spec: ChildSaSpec
    outbound: bool = True
    replaces: int | None = None


@dataclass(frozen=True, slots=True)
class ChildSaOutbound:
    """Send on this CHILD_SA from now on, in one step (the peer can decrypt it now); the
    SA it replaces stops sending at that moment."""

    ike_id: int
    unique_id: int


@dataclass(frozen=True, slots=True)
class ChildSaClosed:
    """Remove this CHILD_SA (dataplane.remove(unique_id)). ``grace`` > 0: it was replaced by
    a rekey; its outbound SA is unused already, its inbound SA keeps accepting that many
    seconds for packets still in flight or reordered, then goes."""

    ike_id: int
    unique_id: int
    reason: str = ""
    grace: float = 0.0


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


Event = (IkeSaEstablished | IkeSaClosed | ChildSaEstablished | ChildSaOutbound | ChildSaClosed
         | NegotiationFailed | SendKeepalive)
