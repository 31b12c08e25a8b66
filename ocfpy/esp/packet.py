"""ESP packets (RFC 4303): encapsulation and decapsulation for one SA direction.

Wire format: SPI(4) | Sequence Number(4) | IV | ciphertext of (payload | padding | pad length |
next header) | ICV. Two cipher families:

- AEAD (AES-GCM, RFC 4106; ChaCha20-Poly1305, RFC 7634): the 8-byte IV is explicit on the wire;
  AAD = SPI || seq, or SPI || seq_hi || seq_lo with extended sequence numbers (RFC 4106 s. 5);
  the ICV is the AEAD tag.
- cipher + integrity (AES-CBC / AES-CTR with HMAC-SHA1/SHA2, RFC 4303, RFC 3602, RFC 3686,
  RFC 4868): encrypt-then-MAC; the ICV covers SPI..ciphertext and, with ESN, the high 32 bits
  of the sequence number appended for the computation only (RFC 4303 s. 2.2.1, 3.3.2.1): they
  never travel on the wire.

All crypto runs in dispatcher sessions opened once per SA direction; the batch methods submit
one batch per burst (the per-call overhead is what limits a Python dataplane). For the AEADs,
the framing around that one call per packet (header, IV, trailer, AAD out; lengths, AAD,
trailer check in) is ocfpy/esp/framing.py: compiled when built, else its Python twin.

The IV for the counter-style AEADs is the 64-bit sequence number: unique per key, which is all
RFC 4106 s. 3.1 and RFC 7634 s. 2 ask, and it costs no random bytes (strongSwan's iv_gen_seq).
CBC needs unpredictable IVs (RFC 3602 s. 2), taken from the dispatcher's random source once
per batch.

Decapsulation never raises for a bad packet: it returns a `Drop` reason, which the dataplane
counts.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

from ocfpy.crypto.catalogue import Primitive, Transform
from ocfpy.crypto.catalogue import get as get_transform
from ocfpy.crypto.errors import AuthenticationError, InvalidInput, InvalidKey, OcfError
from ocfpy.esp.framing import IV_SIZE, NH_FROM_VERSION, open_frames, seal_frames

if TYPE_CHECKING:
    from ocfpy.crypto.dispatcher import Dispatcher

NEXT_HEADER_IPV4 = 4
NEXT_HEADER_IPV6 = 41
NEXT_HEADER_NONE = 59  # "dummy packet" for traffic flow confidentiality (RFC 4303 s. 2.6)

_HEADER = struct.Struct("!II")  # SPI, sequence number (low 32 bits)
_PADS = [bytes(range(1, n + 1)) for n in range(256)]  # RFC 4303 s. 2.4: 1, 2, 3, ...
# padding || pad length || next header, by next header and pad length (built on first use)
class _Trailers(dict):
    def __missing__(self, nh: int) -> list[bytes]:
        table = [_PADS[n] + bytes((n, nh)) for n in range(256)]
        self[nh] = table
        return table


_TRAILERS = _Trailers()


class Drop(StrEnum):
    """Why an inbound packet was dropped (each is a counter)."""

    TRUNCATED = "truncated"  # shorter than header + IV + ICV, or ciphertext not block aligned
    UNKNOWN_SPI = "unknown_spi"
    REPLAY = "replay"  # replayed, or older than the window
    AUTH = "auth"  # ICV or AEAD tag did not verify
    BAD_PADDING = "bad_padding"  # pad length too long or pad bytes not 1, 2, 3...
    BAD_NEXT_HEADER = "bad_next_header"  # not IPv4/IPv6 in tunnel mode, or not matching the packet
    DUMMY = "dummy"  # next header 59: a TFC dummy packet, dropped as RFC 4303 says
    POLICY = "policy"  # inner addresses outside the SA's traffic selectors
    SEQ_EXHAUSTED = "seq_exhausted"  # outbound: the sequence number space is used up


_DROPS = (Drop.TRUNCATED, Drop.AUTH, Drop.BAD_PADDING)  # framing.open_frames' three verdicts


class EspCrypto:
    """The crypto of one SA direction: its sessions, sizes and the ESP trailer rules."""

    def __init__(
        self, dispatcher: Dispatcher, spi: int, encryption: str, integrity: str | None,
        encryption_key: bytes, integrity_key: bytes = b"", *, esn: bool = False,
        backend: str | None = None,
    ):
        self.spi = spi
        self.esn = esn
        self.encr: Transform = get_transform(encryption)
        if self.encr.primitive not in (Primitive.AEAD, Primitive.CIPHER):
            raise InvalidInput(f"{encryption} is not an ESP encryption algorithm")
        if len(encryption_key) != self.encr.keymat_size:
            raise InvalidKey(f"{encryption} needs {self.encr.keymat_size} bytes of keying "
                             f"material, got {len(encryption_key)}")
        self.aead = self.encr.primitive is Primitive.AEAD
        self.integ: Transform | None = None
        self.mac = None
        if self.aead:
            if integrity not in (None, "", "none"):
                raise InvalidInput(f"{encryption} is an AEAD: it takes no integrity algorithm "
                                   f"(got {integrity})")
            self.icv_size = self.encr.icv_size
            if self.encr.iv_size != IV_SIZE:  # every ESP AEAD's IV is 8 bytes (framing.py)
                raise InvalidInput(f"{encryption}: an ESP AEAD needs an {IV_SIZE}-byte IV, "
                                   f"not {self.encr.iv_size}")
        else:
            if not integrity:
                raise InvalidInput(f"{encryption} needs an integrity algorithm (RFC 4303 "
                                   "forbids confidentiality without integrity here)")
            self.integ = get_transform(integrity)
            if self.integ.primitive is not Primitive.INTEG:
                raise InvalidInput(f"{integrity} is not an integrity algorithm")
            if len(integrity_key) != self.integ.key_size:
                raise InvalidKey(f"{integrity} needs a {self.integ.key_size}-byte key, got "
                                 f"{len(integrity_key)}")
            self.icv_size = self.integ.icv_size
            self.mac = dispatcher.open(self.integ, key=integrity_key, backend=backend)
        self.cipher = dispatcher.open(self.encr, key=encryption_key, backend=backend)
        self.iv_size = self.encr.iv_size
        # The ciphertext must fill whole cipher blocks and end on a 4-byte boundary (s. 2.4).
        self.align = max(self.encr.block_size, 4)
        self._random = dispatcher.random
        self._spi_bytes = spi.to_bytes(4, "big")
        self.min_size = 8 + self.iv_size + self.align + self.icv_size

    @property
    def drivers(self) -> str:
        """Which driver(s) serve this direction, for counters and `ocfpy sa list`."""
        names = [self.cipher.driver] + ([self.mac.driver] if self.mac else [])
        return "+".join(dict.fromkeys(names))

    @property
    def migrations(self) -> int:
        """How often the dispatcher moved this direction's sessions to another driver (it does
        when a driver fails mid-stream): when it changes, ``drivers`` has changed."""
        return self.cipher.migrations + (self.mac.migrations if self.mac else 0)

    def overhead(self, payload_len: int) -> int:
        """ESP bytes added to a payload of this length (header, IV, trailer, padding, ICV)."""
        pad = -(payload_len + 2) % self.align
        return 8 + self.iv_size + pad + 2 + self.icv_size

    def close(self) -> None:
        self.cipher.close()
        if self.mac is not None:
            self.mac.close()

    # -- outbound --------------------------------------------------------------------------
    def trailer(self, payload_len: int, next_header: int) -> bytes:
        pad = -(payload_len + 2) % self.align
        return _PADS[pad] + bytes((pad, next_header))

    def encapsulate_batch(self, first_seq: int, payloads: Sequence[bytes],
                          next_header: int = NH_FROM_VERSION) -> list[bytes]:
        """ESP packets for payloads numbered first_seq, first_seq + 1, ... (64-bit sequence
        numbers); next_header for all of them, or NH_FROM_VERSION (tunnel mode): 4 for an
        IPv4 payload, else 41 (RFC 4303 s. 2.6)."""
        if self.aead:  # the framing around the AEAD call: compiled when built (framing.py)
            return seal_frames(self.cipher.seal_batch, self._spi_bytes, first_seq, payloads,
                               next_header, self.align, self.esn)
        spi = self._spi_bytes
        align = self.align
        trailers = _TRAILERS
        ivs = self._random(self.iv_size * len(payloads))
        size = self.iv_size
        enc_items = []
        heads = []
        for i, payload in enumerate(payloads):
            nh = next_header
            if nh == NH_FROM_VERSION:
                nh = NEXT_HEADER_IPV4 if payload and payload[0] >> 4 == 4 else NEXT_HEADER_IPV6
            iv = ivs[i * size:(i + 1) * size]
            heads.append(spi + ((first_seq + i) & 0xFFFFFFFF).to_bytes(4, "big") + iv)
            enc_items.append((iv, payload + trailers[nh][-(len(payload) + 2) % align]))
        cts = self.cipher.encrypt_batch(enc_items)
        packets = [h + c for h, c in zip(heads, cts, strict=True)]
        if self.esn:  # RFC 4303 s. 3.3.2.1: the high half is authenticated, never sent
            macs = self.mac.compute_batch(
                [p + ((first_seq + i) >> 32).to_bytes(4, "big") for i, p in enumerate(packets)])
        else:
            macs = self.mac.compute_batch(packets)
        return [p + m for p, m in zip(packets, macs, strict=True)]

    def encapsulate(self, seq: int, payload: bytes, next_header: int) -> bytes:
        return self.encapsulate_batch(seq, [payload], next_header)[0]

    # -- inbound ---------------------------------------------------------------------------
    def decapsulate_batch(
        self, items: Sequence[tuple[bytes, int]],
    ) -> list[tuple[bytes, int] | Drop]:
        """(payload, next header) or a Drop per (packet, 64-bit sequence number) item.

        The caller has already checked the SPI and the anti-replay window (without changing
        it) and inferred the high sequence bits; it advances the window only for results that
        are not a Drop.
        """
        if self.aead:  # the framing around the AEAD call: compiled when built (framing.py)
            return open_frames(self.cipher.open_batch, items, self.esn, self.icv_size,
                               self.align, _DROPS)
        out: list[tuple[bytes, int] | Drop | None] = [None] * len(items)
        work: list[int] = []
        min_size = self.min_size
        align = self.align
        ivs = self.iv_size
        icv = self.icv_size
        for i, (pkt, _seq) in enumerate(items):
            if len(pkt) < min_size or (len(pkt) - 8 - ivs - icv) % align:
                out[i] = Drop.TRUNCATED
            else:
                work.append(i)
        if not work:
            return out  # type: ignore[return-value]
        plains = self._verify_and_decrypt([items[i] for i in work])
        for i, plain in zip(work, plains, strict=True):
            out[i] = Drop.AUTH if plain is None else _strip_trailer(plain)
        return out  # type: ignore[return-value]

    def _verify_and_decrypt(self, items: Sequence[tuple[bytes, int]]) -> list[bytes | None]:
        icv = self.icv_size
        if self.esn:
            macs = self.mac.compute_batch(
                [pkt[:-icv] + (seq >> 32).to_bytes(4, "big") for pkt, seq in items])
        else:
            macs = self.mac.compute_batch([pkt[:-icv] for pkt, _ in items])
        ivs = self.iv_size
        todo = []
        ok = []
        for (pkt, _), mac in zip(items, macs, strict=True):
            good = hmac.compare_digest(mac, pkt[-icv:])
            ok.append(good)
            if good:
                todo.append((pkt[8:8 + ivs], pkt[8 + ivs:-icv]))
        plains = iter(self.cipher.decrypt_batch(todo) if todo else [])
        return [next(plains) if good else None for good in ok]

    def decapsulate(self, packet: bytes, seq: int | None = None) -> tuple[bytes, int]:
        """One packet, for tests and tools: raises EspDropped with the reason."""
        if seq is None:
            seq = int.from_bytes(packet[4:8], "big") if len(packet) >= 8 else 0
        result = self.decapsulate_batch([(packet, seq)])[0]
        if isinstance(result, Drop):
            if result is Drop.AUTH:
                raise AuthenticationError(f"ESP SPI {self.spi:#010x}: ICV did not verify")
            raise EspDropped(result)
        return result


class EspDropped(OcfError):
    def __init__(self, reason: Drop):
        self.reason = reason
        super().__init__(f"ESP packet dropped: {reason.value}")


def _strip_trailer(plain: bytes) -> tuple[bytes, int] | Drop:
    """Payload and next header, after checking the RFC 4303 s. 2.4 padding."""
    if len(plain) < 2:
        return Drop.BAD_PADDING
    pad = plain[-2]
    end = len(plain) - 2 - pad
    if end < 0 or plain[end:-2] != _PADS[pad]:
        return Drop.BAD_PADDING
    return plain[:end], plain[-1]


def parse_header(packet: bytes) -> tuple[int, int] | None:
    """(SPI, low 32 bits of the sequence number), or None if too short."""
    if len(packet) < 8:
        return None
    return _HEADER.unpack_from(packet)
