"""What one CHILD_SA is, as IKE negotiated it and a dataplane installs it.

The value types both sides of the IKE/ESP boundary speak: the IKE core builds a `ChildSaSpec`
from a CHILD_SA exchange, and every dataplane (user space, XFRM, none) installs one. They live
here, at the bottom of the ESP layer, so that neither side depends on the other's internals.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class TrafficSelector:
    """One IKEv2 traffic selector (RFC 7296 section 3.13.1) as an address range and ports."""

    start: IPAddress
    end: IPAddress
    protocol: int = 0  # 0 = any
    start_port: int = 0
    end_port: int = 65535

    @classmethod
    def from_network(cls, net: str | IPNetwork, protocol: int = 0,
                     ports: tuple[int, int] = (0, 65535)) -> TrafficSelector:
        n = ipaddress.ip_network(net, strict=False)
        return cls(n.network_address, n.broadcast_address, protocol, ports[0], ports[1])

    def networks(self) -> list[IPNetwork]:
        """The CIDR blocks covering start..end (for routes and XFRM selectors)."""
        return list(ipaddress.summarize_address_range(self.start, self.end))

    def contains(self, addr: IPAddress, protocol: int = 0, port: int = 0) -> bool:
        if addr.version != self.start.version or not self.start <= addr <= self.end:
            return False
        if self.protocol and protocol != self.protocol:
            return False
        return self.start_port <= port <= self.end_port or (self.start_port, self.end_port) == (0, 65535)

    def __str__(self) -> str:
        nets = self.networks()
        addr = str(nets[0]) if len(nets) == 1 else f"{self.start}-{self.end}"
        if self.protocol or (self.start_port, self.end_port) != (0, 65535):
            ports = "" if (self.start_port, self.end_port) == (0, 65535) else (
                f"{self.start_port}" if self.start_port == self.end_port
                else f"{self.start_port}-{self.end_port}")
            return f"{addr}[{self.protocol or ''}/{ports}]"
        return addr


class Mode(StrEnum):
    TUNNEL = "tunnel"
    TRANSPORT = "transport"


@dataclass(frozen=True)
class UdpEncap:
    """RFC 3948 UDP encapsulation: the ports ESP-in-UDP uses (ours, the peer's)."""

    local_port: int = 4500
    remote_port: int = 4500


@dataclass(frozen=True)
class SaKeys:
    """Keying material of one direction, as IKE derived it (RFC 7296 section 2.17)."""

    spi: int
    # repr=False: the daemon logs engine events (which carry ChildSaSpecs) by their str();
    # keys must never reach a log (tests/unit/iked/test_logsetup.py scans for them).
    encryption_key: bytes = field(repr=False)  # AEAD or CTR: key || salt
    integrity_key: bytes = field(default=b"", repr=False)

    def __repr__(self) -> str:
        # ChildSaSpec's repr (events, logs, `sa` debugging) includes this one: the keys must
        # never reach a log line (issue 13 finding 9); the SPI and sizes are enough to debug
        return (f"SaKeys(spi=0x{self.spi:08x}, encryption_key=<{len(self.encryption_key)} "
                f"bytes>, integrity_key=<{len(self.integrity_key)} bytes>)")


@dataclass
class ChildSaSpec:
    """Everything a dataplane needs to install one CHILD_SA (both directions)."""

    name: str  # connection/child name, for logs and `ocfpy sa list`
    unique_id: int  # the daemon's id for this CHILD_SA
    local: IPAddress  # outer addresses
    remote: IPAddress
    inbound: SaKeys  # SPI we chose; the peer encrypts with these keys
    outbound: SaKeys  # SPI the peer chose
    encryption: str  # catalogue keyword, e.g. "aes256gcm16", "aes256"
    integrity: str | None  # catalogue keyword, None for AEADs
    esn: bool = False
    mode: Mode = Mode.TUNNEL
    local_ts: list[TrafficSelector] = field(default_factory=list)
    remote_ts: list[TrafficSelector] = field(default_factory=list)
    encap: UdpEncap | None = None  # set when NAT-T is in use
    replay_window: int = 128
    lifetime_bytes: int = 0  # 0 = unlimited; soft limit raises SaEvent("soft")
    lifetime_packets: int = 0
    crypto_backend: str | None = None  # forced backend for the ESP sessions, None = policy
