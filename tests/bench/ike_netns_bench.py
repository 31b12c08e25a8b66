#!/usr/bin/env python3
"""IKE benchmark (not a test): two `ocfpy iked` daemons in namespaces oid-a / oid-b.

1. establishment rate: IKE_SA + CHILD_SA (PSK, x25519, aes128gcm16) initiated by b towards a,
   N at once (concurrent, like charon's figure in docs/performance.md) and one after the
   other (sequential);
2. memory: RSS of the responder before and after M established IKE_SA + CHILD_SA, per SA.

Run as root from the repository root:
    .venv/bin/python tests/bench/ike_netns_bench.py --concurrent 200 --sequential 50 --memory 10000
Compare with charon in the same run where possible (docs/performance.md has the anchors).

Measured 2026-11-27 05:42 UTC, 2 vCPU shared with other jobs (load average 9-10), one run,
`--concurrent 200 --sequential 50 --memory 10000 --charon`:
    ocfpy: 184 IKE_SA+CHILD_SA/s concurrent, 12.0 ms sequential, 10.8 KiB RSS per SA on the
           responder with 10,000 up (initiator 208 MiB with 10,000 connections configured)
    charon (same run): 521/s concurrent, 6.5 ms sequential, 19.9 KB per SA (200 up)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "net"))

from ike_harness import IDS, OUTER, PSK, Pair, ike_lab, wait_for  # noqa: E402

IKE = "aes128gcm16-prfsha256-x25519"
ESP = "aes128gcm16"


def bench_config(side: int, connections: int) -> str:
    """Side 0 (a) answers any identity with one connection; side 1 (b) has one connection per
    IKE SA it will hold (c0, c1, ...: distinct identities, as the engine, like charon, reuses
    an IKE SA per connection). No cookies (a rate test must not pay a round trip a flood test
    would want), unhurried retransmits, a half-open timeout that outlives a burst."""
    me, peer = side, 1 - side
    out = [f"""[daemon]
crypto_backend = "openssl"
dataplane = "none"
listen = ["{OUTER[me]}"]
cookie_threshold = 1000000
half_open_timeout = "120s"

[secrets.ike]
secret = "{PSK}"
"""]
    names = ["t"] if side == 0 else [f"c{i}" for i in range(connections)]
    for name in names:
        local_id = IDS[0] if side == 0 else f"{name}.{IDS[1]}"
        remote = "" if side == 0 else f'remote = {{ id = "{IDS[0]}" }}\n'
        out.append(f"""[connections.{name}]
local_addrs = ["{OUTER[me]}"]
remote_addrs = ["{OUTER[peer]}"]
proposals = ["{IKE}"]
retransmit = {{ timeout = 3.0, tries = 4, base = 1.5 }}
local = {{ id = "{local_id}" }}
{remote}[connections.{name}.children.net]
local_ts = ["10.177.{me + 1}.0/24"]
remote_ts = ["10.177.{peer + 1}.0/24"]
esp_proposals = ["{ESP}"]
""")
    return "\n".join(out)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def burst(pair: Pair, names: list[str], timeout: float) -> float:
    """Initiate one IKE SA per connection name from b without waiting; seconds until a has
    them all established."""
    from ocfpy.ike.control import ControlClient

    base = count_established(pair.a)
    t0 = time.perf_counter()
    with ControlClient(pair.b.control, timeout=60) as client:
        for name in names:
            client.call("initiate", name=name)
    wait_for(lambda: count_established(pair.a) >= base + len(names), timeout,
             f"{len(names)} more established IKE SAs on a", interval=0.2, on_fail=pair.logs)
    return time.perf_counter() - t0


def sequential(pair: Pair, n: int) -> float:
    from ocfpy.ike.control import ControlClient

    t0 = time.perf_counter()
    with ControlClient(pair.b.control, timeout=30) as client:
        for _ in range(n):
            r = client.call("initiate", name="c0", wait=10)
            assert r["state"] == "established" and not r.get("reused"), r
            client.call("terminate", id=r["ike_id"])
    return time.perf_counter() - t0


def count_established(d) -> int:
    """IKE SAs the daemon has established so far (a counter: listing 10,000 SAs over the
    control socket would measure the listing); callers take differences."""
    return d.call("stats", timeout=60)["engine"].get("ike_established", 0)


def charon_figures(n: int) -> dict:
    """The same measurement with charon on both sides, for ratios taken in one run."""
    try:
        from ocfpy.benchmarks import strongswan
    except ImportError as exc:
        return {"skipped": f"ocfpy.benchmarks.strongswan is not in this tree ({exc})"}
    try:
        return strongswan.ike_establishment_rate(n, prefix="oidc").as_dict()
    except strongswan.BenchmarkUnavailable as exc:
        return {"skipped": str(exc)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrent", type=int, default=200)
    ap.add_argument("--sequential", type=int, default=50)
    ap.add_argument("--memory", type=int, default=10000, help="SAs held for the RSS figure (0: skip)")
    ap.add_argument("--batch", type=int, default=500, help="initiations per burst while filling")
    ap.add_argument("--charon", action="store_true",
                    help="also measure charon -> charon in the same run (needs strongSwan and "
                    "ocfpy.benchmarks.strongswan from the interop branch)")
    args = ap.parse_args()
    results: dict[str, object] = {}
    total = max(args.concurrent, args.memory, 1)
    with ike_lab() as pair:
        # warnings only: per-message debug logging would be what we measure
        pair.a.start(bench_config(0, 1), verbosity="")
        pair.b.start(bench_config(1, total), verbosity="", timeout=120)
        pair.b.call("initiate", name="c0", wait=10)  # warm both (imports, first sessions)
        pair.b.call("terminate", name="c0")
        wait_for(lambda: not pair.a.sas() and not pair.b.sas(), 10, "clean start")

        if args.sequential:
            dt = sequential(pair, args.sequential)
            results["sequential_per_s"] = round(args.sequential / dt, 1)
            results["sequential_ms_each"] = round(1000 * dt / args.sequential, 2)
            wait_for(lambda: not pair.a.sas(), 30, "sequential SAs gone", interval=0.2)

        if args.concurrent:
            names = [f"c{i}" for i in range(args.concurrent)]
            dt = burst(pair, names, timeout=120)
            results["concurrent_n"] = args.concurrent
            results["concurrent_per_s"] = round(args.concurrent / dt, 1)
            for name in names:
                pair.b.call("terminate", name=name)
            wait_for(lambda: not pair.a.sas(), 120, "burst SAs gone", interval=0.5)

        if args.memory:
            pid = pair.a.proc.pid
            before = rss_kib(pid)
            t0 = time.perf_counter()
            for start in range(0, args.memory, args.batch):
                names = [f"c{i}" for i in range(start, min(start + args.batch, args.memory))]
                burst(pair, names, timeout=600)
            fill = time.perf_counter() - t0
            time.sleep(1.0)
            after = rss_kib(pid)
            results["memory_sas"] = args.memory
            results["memory_fill_per_s"] = round(args.memory / fill, 1)
            results["responder_rss_before_kib"] = before
            results["responder_rss_after_kib"] = after
            results["responder_kib_per_sa"] = round((after - before) / args.memory, 2)
            results["initiator_rss_after_kib"] = rss_kib(pair.b.proc.pid)
            results["load_average"] = Path("/proc/loadavg").read_text().split()[:3]
    if args.charon:
        results["charon"] = charon_figures(args.concurrent or 200)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
