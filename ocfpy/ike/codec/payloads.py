"""IKEv2 payloads (RFC 7296 section 3): one class per payload, one pull_/push_ pair per body.

The codec knows structure only: it checks lengths, counts and reserved layout and raises
DecodeError (INVALID_SYNTAX) for anything that does not parse. What a payload *means* (which
proposal to pick, whether an ID matches) is for the tasks.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field

from ocfpy.ike.codec.buffer import Buffer, BufferReadError, Writer
from ocfpy.ike.constants import PayloadType, TsType
from ocfpy.ike.errors import DecodeError

GENERIC_HEADER_SIZE = 4
ATTR_KEY_LENGTH = 14
_AF_TV = 0x8000


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps on counts per message (issue 13 finding 6): parsing and matching thousands of
    empty proposals in one datagram costs CPU that nothing on the wire pays for. Real offers
    are far below these (charon's default offer: 2 proposals of under 30 transforms)."""

    proposals: int = 32  # per SA payload
    transforms: int = 64  # per proposal
    payloads: int = 64  # per chain (outer, or inside SK)
    notifies: int = 32  # per chain


DEFAULT_LIMITS = Limits()


class OverLimit(DecodeError):
    """A message with more of something than Limits allows: dropped and counted."""


# -- SA payload -----------------------------------------------------------------------------
@dataclass(slots=True)
class RawTransform:
    type: int
    id: int
    key_bits: int | None = None
    unknown_attributes: tuple[int, ...] = ()  # attribute types we do not understand

    def key(self) -> tuple[int, int, int | None]:
        return (self.type, self.id, self.key_bits)


@dataclass(slots=True)
class RawProposal:
    number: int
    protocol: int
    spi: bytes
    transforms: list[RawTransform] = field(default_factory=list)


@dataclass(slots=True)
class SaPayload:
    proposals: list[RawProposal] = field(default_factory=list)
    TYPE = PayloadType.SA


def pull_sa(buf: Buffer, limits: Limits = DEFAULT_LIMITS) -> SaPayload:
    proposals: list[RawProposal] = []
    last = 2
    while last == 2:
        if buf.eof():
            raise DecodeError("SA payload: proposal list ends before the last proposal")
        if len(proposals) >= limits.proposals:
            raise OverLimit(f"SA payload: more than {limits.proposals} proposals")
        last = buf.pull_uint8()
        if last not in (0, 2):
            raise DecodeError(f"SA payload: proposal substructure 'last' is {last}, not 0 or 2")
        buf.pull_uint8()
        length = buf.pull_uint16()
        if length < 8:
            raise DecodeError(f"SA payload: proposal length {length} < 8")
        body = buf.sub(length - 4)
        number = body.pull_uint8()
        protocol = body.pull_uint8()
        spi_size = body.pull_uint8()
        count = body.pull_uint8()
        spi = body.pull_bytes(spi_size)
        if proposals and number not in (proposals[-1].number, proposals[-1].number + 1):
            raise DecodeError(f"SA payload: proposal number {number} after "
                              f"{proposals[-1].number}")
        prop = RawProposal(number, protocol, spi)
        if count > limits.transforms:
            raise OverLimit(f"SA payload: proposal {number} has {count} transforms (more "
                            f"than {limits.transforms})")
        for i in range(count):
            tlast = body.pull_uint8()
            if tlast != (0 if i == count - 1 else 3):
                raise DecodeError(f"SA payload: transform {i + 1} of {count} has 'last' {tlast}")
            body.pull_uint8()
            tlen = body.pull_uint16()
            if tlen < 8:
                raise DecodeError(f"SA payload: transform length {tlen} < 8")
            tb = body.sub(tlen - 4)
            ttype = tb.pull_uint8()
            tb.pull_uint8()
            tid = tb.pull_uint16()
            key_bits = None
            unknown: list[int] = []
            while not tb.eof():
                atype = tb.pull_uint16()
                if atype & _AF_TV:
                    value = tb.pull_uint16()
                    if atype & 0x7FFF == ATTR_KEY_LENGTH:
                        key_bits = value
                    else:
                        unknown.append(atype & 0x7FFF)
                else:
                    alen = tb.pull_uint16()
                    tb.pull_bytes(alen)
                    unknown.append(atype)
            prop.transforms.append(RawTransform(ttype, tid, key_bits, tuple(unknown)))
        if not body.eof():
            raise DecodeError("SA payload: trailing bytes after the transforms of a proposal")
        proposals.append(prop)
    if not buf.eof():
        raise DecodeError("SA payload: bytes after the last proposal")
    # An offer numbers its proposals from 1; an accepted SA carries the one chosen proposal
    # under the number it had in the offer (RFC 7296 3.3.1), so a lone proposal may be any
    # number: charon answers "#2" when it picks our second ESP proposal.
    if len(proposals) > 1 and proposals[0].number != 1:
        raise DecodeError(f"SA payload: first proposal is number {proposals[0].number}, not 1")
    if proposals and proposals[0].number == 0:
        raise DecodeError("SA payload: proposal number 0")
    return SaPayload(proposals)


