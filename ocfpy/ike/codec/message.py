"""Whole IKE messages: header + payload chain, with the SK payload sealed or opened.

decode() parses the header and the outer chain and leaves SK sealed; `Message.decrypt()`
opens it with the SA's SkCrypto and checks the exchange's rules table. encode() builds the
bytes, wrapping the payloads in SK when the exchange is encrypted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ocfpy.ike.codec import rules
from ocfpy.ike.codec.buffer import Buffer, Writer
from ocfpy.ike.codec.header import Header, pull_header, push_header
from ocfpy.ike.codec.payloads import (
    DEFAULT_LIMITS,
    EncryptedPayload,
    Limits,
    NotifyPayload,
    Payload,
    pull_payloads,
    push_payloads,
)
from ocfpy.ike.codec.sk import SK_HEADER_SIZE, SkCrypto, Unauthenticated
from ocfpy.ike.constants import IKE_HEADER_SIZE, IKE_VERSION, ExchangeType, HeaderFlag, PayloadType
from ocfpy.ike.errors import DecodeError


@dataclass(slots=True)
class Message:
    spi_i: bytes
    spi_r: bytes
    exchange: int
    message_id: int
    is_response: bool
    from_initiator: bool
    payloads: list[Payload] = field(default_factory=list)
    raw: bytes = b""  # as received or as sent
    encrypted: bool = False  # arrived inside (or is to be put in) an SK payload
    limits: Limits = DEFAULT_LIMITS  # what decrypt() allows inside SK

    # -- lookups the tasks use -----------------------------------------------------------
    def get(self, ptype: int):
        for p in self.payloads:
            if p.TYPE == ptype:
                return p
        return None

    def all(self, ptype: int) -> list:
        return [p for p in self.payloads if p.TYPE == ptype]

    def notify(self, ntype: int) -> NotifyPayload | None:
        for p in self.payloads:
            if p.TYPE == PayloadType.NOTIFY and p.notify_type == ntype:  # type: ignore[union-attr]
                return p  # type: ignore[return-value]
        return None

    def notifies(self) -> list[NotifyPayload]:
        return [p for p in self.payloads if p.TYPE == PayloadType.NOTIFY]  # type: ignore[misc]

    @property
    def sk(self) -> EncryptedPayload | None:
        last = self.payloads[-1] if self.payloads else None
        return last if isinstance(last, EncryptedPayload) else None

    def decrypt(self, crypto: SkCrypto) -> None:
        """Replace the SK payload by what it carries, then check the rules table.

        Failures before the ICV verified raise Unauthenticated (or IntegrityCheckFailed):
        the caller must not let such a message change anything. A DecodeError raised after
        it comes from the authenticated peer."""
        sk = self.sk
        if sk is None:
            raise Unauthenticated(f"{_xname(self.exchange)} message without an encrypted "
                                  "payload", "no_sk")
        outer = [p for p in self.payloads[:-1] if p.TYPE in (int(t) for t in PayloadType)]
        if outer:
            raise Unauthenticated("unencrypted payloads before the encrypted payload",
                                  "plain_before_sk")
        inner = crypto.open(self.raw, sk.offset, sk.body)
        self.payloads = pull_payloads(Buffer(inner), sk.first_inner, self.limits)
        self.encrypted = True
        rules.check(self.exchange, self.is_response, self.payloads)

    def check_plain(self) -> None:
        """For unencrypted exchanges (IKE_SA_INIT): check the rules table."""
        if rules.is_encrypted(self.exchange):
            raise DecodeError(f"{_xname(self.exchange)} must be encrypted")
        rules.check(self.exchange, self.is_response, self.payloads)


def _xname(x: int) -> str:
    try:
        return ExchangeType(x).name
    except ValueError:
        return f"exchange {x}"


def decode(data: bytes, header: Header | None = None,
           limits: Limits = DEFAULT_LIMITS) -> Message:
    """Header and outer payload chain; SK stays sealed. Raises DecodeError (OverLimit when
    a count exceeds ``limits``)."""
    h = header or pull_header(data)
    payloads = pull_payloads(Buffer(data, start=IKE_HEADER_SIZE), h.next_payload, limits)
    return Message(h.spi_i, h.spi_r, h.exchange, h.message_id, h.is_response, h.from_initiator,
                   payloads, bytes(data), limits=limits)


def encode(msg: Message, crypto: SkCrypto | None = None) -> bytes:
    """Serialize; with ``crypto`` the payloads travel inside an SK payload."""
    flags = HeaderFlag.NONE
    if msg.is_response:
        flags |= HeaderFlag.RESPONSE
    if msg.from_initiator:
        flags |= HeaderFlag.INITIATOR
    w = Writer()
    if crypto is None:
        first = push_payloads(w, msg.payloads)
        h = Header(msg.spi_i, msg.spi_r, first, IKE_VERSION, msg.exchange, int(flags),
                   msg.message_id, IKE_HEADER_SIZE + len(w))
        msg.raw = push_header(h) + w.getvalue()
        return msg.raw
    first_inner = push_payloads(w, msg.payloads)
    plaintext = crypto.padded(w.getvalue())
    sk_len = crypto.sk_length(len(plaintext))
    h = Header(msg.spi_i, msg.spi_r, PayloadType.SK, IKE_VERSION, msg.exchange, int(flags),
               msg.message_id, IKE_HEADER_SIZE + sk_len)
    prefix = push_header(h) + bytes((first_inner, 0)) + sk_len.to_bytes(2, "big")
    msg.raw = crypto.seal(prefix, plaintext)
    msg.encrypted = True
    assert len(msg.raw) == IKE_HEADER_SIZE + sk_len
    return msg.raw


__all__ = ["Message", "decode", "encode", "SK_HEADER_SIZE"]
