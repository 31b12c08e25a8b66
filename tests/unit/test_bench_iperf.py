"""How `bench esp` and `bench strongswan` read a UDP flood's result: the server's count, not
the client's packets minus lost_packets (which counts a flood's lost tail as received and once
made libipsec's SA look as if it had decrypted less than iperf3 delivered)."""

from __future__ import annotations

from ocfpy.bench.iperf import udp_received

# the "end" of an iperf3 3.12 client run (-u -b 0 -l 64 -J), as printed on this machine
END_3_12 = {
    "sum": {"seconds": 1.003673, "bytes": 11421440, "lost_packets": 80108,
            "packets": 178460, "sender": True},
    "sum_sent": {"seconds": 1.000017, "bytes": 11421440, "lost_packets": 0,
                 "packets": 178460, "sender": True},
    "sum_received": {"seconds": 1.003673, "bytes": 6286976, "lost_packets": 80108,
                     "packets": 178342, "sender": False},
}


def test_the_servers_bytes_count_what_arrived():
    pps, received = udp_received({"end": END_3_12}, 64, 1.0)
    assert received == 6286976 // 64 == 98234  # not 178460 - 80108 = 98352
    assert pps == received / 1.003673


def test_an_iperf3_without_sum_received_falls_back_to_the_clients_sum():
    end = {"sum": END_3_12["sum"]}
    pps, received = udp_received({"end": end}, 64, 1.0)
    assert received == 178460 - 80108
    assert pps == received / 1.003673