def push_sa(w: Writer, p: SaPayload) -> None:
    for i, prop in enumerate(p.proposals):
        start = len(w)
        w.push_uint8(0 if i == len(p.proposals) - 1 else 2)
        w.push_uint8(0)
        w.push_uint16(0)
        w.push_uint8(prop.number)
        w.push_uint8(prop.protocol)
        w.push_uint8(len(prop.spi))
        w.push_uint8(len(prop.transforms))
        w.push_bytes(prop.spi)
        for j, t in enumerate(prop.transforms):
            w.push_uint8(0 if j == len(prop.transforms) - 1 else 3)
            w.push_uint8(0)
            w.push_uint16(12 if t.key_bits is not None else 8)
            w.push_uint8(t.type)
            w.push_uint8(0)
            w.push_uint16(t.id)
            if t.key_bits is not None:
                w.push_uint16(_AF_TV | ATTR_KEY_LENGTH)
                w.push_uint16(t.key_bits)
        w.patch_uint16(start + 2, len(w) - start)


# -- KE, Nonce, ID, AUTH, CERT, CERTREQ, Vendor ID -------------------------------------------
@dataclass(slots=True)
class KePayload:
    group: int
    data: bytes
    TYPE = PayloadType.KE


def pull_ke(buf: Buffer) -> KePayload:
    group = buf.pull_uint16()
    buf.pull_uint16()
    return KePayload(group, buf.rest())


def push_ke(w: Writer, p: KePayload) -> None:
    w.push_uint16(p.group)
    w.push_uint16(0)
    w.push_bytes(p.data)


@dataclass(slots=True)
class NoncePayload:
    data: bytes
    TYPE = PayloadType.NONCE


def pull_nonce(buf: Buffer) -> NoncePayload:
    data = buf.rest()
    if not 16 <= len(data) <= 256:  # RFC 7296 3.9
        raise DecodeError(f"nonce of {len(data)} bytes (RFC 7296 3.9 allows 16..256)")
    return NoncePayload(data)


def push_nonce(w: Writer, p: NoncePayload) -> None:
    w.push_bytes(p.data)


@dataclass(slots=True)
class IdPayload:
    """IDi or IDr. ``body`` (type, reserved, data) is what AUTH signs (RestOfIDPayload)."""

    id_type: int
    data: bytes
    initiator: bool = True

    @property
    def TYPE(self) -> PayloadType:  # noqa: N802 - same spelling as the other payloads
        return PayloadType.IDi if self.initiator else PayloadType.IDr

    @property
    def body(self) -> bytes:
        return bytes((self.id_type, 0, 0, 0)) + self.data


def pull_id(buf: Buffer, initiator: bool) -> IdPayload:
    id_type = buf.pull_uint8()
    buf.pull_bytes(3)
    data = buf.rest()
    if not data:
        raise DecodeError("identification payload with no data")
    return IdPayload(id_type, data, initiator)


