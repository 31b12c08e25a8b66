"""The ESP dataplane interface the IKE daemon calls (strongSwan's kernel_ipsec_t, in Python).

Two implementations: ``userspace`` (RFC 4303 over a TUN device, crypto through dispatcher
sessions) and ``xfrm`` (the Linux kernel, over netlink), plus ``none`` (control plane only,
chosen explicitly in the config, never silently). All calls are synchronous and return
quickly: the daemon makes them from its event loop (docs/dataplanes.md).

The daemon owns the UDP 500/4500 sockets. With NAT-T, ESP-in-UDP arrives on the daemon's 4500
socket: a dataplane that handles UDP-encapsulated ESP itself in user space gets the socket
through ``attach_udp_encap`` and hands IKE datagrams (non-ESP marker) back through the callback;
the kernel dataplane instead sets UDP_ENCAP on that socket so the kernel takes ESP out of it.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from ocfpy.esp.spec import ChildSaSpec


@dataclass
class SaCounters:
    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    replay_drops: int = 0
    auth_failures: int = 0
    malformed: int = 0
    # The driver of record: "in"/"out" -> what does that direction's crypto now. userspace:
    # the dispatcher session's driver, after any migration; xfrm: "kernel:<driver>"; none:
    # nothing. The daemon reports it as the CHILD_SA's driver.
    drivers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SaEvent:
    """A lifetime limit was hit (soft: rekey now; hard: the SA was removed)."""

    unique_id: int
    kind: str  # "soft" | "hard"
    reason: str


EventHandler = Callable[[SaEvent], None]
IkeDatagramHandler = Callable[[bytes, tuple], None]


class Dataplane(ABC):
    name: str = ""

    @abstractmethod
    def install(self, spec: ChildSaSpec, *, outbound: bool = True,
                replaces: int | None = None) -> None:
        """Install both SAs of a CHILD_SA and the policies/routes for its selectors. The
        inbound SA accepts when this returns. ``outbound`` False (a rekey, make-before-break,
        docs/ike.md): the outbound SA is made ready but nothing is sent on it until
        ``activate``. ``replaces``: the CHILD_SA this one rekeys, still installed."""

    def activate(self, unique_id: int) -> None:  # noqa: B027 - a dataplane without staging
        """Send on this CHILD_SA from now on, in one step: traffic that the CHILD_SA it
        replaces carried moves to it at once, no packet finding neither SA."""

    @abstractmethod
    def remove(self, unique_id: int) -> None:
        """Remove the SAs and policies installed for this CHILD_SA (idempotent)."""

    @abstractmethod
    def counters(self, unique_id: int) -> SaCounters: ...

    def set_event_handler(self, handler: EventHandler) -> None:  # noqa: B027 - optional
        """Where lifetime events go (the daemon rekeys or deletes)."""

    def prepare_ike_socket(self, sock: socket.socket) -> None:  # noqa: B027 - optional
        """Called for every IKE socket (ports 500 and 4500) before use. A kernel dataplane
        exempts it from IPsec policies, so that IKE is never tunnelled even when a CHILD_SA's
        selectors cover the peer's address."""

    def attach_udp_encap(self, sock: socket.socket, on_ike: IkeDatagramHandler) -> bool:
        """Offer the daemon's UDP 4500 socket. Return True if the dataplane now reads it
        (and passes IKE datagrams, marker stripped, to on_ike); False to leave it alone."""
        return False

    def close(self) -> None:  # noqa: B027 - optional
        """Remove everything installed; called on daemon shutdown."""
