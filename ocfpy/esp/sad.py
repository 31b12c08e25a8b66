"""Security association database: the state of each installed SA direction.

An outbound SA owns its sequence counter; an inbound SA its replay window and selector check.
Both count towards their lifetime (RFC 4301 s. 4.4.2.1: soft limit -> rekey, hard limit -> the
SA is gone). The limits in a ChildSaSpec are the hard limits; the soft limit is 90% of them,
like strongSwan's default rekey margin (life_bytes = 110% of rekey_bytes).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from enum import StrEnum

from ocfpy.esp.counters import SharedSequence
from ocfpy.esp.packet import EspCrypto
from ocfpy.esp.replay import ReplayWindow
from ocfpy.esp.spd import InboundCheck
from ocfpy.esp.spec import ChildSaSpec, UdpEncap

SOFT_FRACTION = 0.9
SEQ_MAX_32 = 0xFFFFFFFF
SEQ_MAX_64 = 0xFFFFFFFFFFFFFFFF


class Expiry(StrEnum):
    SOFT = "soft"
    HARD = "hard"


@dataclass
class Lifetime:
    hard_bytes: int = 0  # 0 = unlimited
    hard_packets: int = 0
    bytes: int = 0
    packets: int = 0
    soft_sent: bool = False

    @property
    def limited(self) -> bool:
        return bool(self.hard_bytes or self.hard_packets)

    @classmethod
    def from_spec(cls, spec: ChildSaSpec) -> Lifetime:
        return cls(spec.lifetime_bytes, spec.lifetime_packets)

    def consume(self, packets: int, nbytes: int) -> tuple[Expiry, str] | None:
        """Count traffic; report the first limit crossed (each at most once)."""
        return self.observe(self.packets + packets, self.bytes + nbytes)

    def observe(self, packets: int, nbytes: int) -> tuple[Expiry, str] | None:
        """The SA's totals so far (with several workers: summed over their counter lanes);
        the limit crossed, as consume()."""
        self.packets = packets
        self.bytes = nbytes
        hb, hp = self.hard_bytes, self.hard_packets
        if not (hb or hp):
            return None
        if (hb and self.bytes >= hb) or (hp and self.packets >= hp):
            what = "bytes" if hb and self.bytes >= hb else "packets"
            return Expiry.HARD, f"hard {what} limit reached ({self.bytes} bytes, {self.packets} packets)"
        if not self.soft_sent and ((hb and self.bytes >= hb * SOFT_FRACTION)
                                   or (hp and self.packets >= hp * SOFT_FRACTION)):
            self.soft_sent = True
            return Expiry.SOFT, f"soft limit reached ({self.bytes} bytes, {self.packets} packets)"
        return None


@dataclass
class OutboundSa:
    unique_id: int
    crypto: EspCrypto
    remote: str  # outer destination address
    encap: UdpEncap | None
    slot: int  # counter slot
    esn: bool
    seqs: SharedSequence  # the SA's one counter, shared by the outbound workers
    lifetime: Lifetime = field(default_factory=Lifetime)
    expired: bool = False
    migrations: int = 0  # crypto.migrations when the daemon was last told the drivers

    @property
    def spi(self) -> int:
        return self.crypto.spi

    @property
    def seq(self) -> int:
        """The last sequence number reserved (by any worker)."""
        return self.seqs.last

    def take_seqs(self, n: int) -> tuple[int, int]:
        """Reserve n sequence numbers: (the number before the block, how many could be
        reserved; 0 = exhausted).

        The counter never cycles (RFC 4303 s. 3.3.3): at 2^32 - 1 (or 2^64 - 1 with ESN) the SA
        is used up and must be rekeyed.
        """
        return self.seqs.take(n)


@dataclass
class InboundSa:
    unique_id: int
    crypto: EspCrypto
    replay: ReplayWindow
    check: InboundCheck
    slot: int
    lifetime: Lifetime = field(default_factory=Lifetime)
    migrations: int = 0  # crypto.migrations when the daemon was last told the drivers

    @property
    def spi(self) -> int:
        return self.crypto.spi


def private_sequence(esn: bool) -> SharedSequence:
    """A counter no other process sees (tests, and SAs built outside a dataplane)."""
    return SharedSequence(memoryview(array("Q", [0])), 0, SEQ_MAX_64 if esn else SEQ_MAX_32,
                          None)


def build_outbound(spec: ChildSaSpec, dispatcher, slot: int,
                   seqs: SharedSequence | None = None) -> OutboundSa:
    crypto = EspCrypto(dispatcher, spec.outbound.spi, spec.encryption, spec.integrity,
                       spec.outbound.encryption_key, spec.outbound.integrity_key, esn=spec.esn,
                       backend=spec.crypto_backend)
    return OutboundSa(spec.unique_id, crypto, str(spec.remote), spec.encap, slot, spec.esn,
                      seqs or private_sequence(spec.esn), lifetime=Lifetime.from_spec(spec))


def build_inbound(spec: ChildSaSpec, dispatcher, slot: int) -> InboundSa:
    crypto = EspCrypto(dispatcher, spec.inbound.spi, spec.encryption, spec.integrity,
                       spec.inbound.encryption_key, spec.inbound.integrity_key, esn=spec.esn,
                       backend=spec.crypto_backend)
    return InboundSa(spec.unique_id, crypto, ReplayWindow(spec.replay_window, spec.esn),
                     InboundCheck(spec.local_ts, spec.remote_ts), slot,
                     lifetime=Lifetime.from_spec(spec))
