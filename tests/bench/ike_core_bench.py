"""IKE core benchmark: in-memory IKE_SA + CHILD_SA establishments per second, and memory per
established SA pair (tracemalloc), two engines back to back, no sockets.

    python tests/bench/ike_core_bench.py [--count N] [--hold N] [--ike P] [--esp P]

Establishments/s counts both ends' work (initiator and responder run in this one process), which
is what charon-to-charon on one box measures too (docs/performance.md: about 420-444/s here).
Bytes per SA are measured with ``--hold`` SA pairs kept up, divided by the number of pairs and
by 2 for one end (an IKE SA + CHILD_SA on one side, comparable to charon's 17.7 KB).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc

from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.ike.config import (
    AuthConfig,
    ChildConfig,
    Connection,
    DaemonOptions,
    IkeConfig,
    Secret,
)
from ocfpy.ike.engine import IkeEngine
from ocfpy.ike.events import ChildSaEstablished


def configs(ike: str, esp: str) -> tuple[IkeConfig, IkeConfig]:
    secrets = [Secret(["moon.example.org", "sun.example.org"], b"benchmark psk")]
    opts = DaemonOptions(cookie_threshold=0)

    def conn(l_addr, r_addr, lid, rid, lts, rts):
        return Connection("home", [l_addr], [r_addr], AuthConfig(id=lid), AuthConfig(id=rid), [ike],
                          {"net": ChildConfig("net", [lts], [rts], [esp])})

    return (IkeConfig({"home": conn("10.0.0.1", "10.0.0.2", "moon.example.org",
                                    "sun.example.org", "10.1.0.0/16", "10.2.0.0/16")},
                      secrets, opts),
            IkeConfig({"home": conn("10.0.0.2", "10.0.0.1", "sun.example.org",
                                    "moon.example.org", "10.2.0.0/16", "10.1.0.0/16")},
                      secrets, opts))


def establish(i: IkeEngine, r: IkeEngine, n: int, now: float = 0.0) -> int:
    """Start n IKE SAs and run both engines until quiet; returns CHILD_SAs established."""
    for _ in range(n):
        i.initiate("home", now, reuse=False)
    while True:
        out = i.datagrams_to_send(now)
        back = r.datagrams_to_send(now)
        if not out and not back:
            break
        for data, local, remote in out:
            r.receive_datagram(data, remote, local, now)
        for data, local, remote in back:
            i.receive_datagram(data, remote, local, now)
    done = 0
    for e in (i, r):
        while (ev := e.next_event()) is not None:
            done += isinstance(ev, ChildSaEstablished) and e is i
    return done


def rss_bytes() -> int:
    """Resident set size: counts what tracemalloc cannot see (OpenSSL/Rust allocations)."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000, help="establishments for the rate")
    ap.add_argument("--hold", type=int, default=10000, help="SA pairs kept up for memory")
    ap.add_argument("--ike", default="aes128gcm16-prfsha256-x25519")
    ap.add_argument("--esp", default="aes128gcm16")
    ap.add_argument("--batch", type=int, default=50, help="SAs started before pumping")
    ap.add_argument("--charon", type=int, default=0, metavar="N",
                    help="also measure charon to charon (N concurrent, root + strongSwan) in "
                         "this run, and report the ratio")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    d = Dispatcher()
    ci, cr = configs(args.ike, args.esp)

    # rate: fresh engines, batches of concurrent establishments
    i, r = IkeEngine(ci, d), IkeEngine(cr, d)
    establish(i, r, 20)  # warm up
    t0 = time.perf_counter()
    c0 = time.process_time()
    done = 0
    while done < args.count:
        n = establish(i, r, min(args.batch, args.count - done))
        if not n:
            raise SystemExit("no CHILD_SA was established: see the log")
        done += n
    rate = done / (time.perf_counter() - t0)
    cpu_rate = done / max(time.process_time() - c0, 1e-9)  # fairer on a shared, busy machine

    # memory: a fresh pair of engines, measure what holding N pairs costs
    del i, r
    gc.collect()
    i, r = IkeEngine(ci, d), IkeEngine(cr, d)
    establish(i, r, 10)
    gc.collect()
    rss_before = rss_bytes()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = 0
    while held < args.hold:
        held += establish(i, r, min(500, args.hold - held))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_pair = (after - before) / held
    # RSS without tracemalloc's own bookkeeping: a second, untraced run of the same size
    del i, r
    gc.collect()
    i, r = IkeEngine(ci, d), IkeEngine(cr, d)
    establish(i, r, 10)
    gc.collect()
    rss_before = rss_bytes()
    held2 = 0
    while held2 < args.hold:
        held2 += establish(i, r, min(500, args.hold - held2))
    gc.collect()
    rss_per_pair = (rss_bytes() - rss_before) / held2
    result = {
        "ike": args.ike, "esp": args.esp, "establishments_per_s": round(rate, 1),
        "establishments_per_cpu_s": round(cpu_rate, 1),
        "held": held, "bytes_per_sa_pair": round(per_pair), "bytes_per_side": round(per_pair / 2),
        "rss_bytes_per_sa_pair": round(rss_per_pair), "rss_bytes_per_side": round(rss_per_pair / 2),
        "up_initiator": len(i.sa_list()), "up_responder": len(r.sa_list()),
    }
    if args.charon:
        from ocfpy.bench.strongswan import ike_establishment_rate

        ref = ike_establishment_rate(args.charon, proposal=args.ike, esp_proposal=args.esp,
                                     prefix="ikec", sequential=5)
        result["charon"] = {"establishments_per_s": round(ref.rate_per_s, 1),
                            "memory_per_sa_kb": ref.memory_per_sa_kb, "notes": ref.notes,
                            "strongswan": ref.strongswan}
        result["rate_ratio"] = round(rate / ref.rate_per_s, 2)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.ike} / {args.esp}: {rate:.0f} IKE+CHILD SA establishments/s "
              f"(both ends in one process; {cpu_rate:.0f} per CPU second of this process)\nmemory with {held} up, per side (one IKE SA + "
              f"CHILD_SA): {per_pair / 2048:.1f} KiB traced by tracemalloc (Python objects), "
              f"{rss_per_pair / 2048:.1f} KiB of resident set growth (all allocators)")
        if args.charon:
            c = result["charon"]
            print(f"charon, same run: {c['establishments_per_s']:.0f}/s with {args.charon} "
                  f"concurrent (two daemons, namespaces, sockets), {c['memory_per_sa_kb']} KB "
                  f"per SA; ocfpy core / charon = {result['rate_ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
