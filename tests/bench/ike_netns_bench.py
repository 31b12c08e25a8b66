#!/usr/bin/env python3
"""IKE benchmark (not a test): two `ocfpy iked` daemons in namespaces oid-a / oid-b.

1. establishment rate: IKE_SA + CHILD_SA (PSK, x25519, aes128gcm16) initiated by b towards a,
   N at once (concurrent, like charon's figure in docs/performance.md) and one after the
   other (sequential);
2. memory: RSS of the responder before and after M established IKE_SA + CHILD_SA, per SA.

Run as root from the repository root:
    .venv/bin/python tests/bench/ike_netns_bench.py --concurrent 200 --sequential 50 --memory 10000
Compare with charon in the same run where possible (docs/performance.md has the anchors).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "net"))

from ike_harness import Pair, config, ike_lab, wait_for  # noqa: E402

IKE = "aes128gcm16-prfsha256-x25519"
ESP = "aes128gcm16"
# No cookies (they add a round trip a flood test would want, a rate test would not), fast
# retransmits (loss is not expected on a veth), long half-open timeout (a burst of thousands).
DAEMON_OPTS = dict(cookie_threshold=1_000_000, retransmit="{ timeout = 2.0, tries = 5, base = 1.5 }")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def count_established(d) -> int:
    stats = d.call("stats", timeout=60)
    n = stats["engine"].get("ike_sas_established")
    if n is not None:
        return int(n)
    return len(d.established())


def burst(pair: Pair, n: int, timeout: float) -> float:
    """Initiate n IKE SAs from b without waiting; seconds until a has them all."""
    base = count_established(pair.a)
    t0 = time.perf_counter()
    from ocfpy.ike.control import ControlClient

    with ControlClient(pair.b.control, timeout=60) as client:
        for _ in range(n):
            client.call("initiate", name="t")
    wait_for(lambda: count_established(pair.a) >= base + n, timeout,
             f"{n} established IKE SAs on a", interval=0.2, on_fail=pair.logs)
    return time.perf_counter() - t0


def sequential(pair: Pair, n: int) -> float:
    from ocfpy.ike.control import ControlClient

    t0 = time.perf_counter()
    with ControlClient(pair.b.control, timeout=30) as client:
        for _ in range(n):
            r = client.call("initiate", name="t", wait=10)
            assert r["state"] == "established", r
            client.call("terminate", id=r["ike_id"])
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrent", type=int, default=200)
    ap.add_argument("--sequential", type=int, default=50)
    ap.add_argument("--memory", type=int, default=10000, help="SAs held for the RSS figure (0: skip)")
    ap.add_argument("--batch", type=int, default=500, help="initiations per burst while filling")
    args = ap.parse_args()
    results: dict[str, object] = {}
    with ike_lab() as pair:
        pair.a.start(config(0, proposals=[IKE], esp=[ESP], **DAEMON_OPTS))
        pair.b.start(config(1, proposals=[IKE], esp=[ESP], **DAEMON_OPTS))
        pair.a.call("initiate", name="t", wait=10)  # warm both (imports, first sessions)
        pair.a.call("terminate", name="t")
        wait_for(lambda: not pair.a.sas() and not pair.b.sas(), 10, "clean start")

        if args.sequential:
            dt = sequential(pair, args.sequential)
            results["sequential_per_s"] = round(args.sequential / dt, 1)
            results["sequential_ms_each"] = round(1000 * dt / args.sequential, 2)
            wait_for(lambda: not pair.a.sas(), 30, "sequential SAs gone", interval=0.2)

        if args.concurrent:
            dt = burst(pair, args.concurrent, timeout=120)
            results["concurrent_n"] = args.concurrent
            results["concurrent_per_s"] = round(args.concurrent / dt, 1)
            pair.b.call("terminate", name="t")
            wait_for(lambda: not pair.a.sas(), 120, "burst SAs gone", interval=0.5)

        if args.memory:
            pid = pair.a.proc.pid
            before = rss_kib(pid)
            t0 = time.perf_counter()
            done = 0
            while done < args.memory:
                n = min(args.batch, args.memory - done)
                burst(pair, n, timeout=600)
                done += n
            fill = time.perf_counter() - t0
            time.sleep(1.0)
            after = rss_kib(pid)
            results["memory_sas"] = args.memory
            results["memory_fill_per_s"] = round(args.memory / fill, 1)
            results["responder_rss_before_kib"] = before
            results["responder_rss_after_kib"] = after
            results["responder_kib_per_sa"] = round((after - before) / args.memory, 2)
            results["initiator_rss_after_kib"] = rss_kib(pair.b.proc.pid)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