def push_id(w: Writer, p: IdPayload) -> None:
    w.push_bytes(p.body)


@dataclass(slots=True)
class AuthPayload:
    method: int
    data: bytes
    TYPE = PayloadType.AUTH


def pull_auth(buf: Buffer) -> AuthPayload:
    method = buf.pull_uint8()
    buf.pull_bytes(3)
    return AuthPayload(method, buf.rest())


def push_auth(w: Writer, p: AuthPayload) -> None:
    w.push_uint8(p.method)
    w.push_bytes(b"\x00\x00\x00")
    w.push_bytes(p.data)


@dataclass(slots=True)
class CertPayload:
    """CERT or CERTREQ, parsed and carried (certificate authentication is later work)."""

    encoding: int
    data: bytes
    request: bool = False

    @property
    def TYPE(self) -> PayloadType:  # noqa: N802
        return PayloadType.CERTREQ if self.request else PayloadType.CERT


def pull_cert(buf: Buffer, request: bool) -> CertPayload:
    return CertPayload(buf.pull_uint8(), buf.rest(), request)


def push_cert(w: Writer, p: CertPayload) -> None:
    w.push_uint8(p.encoding)
    w.push_bytes(p.data)


@dataclass(slots=True)
class VendorIdPayload:
    data: bytes
    TYPE = PayloadType.VENDOR_ID


# -- Notify and Delete ----------------------------------------------------------------------
@dataclass(slots=True)
class NotifyPayload:
    notify_type: int
    data: bytes = b""
    protocol: int = 0
    spi: bytes = b""
    TYPE = PayloadType.NOTIFY


def pull_notify(buf: Buffer) -> NotifyPayload:
    protocol = buf.pull_uint8()
    spi_size = buf.pull_uint8()
    ntype = buf.pull_uint16()
    spi = buf.pull_bytes(spi_size)
    return NotifyPayload(ntype, buf.rest(), protocol, spi)


def push_notify(w: Writer, p: NotifyPayload) -> None:
    w.push_uint8(p.protocol)
    w.push_uint8(len(p.spi))
    w.push_uint16(p.notify_type)
    w.push_bytes(p.spi)
    w.push_bytes(p.data)


@dataclass(slots=True)
class DeletePayload:
    protocol: int
    spis: list[bytes] = field(default_factory=list)
    TYPE = PayloadType.DELETE


def pull_delete(buf: Buffer) -> DeletePayload:
    protocol = buf.pull_uint8()
    spi_size = buf.pull_uint8()
    count = buf.pull_uint16()
    if protocol == 1 and (spi_size or count):
        raise DecodeError("Delete of an IKE SA carries no SPIs (RFC 7296 3.11)")
    if protocol in (2, 3) and spi_size != 4:
        raise DecodeError(f"Delete for protocol {protocol} with SPI size {spi_size}, not 4")
    spis = [buf.pull_bytes(spi_size) for _ in range(count)]
    if not buf.eof():
        raise DecodeError("Delete payload: bytes after the SPIs")
    return DeletePayload(protocol, spis)


def push_delete(w: Writer, p: DeletePayload) -> None:
    w.push_uint8(p.protocol)
    w.push_uint8(len(p.spis[0]) if p.spis else 0)
    w.push_uint16(len(p.spis))
    for spi in p.spis:
        w.push_bytes(spi)


# -- Traffic selectors ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RawSelector:
    ts_type: int
    protocol: int
    start_port: int
    end_port: int
    start: ipaddress.IPv4Address | ipaddress.IPv6Address
    end: ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(slots=True)
class TsPayload:
    selectors: list[RawSelector] = field(default_factory=list)
    initiator: bool = True

    @property
    def TYPE(self) -> PayloadType:  # noqa: N802
        return PayloadType.TSi if self.initiator else PayloadType.TSr


_ADDR_LEN = {TsType.IPV4_ADDR_RANGE: 4, TsType.IPV6_ADDR_RANGE: 16}


