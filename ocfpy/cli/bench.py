"""`ocfpy bench`: measure backend choices (crypto, overhead) and ocfpy against strongSwan (ike, esp)."""

from __future__ import annotations

import argparse
import platform
import sys
import time

from ocfpy.cli.common import (
    comma_list,
    console,
    deprecated_alias,
    fail,
    make_dispatcher,
    print_json,
)
from ocfpy.crypto.calibration import default_path as default_calibration_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="benchmark drivers, dispatch overhead, IKE and ESP",
        description="Benchmarks report medians and spreads of repeated rounds; compare figures "
        "as ratios measured side by side in one run (docs/benchmarking.md).",
    )
    bsub = p.add_subparsers(dest="bench", metavar="WHAT")

    c = bsub.add_parser(
        "crypto", help="every active driver x algorithm x size, ops/s and MB/s",
        description="Measure every active driver (or those --drivers names) for the chosen "
        "algorithms and sizes, single-op and batch paths, and mark the fastest driver per row. "
        "--save keeps the figures as a calibration that `ocfpy iked --calibration`, "
        "`[daemon] calibration` and `ocfpy demo`/`bench esp --calibration` rank drivers by.",
    )
    c.add_argument("--drivers", type=comma_list, action="extend", metavar="LIST",
                   help="only these drivers (comma-separated, repeatable); default: every "
                   "active driver")
    c.add_argument("--algorithms", default=None, metavar="LIST",
                   help="comma-separated keywords (default: a representative set; 'all' for every one)")
    c.add_argument("--sizes", default=None, metavar="LIST",
                   help="comma-separated bytes per op (default 64,256,1400,9000,16384)")
    c.add_argument("--duration", type=float, default=0.2, metavar="S",
                   help="seconds per round (default 0.2)")
    c.add_argument("--rounds", type=int, default=3,
                   help="rounds per case; the median is reported (default 3)")
    c.add_argument("--no-batch", action="store_true", help="skip the batch path")
    c.add_argument("--json", action="store_true", help="print JSON results")
    c.add_argument("--plot", metavar="FILE.png", help="plot MB/s vs size per driver (needs matplotlib)")
    c.add_argument("--save", nargs="?", const="", metavar="PATH",
                   help="save a calibration for the dispatcher's calibrated policy "
                   f"(default {default_calibration_path()}, what --calibration default reads)")
    deprecated_alias(c, "--backend", "--drivers")
    c.set_defaults(func=run_crypto)

    o = bsub.add_parser(
        "overhead", help="dispatch overhead: a session vs a direct `cryptography` call",
        description="AES-256-GCM seal through a dispatcher session (single op and batch) vs "
        "calling cryptography's AESGCM directly, interleaved in one process; prints the ratios "
        "(targets: session <= 1.10x, batch <= 1.0x per op).",
    )
    o.add_argument("--size", type=int, default=1400, help="bytes per seal (default 1400)")
    o.add_argument("--rounds", type=int, default=7,
                   help="interleaved rounds; medians of per-round ratios (default 7)")
    o.add_argument("--duration", type=float, default=0.3, metavar="S",
                   help="seconds per round and variant (default 0.3)")
    o.add_argument("--crypto-backend", default="openssl", metavar="NAME",
                   help="the driver the session is forced onto (default openssl)")
    o.add_argument("--json", action="store_true", help="print JSON results")
    deprecated_alias(o, "--driver", "--crypto-backend")
    o.set_defaults(func=run_overhead)

    a = bsub.add_parser(
        "async", help="asynchronous submission: throughput at queue depth 1 vs 8 vs 32",
        description="Keep DEPTH requests in flight through a session's submit/collect (the "
        "asynchronous driver contract) and report ops/s per driver, algorithm, size and depth, "
        "with the ratio to depth 1. Asynchronous drivers (af_alg: kernel AIO; kernel_accel: the "
        "device's queue) gain from depth; synchronous ones only save per-call overhead.",
    )
    a.add_argument("--drivers", type=comma_list, action="extend", metavar="LIST",
                   help="only these drivers (default: every active driver)")
    a.add_argument("--algorithms", type=comma_list, default=None, metavar="LIST",
                   help="AEAD or cipher keywords (default aes256gcm16,aes256)")
    a.add_argument("--sizes", type=comma_list, default=None, metavar="LIST",
                   help="bytes per request (default 64,1400,9000; CBC rounds down to blocks)")
    a.add_argument("--depths", type=comma_list, default=None, metavar="LIST",
                   help="requests in flight (default 1,8,32)")
    a.add_argument("--duration", type=float, default=0.3, metavar="S")
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--json", action="store_true", help="print JSON results")
    a.set_defaults(func=run_async)

    from ocfpy.cli import bench_esp, bench_ike, bench_netns

    for module in (bench_ike, bench_esp):
        bench_netns.register(bsub, module.BENCH)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def machine() -> dict:
    import os

    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def run_crypto(args: argparse.Namespace) -> int:
    from ocfpy.bench import crypto as bench
    from ocfpy.crypto.calibration import Calibration, default_path
    from ocfpy.crypto.catalogue import crypto_transforms
    from ocfpy.crypto.errors import UnknownAlgorithm

    # Every driver is measured by forcing it, session by session: no backend, no calibration.
    dispatcher = make_dispatcher()
    active = [r.name for r in dispatcher.registry.active()]
    drivers = args.drivers or active
    for d in drivers:
        if d not in active:
            fail(f"driver {d!r} is not active (active: {', '.join(active) or 'none'}); "
                 "see `ocfpy drivers`")
    try:
        if args.algorithms == "all":
            algorithms = crypto_transforms()
        else:
            names = args.algorithms.split(",") if args.algorithms else bench.DEFAULT_ALGORITHMS
            algorithms = bench.resolve_algorithms(n for n in names if n)
    except UnknownAlgorithm as exc:
        fail(str(exc))
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else bench.DEFAULT_SIZES
    plan = bench.Plan(drivers, algorithms, sizes, args.duration, args.rounds, not args.no_batch)
    plan.build(dispatcher)
    if not plan.cases:
        fail("nothing to measure: no chosen driver serves the chosen algorithms")

    from rich.progress import Progress

    con = console()
    with Progress(console=con, transient=True, disable=args.json) as progress:
        task = progress.add_task("benchmarking", total=len(plan.cases))

        def step(label: str) -> None:
            progress.update(task, advance=1, description=label)
        results = bench.run(dispatcher, plan, step)

    if args.save is not None:
        cal = Calibration(source=f"ocfpy bench crypto, {machine()['when']}")
        for r in results:
            if r.path in ("single", "exchange"):
                cal.add(r.algorithm, r.driver, r.size, r.ops_per_s)
        path = cal.save(default_path() if args.save == "" else __import__("pathlib").Path(args.save))
        con.print(f"calibration saved to {path}") if not args.json else None
    if args.plot:
        _plot(results, args.plot)
    if args.json:
        print_json({"machine": machine(), "results": [r.as_dict() for r in results]})
        return 0
    _table(con, results)
    if args.plot:
        con.print(f"plot written to {args.plot}")
    return 0


