"""A TUN device (layer 3, no packet information header), opened through /dev/net/tun."""

from __future__ import annotations

import fcntl
import logging
import os
import struct

from ocfpy.crypto.errors import OcfError
from ocfpy.esp import rtnl
from ocfpy.esp.netlink import NETLINK_ROUTE, NetlinkChannel

log = logging.getLogger(__name__)

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN = 0x0001
IFF_MULTI_QUEUE = 0x0100  # Linux 3.8: one fd per queue (Documentation/networking/tuntap.rst)
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_USO4 = 0x20  # Linux 6.2
TUN_F_USO6 = 0x40


class TunError(OcfError, OSError):
    pass


TXQUEUELEN = 4096


MAX_QUEUES = 16  # esp_workers' bound (the kernel's MAX_TAP_QUEUES is 256)


def open_tun(name: str, *, mtu: int = 1400, up: bool = True, gso_max: int = 0,
             txqueuelen: int = TXQUEUELEN, vnet_hdr: bool = False, queues: int = 1) -> int:
    """Create (or attach to) TUN device `name`; returns a non-blocking fd. Needs CAP_NET_ADMIN.

    With ``queues`` > 1 the device is multi-queue (IFF_MULTI_QUEUE) and this fd is its first
    queue; `attach_queue` opens the others. The kernel puts each outgoing packet on one queue
    by its flow: the queue that last wrote a packet of the flow (its symmetric hash, the
    tun driver's flow table), else the flow hash modulo the queues; so a flow's packets are
    read from one queue, in order.

    With ``gso_max`` > 0 the device carries a virtio_net_hdr on every packet (IFF_VNET_HDR)
    and offers checksum and TCP segmentation offload: the kernel hands over TCP super-packets
    of up to ``gso_max`` bytes, and accepts them back, instead of MTU-sized segments.

    ``txqueuelen`` sizes the queue the kernel fills for us: the default 500 overflows (and
    costs TCP a retransmit each time) whenever the outbound worker waits for a CPU a little.

    ``vnet_hdr`` alone: the virtio_net_hdr on every packet, offloads left to
    `enable_offloads` (the per-run offloads of offload.py; the device keeps its default
    gso_max_size, since super-packets are cut into MTU-sized segments before encryption).
    """
    if len(name) > 15:
        raise TunError(f"TUN name {name!r} is longer than 15 characters")
    if not 1 <= queues <= MAX_QUEUES:
        raise TunError(f"{queues} TUN queues: expected 1..{MAX_QUEUES}")
    flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if gso_max or vnet_hdr else 0) \
        | (IFF_MULTI_QUEUE if queues > 1 else 0)
    fd = _open_queue(name, flags)
    try:
        if gso_max:
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
    except OSError as exc:
        os.close(fd)
        raise TunError(exc.errno, f"cannot create TUN device {name}: {exc.strerror}") from exc
    try:
        with NetlinkChannel(NETLINK_ROUTE) as ch:
            # gso_max_size caps the super-packets, so that one ESP packet stays far below
            # 64 KiB and below what peers accept (strongSwan's charon.max_packet is 10000
            # by default).
            rtnl.set_link(ch, rtnl.link_index(ch, name), mtu=mtu, txqlen=txqueuelen,
                          gso_max_size=gso_max or None, up=True if up else None)
    except OSError as exc:
        os.close(fd)
        raise TunError(exc.errno, f"cannot configure TUN device {name}: {exc}") from exc
    except BaseException:
        os.close(fd)
        raise
    log.info("TUN device %s up, MTU %d", name, mtu)
    return fd


def _open_queue(name: str, flags: int) -> int:
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise TunError(exc.errno, f"cannot open /dev/net/tun: {exc.strerror} "
                                  "(needs root and TUN support)") from exc
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
    except OSError as exc:
        os.close(fd)
        raise TunError(exc.errno, f"cannot create TUN device {name}: {exc.strerror}") from exc
    return fd


def attach_queue(name: str, *, vnet_hdr: bool = False) -> int:
    """Another queue of multi-queue TUN device ``name`` (opened by open_tun with queues > 1,
    and with the same ``vnet_hdr``: the kernel refuses a queue whose flags differ)."""
    return _open_queue(name, IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE
                       | (IFF_VNET_HDR if vnet_hdr else 0))


def enable_offloads(fd: int) -> bool:
    """Offer checksum, TCP and UDP segmentation offload on a VNET_HDR TUN (as wireguard-go's
    tun/tcp_offload_linux.go does): True with UDP (TUN_F_USO4/6, Linux 6.2), False with TCP
    only. Raises TunError where the device takes no offloads at all."""
    base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
    try:
        fcntl.ioctl(fd, TUNSETOFFLOAD, base | TUN_F_USO4 | TUN_F_USO6)
        return True
    except OSError:
        pass  # an older kernel: TCP only
    try:
        fcntl.ioctl(fd, TUNSETOFFLOAD, base)
    except OSError as exc:
        raise TunError(exc.errno, f"TUN offloads refused: {exc.strerror}") from exc
    return False
