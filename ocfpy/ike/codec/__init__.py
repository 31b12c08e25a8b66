"""IKEv2 wire format: buffer, header, payloads, rules table, SK protection. Knows no SA state."""

from ocfpy.ike.codec.buffer import Buffer, BufferReadError, Writer
from ocfpy.ike.codec.message import Message, decode, encode
from ocfpy.ike.codec.payloads import (
    AuthPayload,
    CertPayload,
    DeletePayload,
    EncryptedPayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    OpaquePayload,
    RawProposal,
    RawSelector,
    RawTransform,
    SaPayload,
    TsPayload,
    VendorIdPayload,
)
from ocfpy.ike.codec.sk import IntegrityCheckFailed, SkCrypto

__all__ = [
    "AuthPayload", "Buffer", "BufferReadError", "CertPayload", "DeletePayload",
    "EncryptedPayload", "IdPayload", "IntegrityCheckFailed", "KePayload", "Message",
    "NoncePayload", "NotifyPayload", "OpaquePayload", "RawProposal", "RawSelector",
    "RawTransform", "SaPayload", "SkCrypto", "TsPayload", "VendorIdPayload", "Writer", "decode",
    "encode",
]
