"""Fewer system calls on the ESP-in-UDP socket: segmentation offload when sending
(``UDP_SEGMENT``, Linux 4.18) and receive coalescing (``UDP_GRO``, Linux 5.0).

Sending, a run of equal-sized ESP-in-UDP datagrams to one peer (a TCP stream's packets, after
ESP padding, mostly are) goes down in one ``sendmsg``: the kernel, or the NIC, cuts it back
into the same datagrams; the last of a run may be shorter. What leaves the host is the
datagrams one by one, so any peer (strongSwan, the kernel's ESP) receives what it would have
received without it; only a capture on the sending host (or across a veth) shows the run as
one large datagram, as it shows TCP with TSO.

Receiving, a socket with ``UDP_GRO`` set gets such runs (and runs the kernel's GRO coalesced)
as one buffer plus the segment size, in one ``recvmsg``; ``receive`` cuts them back.

Both are off by default (``udp_gso`` in docs/dataplanes.md); measured with `ocfpy bench esp
--udp-gso` (docs/performance.md).
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Callable

SOL_UDP = 17  # <netinet/in.h> IPPROTO_UDP; the socket module has no UDP_SEGMENT / UDP_GRO
UDP_SEGMENT = 103  # <linux/udp.h>
UDP_GRO = 104
MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS on every kernel that has UDP_SEGMENT
MAX_RUN_BYTES = 60000  # a run is one IP datagram before segmentation: under 64 KiB
MAX_COALESCED = 65535
_GRO_SPACE = socket.CMSG_SPACE(4)  # the segment size comes as an int
# sendmsg with a segment size the path cannot take (larger than its MTU, say) fails with these:
# the run then goes datagram by datagram.
_REFUSED = (errno.EINVAL, errno.EMSGSIZE, errno.EIO)
_UNSUPPORTED = (errno.ENOPROTOOPT, errno.EOPNOTSUPP)


def runs(wires: list[bytes]) -> list[tuple[int, int, int]]:
    """(start, end, segment size) over ``wires``: consecutive datagrams of one size, the last
    possibly shorter, at most MAX_SEGMENTS and MAX_RUN_BYTES each."""
    out = []
    i, n = 0, len(wires)
    while i < n:
        size = total = len(wires[i])
        j = i + 1
        while j < n and j - i < MAX_SEGMENTS:
            length = len(wires[j])
            if length > size or total + length > MAX_RUN_BYTES:
                break
            total += length
            j += 1
            if length < size:
                break  # a shorter datagram ends the run
        out.append((i, j, size))
        i = j
    return out


class SegmentingSender:
    """Sends lists of datagrams to one destination with as few system calls as it can."""

    def __init__(self) -> None:
        self.enabled = True  # False once the kernel said it has no UDP_SEGMENT

    def send(self, sock: socket.socket, wires: list[bytes], dest,
             on_error: Callable[[OSError], None]) -> int:
        """Send every datagram of ``wires``; returns how many were dropped (socket buffer
        full, no route...): ``on_error`` hears of each failed call."""
        dropped = 0
        sendto = sock.sendto
        for start, end, size in runs(wires) if self.enabled else [(0, len(wires), 0)]:
            if end - start > 1 and self.enabled:
                try:
                    sock.sendmsg([b"".join(wires[start:end])],
                                 [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))], 0, dest)
                    continue
                except (BlockingIOError, InterruptedError) as exc:
                    dropped += end - start  # socket buffer full: drop, as a NIC queue would
                    on_error(exc)
                    continue
                except OSError as exc:
                    if exc.errno in _UNSUPPORTED:
                        self.enabled = False
                    elif exc.errno not in _REFUSED:
                        dropped += end - start
                        on_error(exc)
                        continue
                    # refused or unsupported: this run goes one datagram at a time
            for w in wires[start:end]:
                try:
                    sendto(w, dest)
                except OSError as exc:
                    dropped += 1
                    on_error(exc)
        return dropped


# A plain int: `int & socket.MSG_TRUNC` builds an IntFlag each time, 1.5 us per read measured
# (the inbound profile's enum.__and__, ~5% of the worker during UDP floods).
_MSG_TRUNC = int(socket.MSG_TRUNC)


def enable_gro(sock: socket.socket) -> bool:
    """Ask for coalesced receives on ``sock``; False where the kernel has no UDP_GRO."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def receive(sock: socket.socket, calls: int, on_error: Callable[[OSError], None]
            ) -> tuple[list[tuple[bytes, object]], int]:
    """Up to ``calls`` reads from a UDP_GRO socket, cut back into the datagrams that were
    sent: ([(datagram, source address)...], number of truncated reads)."""
    out: list[tuple[bytes, object]] = []
    truncated = 0
    recvmsg = sock.recvmsg
    for _ in range(calls):
        try:
            data, ancillary, flags, addr = recvmsg(MAX_COALESCED, _GRO_SPACE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:  # e.g. ICMP errors reported on the socket
            on_error(exc)
            continue
        if flags & _MSG_TRUNC:
            truncated += 1
            continue
        out.extend((d, addr) for d in cut(data, ancillary))
    return out, truncated


def cut(data: bytes, ancillary) -> list[bytes]:
    """The datagrams of one UDP_GRO read: ``data`` cut at the segment size the kernel's
    UDP_GRO control message gives (each datagram that size, the last possibly shorter;
    udp_gro_receive merges only those). The bytes are unauthenticated (each datagram is then
    classified and checked alone): every byte lands in exactly one datagram, none is empty."""
    size = 0
    for level, kind, value in ancillary:
        if level == SOL_UDP and kind == UDP_GRO and len(value) >= 4:
            size = int.from_bytes(value[:4], sys.byteorder)
    if 0 < size < len(data):
        return [data[k:k + size] for k in range(0, len(data), size)]
    return [data]
