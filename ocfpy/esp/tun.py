"""A TUN device (layer 3, no packet information header), opened through /dev/net/tun."""

from __future__ import annotations

import fcntl
import logging
import os
import struct

from .netlink import outside_loop

log = logging.getLogger(__name__)

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


class TunError(OSError):
    pass


def open_tun(name: str, *, mtu: int = 1400, up: bool = True) -> int:
    """Create (or attach to) TUN device `name`; returns a non-blocking fd. Needs CAP_NET_ADMIN."""
    if len(name) > 15:
        raise TunError(f"TUN name {name!r} is longer than 15 characters")
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise TunError(exc.errno, f"cannot open /dev/net/tun: {exc.strerror} "
                                  "(needs root and TUN support)") from exc
    try:
        ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
        fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError as exc:
        os.close(fd)
        raise TunError(exc.errno, f"cannot create TUN device {name}: {exc.strerror}") from exc
    try:
        outside_loop(_configure, name, mtu, up)
    except Exception:
        os.close(fd)
        raise
    log.info("TUN device %s up, MTU %d", name, mtu)
    return fd


def _configure(name: str, mtu: int, up: bool) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=name)[0]
        ipr.link("set", index=index, mtu=mtu)
        if up:
            ipr.link("set", index=index, state="up")
