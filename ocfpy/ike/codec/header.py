"""The IKE header (RFC 7296 section 3.1)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ocfpy.ike.constants import IKE_HEADER_SIZE, HeaderFlag, NotifyType
from ocfpy.ike.errors import DecodeError

_HEADER = struct.Struct("!8s8sBBBBLL")


@dataclass(slots=True)
class Header:
    spi_i: bytes
    spi_r: bytes
    next_payload: int
    version: int  # major << 4 | minor
    exchange: int
    flags: int
    message_id: int
    length: int

    @property
    def major(self) -> int:
        return self.version >> 4

    @property
    def is_response(self) -> bool:
        return bool(self.flags & HeaderFlag.RESPONSE)

    @property
    def from_initiator(self) -> bool:
        return bool(self.flags & HeaderFlag.INITIATOR)


def pull_header(data: bytes) -> Header:
    """Parse and check the fixed header. Length must match the datagram exactly."""
    if len(data) < IKE_HEADER_SIZE:
        raise DecodeError(f"{len(data)} bytes: shorter than an IKE header")
    h = Header(*_HEADER.unpack_from(data))
    if h.length != len(data):
        raise DecodeError(f"header says {h.length} bytes, datagram has {len(data)}")
    if h.major != 2:
        # RFC 7296 2.5: a higher major version is answered with INVALID_MAJOR_VERSION
        raise DecodeError(f"IKE major version {h.major}", NotifyType.INVALID_MAJOR_VERSION,
                          bytes((0x20,)))
    return h


def push_header(h: Header) -> bytes:
    return _HEADER.pack(h.spi_i, h.spi_r, h.next_payload, h.version, h.exchange, h.flags,
                        h.message_id, h.length)
