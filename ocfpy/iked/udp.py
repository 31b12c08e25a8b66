"""The daemon's UDP 500/4500 sockets and its packet loop: bind, read in batches, frame, send.

The only protocol knowledge here is RFC 3948 framing on port 4500 (section 2.2: a non-ESP
marker of four zero bytes precedes IKE; section 2.3: a single 0xff byte is a NAT keepalive;
anything else is ESP for the dataplane). Sockets are bound per listen address (wildcards by
default) with IP_PKTINFO/IPV6_RECVPKTINFO, so the engine learns which local address a request
came to and replies leave from it.

Every datagram read is hostile: what is not IKE for the engine is dropped here and counted in
the daemon's stats (``dropped_short``, ``esp_in_udp_unclaimed``, ``keepalives_in``); the engine
itself drops and counts what fails its checks. Nothing read here changes an SA.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import socket
import struct
from dataclasses import dataclass

from ocfpy.esp.udpencap import KEEPALIVE as NAT_KEEPALIVE
from ocfpy.esp.udpencap import NON_ESP_MARKER
from ocfpy.iked.context import DaemonContext, DaemonError

log = logging.getLogger("ocfpy.iked.daemon")
#: the daemon's socket I/O: the ``net`` subsystem of [daemon.log] (charon's NET)
netlog = logging.getLogger("ocfpy.iked.net")

Addr = tuple[str, int]

RECV_BATCH = 64  # datagrams read per wakeup before the engine's output is flushed

# Linux values; the socket module lacks IP_PKTINFO on some builds.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_CMSG_SPACE = socket.CMSG_SPACE(64)

__all__ = ["NAT_KEEPALIVE", "NON_ESP_MARKER", "RECV_BATCH", "Endpoint", "UdpSockets"]


@dataclass
class Endpoint:
    """One bound UDP socket."""

    sock: socket.socket
    family: int
    address: str  # as bound; "0.0.0.0" / "::" for wildcards
    port: int
    nat_t: bool  # port 4500 framing
    taken_by_dataplane: bool = False

    @property
    def wildcard(self) -> bool:
        return ipaddress.ip_address(self.address).is_unspecified


class UdpSockets:
    """The bound endpoints, what reads them (the loop, or the dataplane for ESP-in-UDP on
    4500) and the one way out (``send``). ``send_errors``: the last send failure towards each
    configured peer address: `sa why` and `sa initiate` say it, as the engine cannot know
    that its datagram never left. Only addresses named in a connection's remote_addrs are
    kept (the only ones those commands read), so the table is bounded by the config, not by
    the source addresses a flood of IKE_SA_INIT requests claims."""

    def __init__(self, ctx: DaemonContext):
        self.ctx = ctx
        self.endpoints: list[Endpoint] = []  # one list for the daemon's life: cleared, not replaced
        self.send_errors: dict[str, str] = {}

    # -- binding -----------------------------------------------------------------------------
    def open(self) -> None:
        """Bind every listen address on both ports; DaemonError names each failure (nothing
        is left open then). A wildcard of a family the host lacks is skipped with a warning."""
        opts = self.ctx.config.daemon
        problems = []
        for address in opts.listen:
            ip = ipaddress.ip_address(address)
            for port, nat_t in ((opts.port, False), (opts.port_nat_t, True)):
                try:
                    self.endpoints.append(_bind(ip, port, nat_t))
                except OSError as exc:
                    why = f"UDP {address} port {port}: {exc.strerror or exc}"
                    if exc.errno == errno.EACCES and port < 1024:
                        why += " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
                    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) and ip.is_unspecified:
                        netlog.warning("not listening on %s (this host has no IPv%d?)", why,
                                       ip.version)
                        continue
                    problems.append(why)
        if problems:
            self.close()
            raise DaemonError("cannot listen: " + "; ".join(problems)
                              + (" (another IKE daemon running? charon?)"
                                 if any("in use" in p for p in problems) else ""))
        if not self.endpoints:
            raise DaemonError(f"nothing to listen on: daemon.listen = {opts.listen}")

    def attach(self) -> None:
        """Hand each socket to the dataplane if it reads ESP-in-UDP there (it passes IKE
        back, marker stripped); the loop reads the others."""
        ctx = self.ctx
        assert ctx.loop is not None
        for ep in self.endpoints:
            ctx.dataplane.prepare_ike_socket(ep.sock)
            if ep.nat_t and ctx.dataplane.attach_udp_encap(
                    ep.sock, lambda data, remote, ep=ep: self.ike_from_dataplane(ep, data, remote)):
                ep.taken_by_dataplane = True
                netlog.info("dataplane %s reads UDP %s:%d (ESP-in-UDP)", ctx.dataplane.name,
                            ep.address, ep.port)
            else:
                ctx.loop.add_reader(ep.sock.fileno(), self.on_readable, ep)

    def stop_reading(self) -> None:
        loop = self.ctx.loop
        if loop is None:
            return
        for ep in self.endpoints:
            with contextlib.suppress(Exception):  # a socket already closed: nothing to stop
                loop.remove_reader(ep.sock.fileno())

    def close(self) -> None:
        for ep in self.endpoints:
            ep.sock.close()
        self.endpoints.clear()

    # -- in ----------------------------------------------------------------------------------
    def on_readable(self, ep: Endpoint) -> None:
        ctx = self.ctx
        now = ctx.loop.time()  # type: ignore[union-attr]
        for _ in range(RECV_BATCH):
            try:
                data, ancdata, _flags, remote = ep.sock.recvmsg(65535, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ECONNREFUSED from an ICMP port unreachable
                ctx.stats["receive_errors"] += 1
                netlog.debug("receive on %s:%d: %s", ep.address, ep.port, exc)
                continue
            local = (_destination(ep, ancdata), ep.port)
            self.datagram(ep, data, local, (remote[0], remote[1]), now)
        ctx.service()

    def datagram(self, ep: Endpoint, data: bytes, local: Addr, remote: Addr, now: float) -> None:
        stats = self.ctx.stats
        stats["datagrams_in"] += 1
        if ep.nat_t:  # RFC 3948 2.2 / 2.3
            if data == NAT_KEEPALIVE:
                stats["keepalives_in"] += 1
                return
            if len(data) < 4:
                stats["dropped_short"] += 1
                return
            if data[:4] != NON_ESP_MARKER:
                # ESP-in-UDP while the dataplane does not read this socket: it has no SA for it.
                stats["esp_in_udp_unclaimed"] += 1
                return
            data = data[4:]
        self.to_engine(data, local, remote, now)

    def to_engine(self, data: bytes, local: Addr, remote: Addr, now: float) -> None:
        try:
            self.ctx.engine.receive_datagram(data, local, remote, now)
        except Exception:  # the engine promises not to raise; if it does, drop, never die
            self.ctx.stats["engine_errors"] += 1
            log.exception("engine failed on a datagram from %s:%d (dropped)", *remote)

    def ike_from_dataplane(self, ep: Endpoint, data: bytes, remote: tuple) -> None:
        """IKE on 4500 that a user-space dataplane read (marker already stripped)."""
        loop = self.ctx.loop
        assert loop is not None
        local_ip = ep.address if not ep.wildcard else _route_source(remote[0], ep.family)
        self.ctx.stats["datagrams_in"] += 1
        self.to_engine(data, (local_ip, ep.port), (remote[0], remote[1]), loop.time())
        self.ctx.service()

    # -- out ---------------------------------------------------------------------------------
    def send(self, data: bytes, local: Addr, remote: Addr) -> None:
        stats = self.ctx.stats
        ep = self.endpoint_for(local, remote)
        if ep is None:
            opts = self.ctx.config.daemon
            stats["send_errors"] += 1
            why = (f"no socket for sending from {local[0]}:{local[1]} to {remote[0]}:"
                   f"{remote[1]} (daemon.listen = {opts.listen}, ports "
                   f"{opts.port}/{opts.port_nat_t})")
            self._note_send_error(remote[0], why)
            netlog.error("%s", why)
            return
        if ep.nat_t and data != NAT_KEEPALIVE:  # RFC 3948 2.2: IKE on 4500 gets the marker
            data = NON_ESP_MARKER + data
        ancdata = []
        if ep.wildcard and local[0] and not ipaddress.ip_address(local[0]).is_unspecified:
            ancdata = [_pktinfo(ep.family, local[0])]
        try:
            ep.sock.sendmsg([data], ancdata, 0, (remote[0], remote[1]))
            stats["datagrams_out"] += 1
            self.send_errors.pop(remote[0], None)
        except OSError as exc:
            stats["send_errors"] += 1
            self._note_send_error(remote[0], f"sending to {remote[0]}:{remote[1]} failed: "
                                             f"{exc.strerror or exc}")
            netlog.warning("send to %s:%d failed: %s", remote[0], remote[1], exc.strerror or exc)

    def _note_send_error(self, address: str, why: str) -> None:
        if any(address in c.remote_addrs for c in self.ctx.config.connections.values()):
            self.send_errors[address] = why

    def endpoint_for(self, local: Addr, remote: Addr) -> Endpoint | None:
        family = socket.AF_INET6 if ":" in remote[0] else socket.AF_INET
        fallback = None
        for ep in self.endpoints:
            if ep.port != local[1] or ep.family != family:
                continue
            if ep.address == local[0]:
                return ep
            if ep.wildcard:
                fallback = ep
        return fallback


def _bind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, nat_t: bool) -> Endpoint:
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        # no SO_REUSEADDR: on Linux it lets a second daemon bind the same UDP port and
        # silently steal its datagrams; "address in use" is the answer we want
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.bind((str(ip), port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    netlog.info("listening on UDP [%s]:%d%s", ip, port, " (NAT-T framing)" if nat_t else "")
    return Endpoint(sock, family, str(ip), port, nat_t)


def _destination(ep: Endpoint, ancdata: list) -> str:
    """The local address the datagram was sent to (from IP_PKTINFO / IPV6_PKTINFO)."""
    for level, kind, value in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= 12:
            return socket.inet_ntop(socket.AF_INET, value[8:12])  # ipi_addr
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(value) >= 16:
            return socket.inet_ntop(socket.AF_INET6, value[:16])
    return ep.address


def _pktinfo(family: int, address: str) -> tuple[int, int, bytes]:
    """The ancillary datum that makes a wildcard socket send from this source address."""
    if family == socket.AF_INET6:
        return (socket.IPPROTO_IPV6, IPV6_PKTINFO,
                socket.inet_pton(socket.AF_INET6, address) + struct.pack("@I", 0))
    # struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
    return (socket.IPPROTO_IP, IP_PKTINFO,
            struct.pack("@i", 0) + socket.inet_pton(socket.AF_INET, address) + bytes(4))


def _route_source(remote_ip: str, family: int) -> str:
    """The source address the kernel would pick towards remote_ip (no packet is sent)."""
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        s.connect((remote_ip, 9))
        return s.getsockname()[0]
    except OSError:
        return "::" if family == socket.AF_INET6 else "0.0.0.0"
    finally:
        s.close()
