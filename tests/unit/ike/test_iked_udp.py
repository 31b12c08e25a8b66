"""The daemon's UDP sockets alone (iked/udp.py): real sockets on loopback, a real engine
behind them. What arrives on the NAT-T port is framed per RFC 3948 (2.2 the non-ESP marker,
2.3 the keepalive) and whatever is not IKE is dropped and counted before the engine sees it;
what the engine sends leaves from the socket of its local port, with the marker on 4500 only.
"""

from __future__ import annotations

import asyncio
import socket

from ocfpy.ike.config import DaemonOptions
from ocfpy.iked.context import DaemonContext
from ocfpy.iked.udp import NAT_KEEPALIVE, NON_ESP_MARKER, UdpSockets

from .conftest import make_config


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_nat_t_framing_counts_what_is_not_ike_and_sends_with_the_marker(dispatcher):
    from ocfpy.esp.dataplane.null import NullDataplane
    from ocfpy.ike.engine import IkeEngine

    port, port_nat_t = _free_ports(2)
    opts = DaemonOptions(listen=["127.0.0.1"], port=port, port_nat_t=port_nat_t)
    config = make_config("127.0.0.1", "127.0.0.1", "a", "b", daemon=opts)
    engine = IkeEngine(config, dispatcher)
    ctx = DaemonContext(config, engine, NullDataplane())
    flushes = []
    ctx.service = lambda: flushes.append(1)
    udp = UdpSockets(ctx)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(5)

    async def main() -> None:
        ctx.loop = asyncio.get_running_loop()
        udp.open()
        udp.attach()  # the null dataplane reads no socket: the loop reads both
        assert sorted((ep.port, ep.nat_t) for ep in udp.endpoints) == \
            sorted([(port, False), (port_nat_t, True)])
        for data in (NAT_KEEPALIVE, b"\x01\x02", b"\x00\x00\x00\x07" + bytes(12),
                     NON_ESP_MARKER + b"not an IKE header"):
            peer.sendto(data, ("127.0.0.1", port_nat_t))
        peer.sendto(b"not an IKE header either", ("127.0.0.1", port))
        for _ in range(100):
            if ctx.stats["datagrams_in"] == 5:
                break
            await asyncio.sleep(0.01)
        # out: IKE on 4500 gets the marker (RFC 3948 2.2), a keepalive does not, 500 none
        me = peer.getsockname()
        udp.send(b"ike", ("127.0.0.1", port_nat_t), me)
        udp.send(NAT_KEEPALIVE, ("127.0.0.1", port_nat_t), me)
        udp.send(b"ike", ("127.0.0.1", port), me)
        udp.send(b"ike", ("127.0.0.1", 1), me)  # no socket on that port
        udp.send(b"ike", ("127.0.0.1", 1), ("127.0.0.9", 500))  # nor to a peer not configured
        udp.stop_reading()
        udp.close()

    asyncio.run(main())
    stats = ctx.stats
    assert stats["datagrams_in"] == 5
    assert stats["keepalives_in"] == 1
    assert stats["dropped_short"] == 1
    assert stats["esp_in_udp_unclaimed"] == 1
    # the two IKE candidates reached the engine, which dropped them as malformed
    assert engine.stats["received"] == 2 and engine.stats["dropped_malformed"] == 2
    assert flushes  # each read batch was followed by the engine flush
    got = [peer.recvfrom(100) for _ in range(3)]
    peer.close()
    assert [(d, a[1]) for d, a in got] == [(NON_ESP_MARKER + b"ike", port_nat_t),
                                           (NAT_KEEPALIVE, port_nat_t), (b"ike", port)]
    assert stats["datagrams_out"] == 3 and stats["send_errors"] == 2
    # `sa why` reads the configured peer's failure; an address no connection names is
    # counted but not kept (a spoofed source must not grow the table)
    assert list(udp.send_errors) == ["127.0.0.1"]
    assert "no socket for sending from 127.0.0.1:1" in udp.send_errors["127.0.0.1"]
    assert udp.endpoints == []
