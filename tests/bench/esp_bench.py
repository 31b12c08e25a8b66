"""Benchmark (not a test) of the userspace ESP dataplane between two namespaces.

Two static-key gateways (ocfpy.esp.static, the same dataplane the daemon uses) joined by a
veth pair; TUN MTU 1400 (the strongSwan anchor's setting). Measures, median of --runs:
- TCP throughput of one iperf3 stream through the tunnel;
- UDP packet rates through the tunnel at 64 and 1400 bytes of payload (iperf3 -u -b 0, what
  the receiver got per second).
Crypto through the dispatcher with the chosen backend (default openssl).

    sudo .venv/bin/python tests/bench/esp_bench.py [--esp aes128gcm16] [--encap] [--seconds 5]
        [--runs 3] [--crypto-backend openssl] [--json]

Needs root, iperf3 (apt-get install iperf3). Compare ratios measured on the same machine in
the same run; docs/performance.md has the strongSwan kernel-libipsec anchors.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ocfpy.esp.static import StaticTunnel  # noqa: E402
from ocfpy.netlab import Lab, can_build_lab  # noqa: E402

ANCHORS = {"libipsec_tcp_mbit": 358.0, "libipsec_udp64_pps": 34_500.0}  # docs/performance.md


def iperf(lab: Lab, tun: StaticTunnel, args: list[str], seconds: int) -> dict:
    server = lab.popen(tun.b, ["iperf3", "-s", "-1", "-B", tun.INNER[1]],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.4)
        out = lab.run(tun.a, ["iperf3", "-c", tun.INNER[1], "-B", tun.INNER[0], "-t",
                              str(seconds), "-J", *args], timeout=seconds + 30)
        if out.returncode != 0:
            raise RuntimeError(f"iperf3 failed: {out.stdout[-500:]} {out.stderr[-500:]}")
        return json.loads(out.stdout)
    finally:
        lab.stop(server)


def tcp_mbit(lab, tun, seconds: int) -> float:
    j = iperf(lab, tun, [], seconds)
    return j["end"]["sum_received"]["bits_per_second"] / 1e6


def udp_pps(lab, tun, size: int, seconds: int) -> float:
    j = iperf(lab, tun, ["-u", "-b", "0", "-l", str(size)], seconds)
    s = j["end"]["sum"]
    received = s["packets"] - s["lost_packets"]
    return received / s["seconds"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--esp", default="aes128gcm16")
    p.add_argument("--encap", action="store_true", help="UDP 4500 instead of raw ESP")
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--crypto-backend", default="openssl")
    p.add_argument("--mtu", type=int, default=1400)
    p.add_argument("--gso", type=int, default=0, metavar="BYTES",
                   help="TUN segmentation offload with super-packets up to BYTES (0: off)")
    p.add_argument("--strongswan", action="store_true",
                   help="also measure strongSwan kernel-libipsec in the same run (needs the "
                        "strongSwan packages; ocfpy.benchmarks.strongswan)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    why = can_build_lab()
    if why:
        sys.exit(f"esp_bench: {why}")
    if shutil.which("iperf3") is None:
        sys.exit("esp_bench: iperf3 is missing (apt-get install iperf3)")
    results: dict[str, list[float]] = {"tcp_mbit": [], "udp64_pps": [], "udp1400_pps": []}
    with Lab("oesb") as lab, StaticTunnel(lab, esp=args.esp, encap=args.encap, mtu=args.mtu,
                                          crypto_backend=args.crypto_backend,
                                          tun="oesb-tun0", gso=args.gso) as tun:
        for _ in range(args.runs):
            results["tcp_mbit"].append(tcp_mbit(lab, tun, args.seconds))
            results["udp64_pps"].append(udp_pps(lab, tun, 64, args.seconds))
            results["udp1400_pps"].append(udp_pps(lab, tun, 1400 - 28, args.seconds))
        counters = {s: tun.counters(s) for s in "ab"}
    median = {k: statistics.median(v) for k, v in results.items()}
    reference = dict(ANCHORS)
    reference_from = "anchor figures in docs/performance.md (not this run)"
    if args.strongswan:
        from ocfpy.benchmarks.strongswan import esp_throughput

        sw = esp_throughput(esp_proposal=args.esp, seconds=args.seconds, runs=args.runs,
                            mtu=args.mtu, prefix="oesw")
        reference = {"libipsec_tcp_mbit": sw.tcp_mbit_s, "libipsec_udp64_pps": sw.udp64_pps}
        reference_from = f"strongSwan {sw.strongswan} kernel-libipsec, measured in this run"
    report = {
        "esp": args.esp, "encap": args.encap, "mtu": args.mtu, "gso": args.gso, "backend": args.crypto_backend,
        "runs": results, "median": median,
        "reference": reference, "reference_from": reference_from,
        "vs_libipsec": {
            "tcp": median["tcp_mbit"] / reference["libipsec_tcp_mbit"],
            "udp64": median["udp64_pps"] / reference["libipsec_udp64_pps"],
        },
        "drops_b": counters["b"]["dataplane"], "sa_b": counters["b"]["sa"],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"userspace ESP {args.esp} {'UDP 4500' if args.encap else 'raw ESP'}, TUN MTU "
              f"{args.mtu}, backend {args.crypto_backend}, median of {args.runs} x "
              f"{args.seconds} s")
        ref = report["reference"]
        print(f"  TCP 1 stream   {median['tcp_mbit']:8.0f} Mbit/s   "
              f"({report['vs_libipsec']['tcp']:.2f}x libipsec's {ref['libipsec_tcp_mbit']:.0f})")
        print(f"  UDP 64 B       {median['udp64_pps']:8.0f} pkt/s    "
              f"({report['vs_libipsec']['udp64']:.2f}x libipsec's "
              f"{ref['libipsec_udp64_pps']:.0f})")
        print(f"  UDP 1372 B     {median['udp1400_pps']:8.0f} pkt/s")
        print(f"  reference: {reference_from}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
