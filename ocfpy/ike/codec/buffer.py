"""A read/write buffer with pull_/push_ pairs (aioquic's Buffer, in pure Python)."""

from __future__ import annotations

import struct

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!L")
_U64 = struct.Struct("!Q")


class BufferReadError(ValueError):
    """Read past the end of the data."""


class Buffer:
    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes = b"", *, start: int = 0, end: int | None = None):
        self._data = data if isinstance(data, bytes | bytearray) else bytes(data)
        self._pos = start
        self._end = len(self._data) if end is None else end

    # -- reading ------------------------------------------------------------------------
    @property
    def position(self) -> int:
        return self._pos

    @property
    def end(self) -> int:
        return self._end

    def remaining(self) -> int:
        return self._end - self._pos

    def eof(self) -> bool:
        return self._pos >= self._end

    def _need(self, n: int) -> int:
        pos = self._pos
        if n < 0 or pos + n > self._end:
            raise BufferReadError(f"need {n} bytes at offset {pos}, have {self._end - pos}")
        self._pos = pos + n
        return pos

    def pull_bytes(self, n: int) -> bytes:
        pos = self._need(n)
        return bytes(self._data[pos:pos + n])

    def pull_uint8(self) -> int:
        pos = self._need(1)
        return self._data[pos]

    def pull_uint16(self) -> int:
        return _U16.unpack_from(self._data, self._need(2))[0]

    def pull_uint32(self) -> int:
        return _U32.unpack_from(self._data, self._need(4))[0]

    def pull_uint64(self) -> int:
        return _U64.unpack_from(self._data, self._need(8))[0]

    def sub(self, n: int) -> Buffer:
        """A buffer over the next n bytes (consumed here)."""
        pos = self._need(n)
        return Buffer(self._data, start=pos, end=pos + n)

    def rest(self) -> bytes:
        return self.pull_bytes(self.remaining())


class Writer:
    """The push_ side: appends to a bytearray."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = bytearray()

    def push_bytes(self, b: bytes) -> None:
        self.data += b

    def push_uint8(self, v: int) -> None:
        self.data.append(v)

    def push_uint16(self, v: int) -> None:
        self.data += _U16.pack(v)

    def push_uint32(self, v: int) -> None:
        self.data += _U32.pack(v)

    def push_uint64(self, v: int) -> None:
        self.data += _U64.pack(v)

    def patch_uint16(self, offset: int, v: int) -> None:
        _U16.pack_into(self.data, offset, v)

    def __len__(self) -> int:
        return len(self.data)

    def getvalue(self) -> bytes:
        return bytes(self.data)
