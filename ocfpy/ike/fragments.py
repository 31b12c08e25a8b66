"""IKE fragmentation (RFC 7383): the SKF payload, splitting, and bounded reassembly.

When both sides sent IKEV2_FRAGMENTATION_SUPPORTED in IKE_SA_INIT (RFC 7383 section 2.3), a
message protected by SK that would exceed the path's size is sent as several messages, each
with one Encrypted Fragment payload (SKF, type 53, section 2.5): the same IKE header (message
ID, exchange, flags), and

    generic payload header (Next Payload = first inner payload in fragment 1, else 0)
    Fragment Number (2 octets, from 1) | Total Fragments (2 octets)
    IV | encrypted chunk of the inner payloads, padded | ICV

Each fragment is encrypted and integrity-protected on its own; the AAD (AEAD) is the IKE header
and the 8-octet SKF header, the ICV (encrypt-then-MAC) covers everything before it. So a
receiver authenticates every fragment BEFORE keeping it (section 2.6) and a forged fragment can
neither take memory nor disturb a reassembly in progress. `Reassembler` does that with a
caller-supplied ``open`` (verify then decrypt: `open_with(sk_crypto)` adapts an SkCrypto),
within bounds on fragment count, total bytes and time (``max_fragments``, ``max_bytes``,
``timeout``), with the RFC's rules for duplicates and for a peer that re-fragments with a
smaller size on retransmission (section 2.6.2: a larger Total Fragments restarts, a smaller one
is dropped).

Sans-I/O: the time comes in as ``now`` (seconds, any monotonic origin).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ocfpy.ike.codec.buffer import Buffer, Writer
from ocfpy.ike.codec.header import Header, push_header
from ocfpy.ike.constants import IKE_HEADER_SIZE, PayloadType
from ocfpy.ike.errors import DecodeError, IkeError

SKF_HEADER_SIZE = 8  # generic header (4) + Fragment Number (2) + Total Fragments (2)
SKF_PAYLOAD_TYPE = 53  # RFC 7383 section 2.5

# strongSwan's charon.fragment_size: the whole IP datagram of a fragment. 1280 is the IPv6
# minimum MTU (RFC 8200 section 5) and what RFC 7383 section 2.5.1 suggests for IPv6; it is
# safe for IPv4 too on today's paths, so it is the default for both, as in strongSwan.
DEFAULT_FRAGMENT_SIZE = 1280
DEFAULT_MAX_FRAGMENTS = 64
DEFAULT_MAX_BYTES = 65536  # reassembled inner payloads; a certificate chain fits many times
DEFAULT_TIMEOUT = 30.0  # seconds a reassembly may take (the initiator retransmits before)
FRAGMENTATION_POLICIES = ("yes", "no", "force")


class FragmentError(IkeError):
    """A fragment that cannot be used (reported by the codec as DecodeError)."""


@dataclass(slots=True)
class FragmentPayload:
    """SKF (RFC 7383 section 2.5). ``first_inner`` is the generic header's Next Payload."""

    first_inner: int
    number: int
    total: int
    body: bytes  # IV || ciphertext || ICV
    offset: int = 0  # where its generic header starts in the message (AAD / ICV span)
    TYPE = PayloadType.SKF


def pull_skf(buf: Buffer, first_inner: int, offset: int = 0) -> FragmentPayload:
    """The SKF body after the generic header (as payloads.pull_* take them)."""
    number = buf.pull_uint16()
    total = buf.pull_uint16()
    # Section 2.5: numbers start at 1 and a fragment's number cannot exceed the total.
    if number == 0 or total == 0 or number > total:
        raise DecodeError(f"SKF fragment {number} of {total}")
    return FragmentPayload(first_inner, number, total, buf.rest(), offset)


def push_skf(w: Writer, p: FragmentPayload) -> None:
    w.push_uint16(p.number)
    w.push_uint16(p.total)
    w.push_bytes(p.body)


def parse_fragment_message(raw: bytes, header: Header) -> FragmentPayload:
    """The SKF payload of a fragment message (it must be the only payload, section 2.5)."""
    if header.next_payload != SKF_PAYLOAD_TYPE:
        raise DecodeError("not a fragment message")
    at = IKE_HEADER_SIZE
    if len(raw) < at + SKF_HEADER_SIZE:
        raise DecodeError("fragment message too short for its SKF header")
    next_payload, _flags, length = struct.unpack_from("!BBH", raw, at)
    if at + length != len(raw) or length < SKF_HEADER_SIZE:
        raise DecodeError(f"SKF payload length {length} does not fill the message")
    return pull_skf(Buffer(raw, start=at + 4, end=at + length), next_payload, at)


