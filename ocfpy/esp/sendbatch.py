"""Send a batch of ESP datagrams to one destination: one sendmmsg(2) per 64 datagrams through
the optional compiled helper ocfpy/esp/_mmsg.c, else one sendto(2) each (the same datagrams,
the same errors reported). The outbound worker's plain path (a run without UDP GSO, raw ESP)
uses it; `OCFPY_PURE_PYTHON=1` forces the sendto loop, as for the framing (framing.py).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence


def send_each(sock: socket.socket, datagrams: Sequence[bytes], dest: tuple,
              on_error: Callable[[OSError], None]) -> int:
    """One sendto per datagram; returns how many the kernel refused (each passed to
    on_error)."""
    errors = 0
    sendto = sock.sendto
    for d in datagrams:
        try:
            sendto(d, dest)
        except OSError as exc:
            errors += 1
            on_error(exc)
    return errors


def send_batched(sock: socket.socket, datagrams: list[bytes], dest: tuple,
                 on_error: Callable[[OSError], None]) -> int:
    """The same through sendmmsg: returns how many the kernel refused (each passed to on_error
    as the OSError sendto would have raised)."""
    failures = _C.send(sock.fileno(), sock.family, dest[0], dest[1], datagrams)
    if failures is None:  # not a numeric address of the socket's family: let sendto say why
        return send_each(sock, datagrams, dest, on_error)
    for _index, err in failures:
        on_error(OSError(err, os.strerror(err)))  # BlockingIOError for EAGAIN, as sendto's
    return len(failures)


def _compiled():
    if os.environ.get("OCFPY_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from ocfpy.esp import _mmsg
    except ImportError:  # built without a C compiler: the sendto loop
        return None
    return _mmsg


_C = _compiled()
COMPILED = _C is not None
send = send_batched if _C is not None else send_each

__all__ = ["COMPILED", "send", "send_batched", "send_each"]
