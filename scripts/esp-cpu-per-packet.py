"""CPU time (user+sys) the ESP workers of each static-key gateway spend per ESP packet, for
one iperf3 test each (TCP, 64-byte and 1372-byte UDP floods, 4 s): the cost, not the share of
the CPU a process got, so it moves much less with the machine's load than rates do.

    sudo .venv/bin/python scripts/esp-cpu-per-packet.py 1   # per-run offloads (the default)
    sudo .venv/bin/python scripts/esp-cpu-per-packet.py 0   # without them

The sender gateway's figure includes its inbound worker (TCP's ACKs), per data packet sent;
the receiver's includes its outbound worker, per data packet received.
"""
import json
import os
import sys

from ocfpy.bench import iperf
from ocfpy.lab.netlab import Lab
from ocfpy.lab.static_tunnel import StaticTunnel

TICK = os.sysconf("SC_CLK_TCK")

def cpu(pid):
    kids = []
    for t in os.listdir(f"/proc/{pid}/task"):
        kids += open(f"/proc/{pid}/task/{t}/children").read().split()
    out = {}
    for k in kids:
        st = open(f"/proc/{k}/stat").read().rsplit(")", 1)[1].split()
        out[k] = (int(st[11]) + int(st[12])) / TICK
    return out

offload = sys.argv[1] == "1"
tests = {"tcp": [], "udp64": ["-u", "-b", "0", "-l", "64"], "udp1372": ["-u", "-b", "0", "-l", "1372"]}
res = {}
with Lab("ofc") as lab, StaticTunnel(lab, esp="aes128gcm16", encap=True, tun="ofc-tun0", offload=offload) as tun:
    for name, args in tests.items():
        a0, b0 = tun.counters("a")["sa"], tun.counters("b")["sa"]
        ca0, cb0 = cpu(tun.procs["a"].pid), cpu(tun.procs["b"].pid)
        r = iperf.run(tun.a, tun.b, args, 4)
        a1, b1 = tun.counters("a")["sa"], tun.counters("b")["sa"]
        ca1, cb1 = cpu(tun.procs["a"].pid), cpu(tun.procs["b"].pid)
        out_pk = a1["packets_out"] - a0["packets_out"]
        in_pk = b1["packets_in"] - b0["packets_in"]
        cpu_a = sum(ca1[k] - ca0.get(k, 0) for k in ca1)  # both of a's workers
        cpu_b = sum(cb1[k] - cb0.get(k, 0) for k in cb1)
        res[name] = {"a_out_pkts": out_pk, "b_in_pkts": in_pk,
                     "us_per_pkt_sender_gw": round(cpu_a / max(out_pk, 1) * 1e6, 2),
                     "us_per_pkt_receiver_gw": round(cpu_b / max(in_pk, 1) * 1e6, 2)}
print(json.dumps({"offload": offload, **res}))
