"""The ESP framing around one AEAD call per packet, for a batch: compiled when it can be.

Two functions, each with a compiled twin in ocfpy/esp/_framing.c and the pure-Python one
here; the same arguments give the same results (bytes for bytes, drop for drop, the same
exception class), which tests/unit/esp/test_framing.py and the `esp_framing` fuzz target
check on the same inputs. The AEAD is not part of either: both call the session's batch
method handed in, so the dispatcher keeps choosing the driver, counting and migrating.

- ``seal_frames(seal_batch, spi, first_seq, payloads, next_header, align, esn)``: packet i gets the
  64-bit sequence number first_seq + i, whose 8 bytes are also its IV (unique per key: RFC
  4106 s. 3.1, RFC 7634 s. 2); plaintext = payload || 1, 2, 3, ... || pad length || next
  header, ending on ``align`` (RFC 4303 s. 2.4-2.6); next_header -1 is tunnel mode (4 for an
  IPv4 payload, else 41: s. 2.6); AAD = SPI || seq low, with ESN SPI || seq high || seq low
  (RFC 4106 s. 5, RFC 7634 s. 2.1, RFC 4303 s. 2.2.1); wire = SPI || seq low || IV || sealed
  (RFC 4303 s. 2, 3.3). Returns the wire packets.
- ``open_frames(open_batch, items, esn, icv, align, drops)``: items are (packet, inferred 64-bit
  sequence number); drops = (truncated, auth, bad padding) are returned for a packet too
  short or not aligned (never handed to the AEAD), a tag that failed, a trailer whose pad
  length overruns the plaintext or whose pad bytes are not 1, 2, 3, ... (RFC 4303 s. 2.4).
  Returns (payload, next header) or the drop, per item.

``COMPILED`` says which one runs; ``OCFPY_PURE_PYTHON=1`` in the environment (read at import)
forces the Python twin, as does a build without a C compiler (setup.py builds it optionally).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

IV_SIZE = 8  # the explicit IV of every ESP AEAD (RFC 4106 s. 3.1, RFC 4309 s. 3.1, RFC 7634 s. 2)
NH_FROM_VERSION = -1  # tunnel mode: the next header follows the payload's IP version
_PADS = [bytes(range(1, n + 1)) for n in range(256)]  # RFC 4303 s. 2.4: 1, 2, 3, ...


def seal_frames_py(seal_batch: Callable, spi: bytes, first_seq: int, payloads: Sequence[bytes],
            next_header: int, align: int, esn: bool) -> list[bytes]:
    """The pure-Python twin of the compiled ``seal_frames`` (module docstring)."""
    if len(spi) != 4:
        raise ValueError("the SPI must be 4 bytes")
    if not 1 <= align <= 256:
        raise ValueError("alignment must be 1..256 (the pad length is one byte)")
    if not NH_FROM_VERSION <= next_header <= 255:
        raise ValueError("next header must be 0..255, or -1 for tunnel mode")
    if first_seq < 0 or first_seq >> 64:
        raise OverflowError("sequence number outside 64 bits")
    if payloads and (first_seq + len(payloads) - 1) >> 64:
        raise OverflowError("sequence numbers beyond 64 bits")
    batch = []
    seq = first_seq
    for i, payload in enumerate(payloads):
        if payload.__class__ is not bytes:
            raise TypeError(f"payload {i} is {type(payload).__name__}, not bytes")
        nh = next_header
        if nh < 0:
            nh = 4 if payload and payload[0] >> 4 == 4 else 41
        pad = -(len(payload) + 2) % align
        iv = seq.to_bytes(8, "big")  # its low half is the wire's sequence number
        batch.append((iv, payload + _PADS[pad] + bytes((pad, nh)),
                      spi + iv if esn else spi + iv[4:]))
        seq += 1
    sealed = seal_batch(batch)
    if len(sealed) != len(batch):
        raise ValueError(f"seal_batch returned {len(sealed)} results for {len(batch)} items")
    out = []
    for (iv, _, _), s in zip(batch, sealed, strict=True):
        if s.__class__ is not bytes:
            raise TypeError(f"seal_batch result is {type(s).__name__}, not bytes")
        out.append(spi + iv[4:] + iv + s)
    return out


def open_frames_py(open_batch: Callable, items: Sequence[tuple[bytes, int]], esn: bool, icv: int,
            align: int, drops: tuple) -> list:
    """The pure-Python twin of the compiled ``open_frames`` (module docstring)."""
    if len(drops) != 3:
        raise ValueError("drops must be (truncated, auth, bad padding)")
    if not 1 <= align <= 256 or not 0 <= icv <= 64:
        raise ValueError("alignment must be 1..256 and the ICV 0..64 bytes")
    truncated, auth, bad_pad = drops
    min_size = 8 + IV_SIZE + align + icv
    out: list = [None] * len(items)
    work = []
    for i, item in enumerate(items):
        if item.__class__ is not tuple or len(item) != 2:
            raise TypeError(f"item {i} is not a (packet, sequence number) pair")
        pkt, seq = item
        if pkt.__class__ is not bytes:
            raise TypeError(f"packet {i} is {type(pkt).__name__}, not bytes")
        if seq < 0 or seq >> 64:
            raise OverflowError("sequence number outside 64 bits")
        if len(pkt) < min_size or (len(pkt) - 8 - IV_SIZE - icv) % align:
            out[i] = truncated
            continue
        aad = pkt[:4] + seq.to_bytes(8, "big") if esn else pkt[:8]
        work.append((pkt[8:8 + IV_SIZE], pkt[8 + IV_SIZE:], aad))
    if not work:
        return out
    plains = open_batch(work)
    if len(plains) != len(work):
        raise ValueError(f"open_batch returned {len(plains)} results for {len(work)} items")
    it = iter(plains)
    for i, o in enumerate(out):
        if o is not None:
            continue
        plain = next(it)
        if plain is None:
            out[i] = auth
            continue
        if plain.__class__ is not bytes:
            raise TypeError(f"open_batch result is {type(plain).__name__}, not bytes")
        n = len(plain)
        pad = plain[-2] if n >= 2 else 0
        end = n - 2 - pad
        if n < 2 or end < 0 or plain[end:-2] != _PADS[pad]:
            out[i] = bad_pad
        else:
            out[i] = (plain[:end], plain[-1])
    return out


def _compiled():
    if os.environ.get("OCFPY_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from ocfpy.esp import _framing
    except ImportError:  # built without a C compiler: the Python twin, same results
        return None
    return _framing


_C = _compiled()
COMPILED = _C is not None
seal_frames = _C.seal_frames if _C is not None else seal_frames_py
open_frames = _C.open_frames if _C is not None else open_frames_py

__all__ = ["COMPILED", "NH_FROM_VERSION", "open_frames", "open_frames_py", "seal_frames",
           "seal_frames_py"]
