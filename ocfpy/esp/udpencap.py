"""RFC 3948 UDP encapsulation: telling ESP, IKE and NAT keepalives apart on port 4500.

On the one socket both protocols share, an IKE message starts with the 4-byte non-ESP marker
(zero, where ESP would carry its SPI; SPI 0 is reserved), a NAT keepalive is the single byte
0xFF, and anything else is ESP.
"""

from __future__ import annotations

from enum import IntEnum

NON_ESP_MARKER = b"\x00\x00\x00\x00"
KEEPALIVE = b"\xff"


class Kind(IntEnum):
    ESP = 0
    IKE = 1
    KEEPALIVE = 2
    MALFORMED = 3


def classify(datagram: bytes) -> Kind:
    if datagram == KEEPALIVE:
        return Kind.KEEPALIVE
    if len(datagram) < 8:
        # An IKE header alone is 28 bytes and an ESP header 8: shorter is noise. (A 4..7 byte
        # datagram starting with the marker is an empty IKE message: malformed too.)
        return Kind.MALFORMED
    if datagram[:4] == NON_ESP_MARKER:
        return Kind.IKE
    return Kind.ESP