def pull_ts(buf: Buffer, initiator: bool) -> TsPayload:
    count = buf.pull_uint8()
    buf.pull_bytes(3)
    if count == 0:
        raise DecodeError("traffic selector payload with no selectors")
    sels: list[RawSelector] = []
    for _ in range(count):
        ts_type = buf.pull_uint8()
        proto = buf.pull_uint8()
        length = buf.pull_uint16()
        alen = _ADDR_LEN.get(ts_type)  # type: ignore[call-overload]
        if alen is None:
            # RFC 7296 3.13.1 lets unknown TS types be skipped; we keep nothing of them
            if length < 4:
                raise DecodeError(f"traffic selector of length {length}")
            buf.pull_bytes(length - 4)
            continue
        if length != 8 + 2 * alen:
            raise DecodeError(f"traffic selector type {ts_type} with length {length}")
        sp = buf.pull_uint16()
        ep = buf.pull_uint16()
        start = ipaddress.ip_address(buf.pull_bytes(alen))
        end = ipaddress.ip_address(buf.pull_bytes(alen))
        sels.append(RawSelector(ts_type, proto, sp, ep, start, end))
    if not buf.eof():
        raise DecodeError("traffic selector payload: bytes after the selectors")
    return TsPayload(sels, initiator)


def push_ts(w: Writer, p: TsPayload) -> None:
    w.push_uint8(len(p.selectors))
    w.push_bytes(b"\x00\x00\x00")
    for s in p.selectors:
        alen = _ADDR_LEN[TsType(s.ts_type)]
        w.push_uint8(s.ts_type)
        w.push_uint8(s.protocol)
        w.push_uint16(8 + 2 * alen)
        w.push_uint16(s.start_port)
        w.push_uint16(s.end_port)
        w.push_bytes(s.start.packed)
        w.push_bytes(s.end.packed)


# -- SK, and what we carry without understanding ----------------------------------------------
@dataclass(slots=True)
class EncryptedPayload:
    """SK (RFC 7296 3.14): ``first_inner`` is the type of the first payload inside."""

    first_inner: int
    body: bytes  # IV || ciphertext || ICV
    offset: int = 0  # where its generic header starts in the message (AAD / ICV span)
    TYPE = PayloadType.SK


@dataclass(slots=True)
class OpaquePayload:
    """A payload we parse only as bytes: CP, EAP, or an unknown non-critical one."""

    ptype: int
    data: bytes
    critical: bool = False

    @property
    def TYPE(self) -> int:  # noqa: N802
        return self.ptype


Payload = (SaPayload | KePayload | NoncePayload | IdPayload | AuthPayload | CertPayload
           | VendorIdPayload | NotifyPayload | DeletePayload | TsPayload | EncryptedPayload
           | OpaquePayload)

_PULL = {
    PayloadType.SA: pull_sa,
    PayloadType.KE: pull_ke,
    PayloadType.NONCE: pull_nonce,
    PayloadType.IDi: lambda b: pull_id(b, True),
    PayloadType.IDr: lambda b: pull_id(b, False),
    PayloadType.AUTH: pull_auth,
    PayloadType.CERT: lambda b: pull_cert(b, False),
    PayloadType.CERTREQ: lambda b: pull_cert(b, True),
    PayloadType.VENDOR_ID: lambda b: VendorIdPayload(b.rest()),
    PayloadType.NOTIFY: pull_notify,
    PayloadType.DELETE: pull_delete,
    PayloadType.TSi: lambda b: pull_ts(b, True),
    PayloadType.TSr: lambda b: pull_ts(b, False),
    PayloadType.CP: lambda b: OpaquePayload(PayloadType.CP, b.rest()),
    PayloadType.EAP: lambda b: OpaquePayload(PayloadType.EAP, b.rest()),
}

_PUSH = {
    SaPayload: push_sa,
    KePayload: push_ke,
    NoncePayload: push_nonce,
    IdPayload: push_id,
    AuthPayload: push_auth,
    CertPayload: push_cert,
    VendorIdPayload: lambda w, p: w.push_bytes(p.data),
    NotifyPayload: push_notify,
    DeletePayload: push_delete,
    TsPayload: push_ts,
    OpaquePayload: lambda w, p: w.push_bytes(p.data),
}