def _table(con, results) -> None:
    from rich.table import Table

    table = Table(title="ocfpy bench crypto (median of rounds; * = fastest driver for the row)")
    for col in ("algorithm", "path", "bytes", "driver", "ops/s", "MB/s", "spread ops/s"):
        table.add_column(col, justify="right" if col in ("bytes", "ops/s", "MB/s") else "left")
    for r in sorted(results, key=lambda r: (r.algorithm, r.path, r.size, -r.ops_per_s)):
        mark = "*" if r.fastest else ""
        table.add_row(r.algorithm, r.path, str(r.size or "-"), f"{r.driver}{mark}",
                      f"{r.ops_per_s:,.0f}", f"{r.mb_per_s:,.1f}" if r.size else "-",
                      f"{r.spread[0]:,.0f}..{r.spread[1]:,.0f}")
    con.print(table)


def _plot(results, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("--plot needs matplotlib: pip install 'ocfpy[plot]'")
    series: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for r in results:
        if r.size:
            series.setdefault((r.algorithm, r.driver, r.path), []).append((r.size, r.mb_per_s))
    algorithms = sorted({k[0] for k in series})
    cols = min(3, len(algorithms)) or 1
    rows = (len(algorithms) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, alg in zip(axes.flat, algorithms, strict=False):
        for (a, drv, pth), pts in sorted(series.items()):
            if a != alg:
                continue
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                    linestyle="-" if pth == "single" else "--", label=f"{drv} ({pth})")
        ax.set_xscale("log")
        ax.set_title(alg)
        ax.set_xlabel("bytes per op")
        ax.set_ylabel("MB/s")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(algorithms):]:
        ax.axis("off")
    fig.suptitle("ocfpy bench crypto: throughput vs size per driver")
    fig.tight_layout()
    fig.savefig(path, dpi=72)  # small enough to commit into docs/


