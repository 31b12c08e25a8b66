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

from ocfpy.crypto.errors import OcfError
from ocfpy.esp.spec import ChildSaSpec, IPAddress, Mode, TrafficSelector


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
    """A lifetime limit was hit (soft: rekey now; hard: the SA was removed), or (inbound)
    the first packet that passed the ICV under the inbound SA of a CHILD_SA installed with
    ``outbound=False`` arrived: the peer has it, its outbound side may be activated (RFC 7296
    2.8; a dataplane that cannot tell never sends it, and the switch waits for the Delete of
    the old SA). At most one per such install."""

    unique_id: int
    kind: str  # "soft" | "hard" | "inbound"
    reason: str


@dataclass(frozen=True)
class TrapSpec:
    """A trap policy (charon's trap, swanctl ``start_action = "trap"``): an outbound policy
    for the child's selectors with no SA behind it yet. A packet that matches it while no
    CHILD_SA covers it is an acquire (RFC 4301 4.4.1.1: "PROTECT" with no SA: the key
    management daemon is asked for one); what happens to the packet is the dataplane's (the
    kernel keeps a few, the userspace dataplane queues ``queue`` of them)."""

    key: str  # "conn/child": the daemon's name for the trap
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    mode: Mode = Mode.TUNNEL
    local: IPAddress | None = None  # outer addresses (the kernel's template needs them)
    remote: IPAddress | None = None
    queue: int = 4  # packets held per trap until the CHILD_SA is up (0: none, drop)
    queue_timeout: float = 5.0  # seconds a held packet waits before it is dropped
    acquire_interval: float = 1.0  # at most one acquire per trap per this many seconds


@dataclass(frozen=True)
class Acquire:
    """A packet hit a trap: the daemon negotiates the CHILD_SA. ``src``/``dst``/``protocol``/
    ports are the packet's (for narrowing, as charon's trap manager), when the dataplane
    knows them."""

    key: str
    src: str | None = None
    dst: str | None = None
    protocol: int = 0
    sport: int = 0
    dport: int = 0


class TrapUnsupported(OcfError):
    """This dataplane cannot hold trap policies (the control-plane-only one)."""


EventHandler = Callable[[SaEvent], None]
AcquireHandler = Callable[[Acquire], None]
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

    # -- trap policies (issue 16): start_action / dpd_action / close_action = "trap" --------
    def install_trap(self, trap: TrapSpec) -> None:
        """Install (or replace, by key) a trap policy. Acquires go to the handler given to
        set_acquire_handler, at most one per trap per ``ACQUIRE_INTERVAL`` (the kernel
        re-sends its own; a busy flow must not flood the daemon)."""
        raise TrapUnsupported(f"the {self.name or type(self).__name__} dataplane has no trap "
                              "policies")

    def remove_trap(self, key: str) -> None:  # noqa: B027 - optional
        """Remove a trap (idempotent); packets it held are dropped and counted."""

    def set_acquire_handler(self, handler: AcquireHandler) -> None:  # noqa: B027 - optional
        """Where acquires go (the daemon initiates the child)."""

    def trap_stats(self) -> dict[str, dict[str, int]]:
        """Per trap key: acquires, packets queued, released, dropped (what there is)."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional
        """Remove everything installed; called on daemon shutdown."""