# -- sending ---------------------------------------------------------------------------------
class SealsSk(Protocol):
    """What splitting needs from the SA's SK protection (ocfpy.ike.codec.sk.SkCrypto has it)."""

    iv_size: int
    icv_size: int
    block: int

    def padded(self, inner: bytes) -> bytes: ...
    def seal(self, prefix: bytes, plaintext: bytes) -> bytes: ...


def chunk_capacity(crypto: SealsSk, fragment_size: int = DEFAULT_FRAGMENT_SIZE, *,
                   ipv6: bool = True, nat_t: bool = False) -> int:
    """Inner-payload bytes that fit in one fragment of ``fragment_size`` IP bytes (section
    2.5.1): minus IP (40 or 20), UDP (8), the non-ESP marker on port 4500 (4), the IKE header,
    the SKF header, IV, ICV, and the padding to the cipher block with its length octet."""
    room = (fragment_size - (40 if ipv6 else 20) - 8 - (4 if nat_t else 0) - IKE_HEADER_SIZE
            - SKF_HEADER_SIZE - crypto.iv_size - crypto.icv_size)
    room -= room % max(crypto.block, 1)
    capacity = room - 1  # the Pad Length octet
    if capacity < 64:
        raise ValueError(f"fragment size {fragment_size} leaves {capacity} bytes per fragment")
    return capacity


def datagram_size(message_len: int, *, ipv6: bool = True, nat_t: bool = False) -> int:
    return message_len + (40 if ipv6 else 20) + 8 + (4 if nat_t else 0)


def should_fragment(policy: str, peer_supports: bool, message_len: int,
                    fragment_size: int = DEFAULT_FRAGMENT_SIZE, *, ipv6: bool = True,
                    nat_t: bool = False) -> bool:
    """Whether to send a message protected by SK as fragments.

    ``policy`` is the connection's ``fragmentation``: "no" never; "yes" when the message's
    datagram exceeds ``fragment_size``; "force" always (every SK message, however small: for
    testing a path). Never unless the peer announced IKEV2_FRAGMENTATION_SUPPORTED, which
    RFC 7383 section 2.3 requires, whatever the policy."""
    if policy not in FRAGMENTATION_POLICIES:
        raise ValueError(f"fragmentation must be one of {', '.join(FRAGMENTATION_POLICIES)}")
    if policy == "no" or not peer_supports:
        return False
    if policy == "force":
        return True
    return datagram_size(message_len, ipv6=ipv6, nat_t=nat_t) > fragment_size


def split(header: Header, first_inner: int, inner: bytes, crypto: SealsSk, capacity: int
          ) -> list[bytes]:
    """The fragment messages for one message: ``header`` is the message's IKE header (its
    next_payload and length are replaced), ``inner`` the unencrypted inner payload chain whose
    first payload has type ``first_inner``. Keep the list: a retransmission resends all of it
    (section 2.6.1), byte for byte."""
    if not inner:
        raise ValueError("nothing to fragment")
    chunks = [inner[i:i + capacity] for i in range(0, len(inner), capacity)]
    total = len(chunks)
    if total > 0xFFFF:
        raise ValueError(f"{total} fragments exceed the 16-bit Total Fragments field")
    out = []
    for number, chunk in enumerate(chunks, start=1):
        plaintext = crypto.padded(chunk)
        skf_len = SKF_HEADER_SIZE + crypto.iv_size + len(plaintext) + crypto.icv_size
        h = Header(header.spi_i, header.spi_r, SKF_PAYLOAD_TYPE, header.version,
                   header.exchange, header.flags, header.message_id, IKE_HEADER_SIZE + skf_len)
        prefix = push_header(h) + struct.pack(
            "!BBHHH", first_inner if number == 1 else 0, 0, skf_len, number, total)
        out.append(crypto.seal(prefix, plaintext))
    return out


# -- receiving -------------------------------------------------------------------------------
Opener = Callable[[bytes, FragmentPayload], bytes]
"""(raw fragment message, its SKF) -> the decrypted chunk; raises if it does not verify."""