def run_overhead(args: argparse.Namespace) -> int:
    from ocfpy.bench.crypto import dispatch_overhead

    dispatcher = make_dispatcher()
    result = dispatch_overhead(dispatcher, args.size, args.rounds, args.duration,
                               args.crypto_backend)
    result["machine"] = machine()
    if args.json:
        print_json(result)
        return 0
    us = result["us_per_op"]
    print(f"AES-256-GCM seal, {args.size} bytes, driver {args.crypto_backend}, {args.rounds} interleaved rounds")
    print(f"  direct cryptography AESGCM.encrypt : {us['direct']:.3f} us/op")
    print(f"  session.seal                       : {us['session']:.3f} us/op  "
          f"ratio {result['ratio_session_vs_direct']:.3f} (target <= 1.10)")
    print(f"  session.seal_batch (64 per call)   : {us['batch']:.3f} us/op  "
          f"ratio {result['ratio_batch_vs_direct']:.3f} (target <= 1.00)")
    print(f"  direct cryptography AESGCM.decrypt : {us['direct_open']:.3f} us/op")
    print(f"  session.open                       : {us['session_open']:.3f} us/op  "
          f"ratio {result['ratio_session_open_vs_direct']:.3f} (target <= 1.10)")
    print(f"  session.open_batch (64 per call)   : {us['batch_open']:.3f} us/op  "
          f"ratio {result['ratio_batch_open_vs_direct']:.3f} (target <= 1.00)")
    sys.stdout.flush()
    return 0


def run_async(args: argparse.Namespace) -> int:
    from ocfpy.bench.crypto import DEFAULT_DEPTHS, async_depth_table

    dispatcher = make_dispatcher()
    active = [r.name for r in dispatcher.registry.active()]
    drivers = args.drivers or active
    for d in drivers:
        if d not in active:
            fail(f"driver {d!r} is not active (active: {', '.join(active)})")
    rows = async_depth_table(
        dispatcher, drivers, args.algorithms or ["aes256gcm16", "aes256"],
        [int(x) for x in args.sizes] if args.sizes else [64, 1400, 9000],
        [int(x) for x in args.depths] if args.depths else DEFAULT_DEPTHS,
        args.duration, args.rounds)
    if args.json:
        print_json({"machine": machine(), "results": rows})
        return 0
    from rich.table import Table

    table = Table(title="ocfpy bench async (median of rounds; ratio to depth 1)")
    for col in ("algorithm", "driver", "bytes", "depth", "ops/s", "MB/s", "vs depth 1"):
        table.add_column(col, justify="left" if col in ("algorithm", "driver") else "right")
    for r in rows:
        table.add_row(r["algorithm"], r["driver"] + ("" if r["asynchronous"] else " (sync)"),
                      str(r["size"]), str(r["depth"]), f"{r['ops_per_s']:,.0f}",
                      f"{r['mb_per_s']:,.1f}", f"{r['vs_depth1']:.2f}x")
    console().print(table)
    return 0
