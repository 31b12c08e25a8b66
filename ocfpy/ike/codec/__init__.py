"""IKEv2 wire format: buffer, header, payloads, rules table, SK protection. Knows no SA state."""

from .buffer import Buffer, BufferReadError, Writer
from .message import Message, decode, encode
from .payloads import (
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
from .sk import IntegrityCheckFailed, SkCrypto

__all__ = [
    "AuthPayload", "Buffer", "BufferReadError", "CertPayload", "DeletePayload",
    "EncryptedPayload", "IdPayload", "IntegrityCheckFailed", "KePayload", "Message",
    "NoncePayload", "NotifyPayload", "OpaquePayload", "RawProposal", "RawSelector",
    "RawTransform", "SaPayload", "SkCrypto", "TsPayload", "VendorIdPayload", "Writer", "decode",
    "encode",
]