def open_with(crypto) -> Opener:
    """An Opener for an SkCrypto: its open() takes the AAD up to ``sk_offset + 4``; for SKF the
    AAD runs to the end of the 8-octet SKF header, hence the 4 (RFC 7383 section 2.5)."""
    return lambda raw, skf: crypto.open(raw, skf.offset + 4, skf.body)


@dataclass(frozen=True, slots=True)
class Reassembled:
    message_id: int
    first_inner: int
    inner: bytes  # the whole inner payload chain, to parse like a decrypted SK payload


@dataclass
class _Pending:
    message_id: int
    total: int
    started: float
    chunks: dict[int, bytes] = field(default_factory=dict)
    first_inner: int = 0
    size: int = 0


COUNTERS = ("kept", "completed", "duplicate", "forged", "stale_total", "restarted",
            "too_many", "too_big", "expired", "malformed")


class Reassembler:
    """Reassembly for one IKE SA and one direction, one message at a time (the IKE window is
    one: section 2.6 keeps fragments of the message being received only)."""

    def __init__(self, *, max_fragments: int = DEFAULT_MAX_FRAGMENTS,
                 max_bytes: int = DEFAULT_MAX_BYTES, timeout: float = DEFAULT_TIMEOUT):
        self.max_fragments = max_fragments
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._pending: _Pending | None = None
        # The message ID last reassembled: its fragments keep arriving when the peer
        # retransmits (section 2.6.1) and must not start a new reassembly; the engine answers
        # such a retransmission with its response, as for an unfragmented one.
        self.last_completed: int | None = None
        self.counters = dict.fromkeys(COUNTERS, 0)

    @property
    def pending(self) -> tuple[int, int, int] | None:
        """(message ID, fragments kept, total) of the reassembly in progress."""
        p = self._pending
        return None if p is None else (p.message_id, len(p.chunks), p.total)

    @property
    def held_bytes(self) -> int:
        return 0 if self._pending is None else self._pending.size

    def expire(self, now: float) -> bool:
        """Drop a reassembly older than ``timeout``; True if one was dropped."""
        p = self._pending
        if p is not None and now - p.started > self.timeout:
            self._pending = None
            self.counters["expired"] += 1
            return True
        return False

    def add(self, raw: bytes, message_id: int, skf: FragmentPayload, open_: Opener,
            now: float) -> Reassembled | None:
        """Offer one fragment message (its IKE header already checked by the caller: SPIs,
        exchange, message ID in the window). Returns the whole message once the last fragment
        is in, else None. A fragment that fails authentication is dropped before anything is
        kept or discarded, and counted as forged."""
        self.expire(now)
        c = self.counters
        if skf.total > self.max_fragments:
            c["too_many"] += 1
            return None
        if skf.number < 1 or skf.number > skf.total:
            c["malformed"] += 1
            return None
        if message_id == self.last_completed:
            c["duplicate"] += 1
            return None
        p = self._pending
        same = p is not None and p.message_id == message_id
        if same and skf.total < p.total:  # type: ignore[union-attr]
            c["stale_total"] += 1  # section 2.6.2: fragments of an older, larger split
            return None
        if same and skf.total == p.total and skf.number in p.chunks:  # type: ignore[union-attr]
            c["duplicate"] += 1
            return None
        try:
            chunk = open_(raw, skf)  # authenticate (and decrypt) before keeping anything
        except Exception:  # noqa: BLE001 - integrity or padding failure: a forged fragment
            c["forged"] += 1
            return None
        if skf.number == 1 and skf.first_inner == 0:
            c["malformed"] += 1  # section 2.5: fragment 1 names the first inner payload
            return None
        if not same or skf.total > p.total:  # type: ignore[union-attr]
            if same:
                c["restarted"] += 1  # the peer re-fragmented with a smaller size
            p = self._pending = _Pending(message_id, skf.total, now)
        assert p is not None
        if p.size + len(chunk) > self.max_bytes:
            self._pending = None
            c["too_big"] += 1
            return None
        p.chunks[skf.number] = chunk
        p.size += len(chunk)
        if skf.number == 1:
            p.first_inner = skf.first_inner
        c["kept"] += 1
        if len(p.chunks) < p.total:
            return None
        self._pending = None
        self.last_completed = message_id
        c["completed"] += 1
        return Reassembled(message_id, p.first_inner,
                           b"".join(p.chunks[i] for i in range(1, p.total + 1)))