class UnsupportedCriticalPayload(DecodeError):
    def __init__(self, ptype: int):
        from ocfpy.ike.constants import NotifyType

        super().__init__(f"unknown payload type {ptype} with the critical bit set",
                         NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, bytes((ptype,)))


def pull_payloads(buf: Buffer, first: int, limits: Limits = DEFAULT_LIMITS) -> list[Payload]:
    """The payload chain starting with type ``first`` up to the end of ``buf``.

    SK ends the chain (RFC 7296 3.14: it is the last payload; its Next Payload field names
    the first payload inside). Unknown payloads: critical -> UNSUPPORTED_CRITICAL_PAYLOAD,
    otherwise kept as OpaquePayload and ignored by the rules (RFC 7296 2.5).
    """
    out: list[Payload] = []
    ptype = first
    notifies = 0
    try:
        while ptype != PayloadType.NONE:
            if len(out) >= limits.payloads:
                raise OverLimit(f"more than {limits.payloads} payloads in one message")
            if ptype == PayloadType.NOTIFY:
                notifies += 1
                if notifies > limits.notifies:
                    raise OverLimit(f"more than {limits.notifies} notify payloads in one "
                                    "message")
            offset = buf.position
            nxt = buf.pull_uint8()
            flags = buf.pull_uint8()
            length = buf.pull_uint16()
            if length < GENERIC_HEADER_SIZE:
                raise DecodeError(f"payload type {ptype} with length {length}")
            body = buf.sub(length - GENERIC_HEADER_SIZE)
            if ptype == PayloadType.SK:
                if not buf.eof():
                    raise DecodeError("bytes after the encrypted payload (RFC 7296 3.14: SK is last)")
                out.append(EncryptedPayload(nxt, body.rest(), offset))
                return out
            if ptype == PayloadType.SKF:
                # RFC 7383 2.5: the Encrypted Fragment payload is alone and last; its Next
                # Payload names the first inner payload (fragment 1) or is 0. The exchange
                # layer opens and reassembles it (ocfpy.ike.fragments).
                if not buf.eof() or out:
                    raise DecodeError("an encrypted fragment payload must be the only payload "
                                      "(RFC 7383 2.5)")
                out.append(OpaquePayload(PayloadType.SKF, body.rest(), False))
                return out
            pull = _PULL.get(ptype)  # type: ignore[call-overload]
            if ptype == PayloadType.SA:
                pull = functools.partial(pull_sa, limits=limits)
            if pull is None:
                if flags & 0x80:
                    raise UnsupportedCriticalPayload(ptype)
                out.append(OpaquePayload(ptype, body.rest(), False))
            else:
                p = pull(body)
                if not body.eof():
                    raise DecodeError(f"{PayloadType(ptype).name} payload: trailing bytes")
                out.append(p)
            ptype = nxt
        if not buf.eof():
            raise DecodeError(f"{buf.remaining()} bytes after the last payload")
    except BufferReadError as exc:
        raise DecodeError(f"truncated payload: {exc}") from None
    except ValueError as exc:  # e.g. a bad address inside a selector
        raise DecodeError(f"malformed payload: {exc}") from None
    return out


def push_payloads(w: Writer, payloads: list[Payload], last_next: int = PayloadType.NONE) -> int:
    """Append the chain; returns the type of the first payload (for the header)."""
    if not payloads:
        return last_next
    prev_header = -1
    first = int(payloads[0].TYPE)
    for p in payloads:
        if prev_header >= 0:
            w.data[prev_header] = int(p.TYPE)
        prev_header = len(w)
        w.push_uint8(int(last_next))
        w.push_uint8(0)
        w.push_uint16(0)
        _PUSH[type(p)](w, p)
        w.patch_uint16(prev_header + 2, len(w) - prev_header)
    return first
