"""`ocfpy bench ike`: IKE_SA + CHILD_SA establishments per second and memory per SA, ocfpy
against strongSwan's charon in the same run (measurement: ocfpy.bench.ike)."""

from __future__ import annotations

import argparse

from ocfpy.cli.common import console, fail, print_json

SETUP_HINT = "install the lanes' packages with `bash scripts/setup.sh`"


def register(bsub: argparse._SubParsersAction) -> None:
    p = bsub.add_parser(
        "ike", help="IKE_SA + CHILD_SA establishment rate and memory per SA vs charon",
        description="Two network namespaces, PSK + x25519 + aes128gcm16: a burst of --n "
        "establishments at once and --sequential one after the other for ocfpy -> ocfpy and "
        "(with strongSwan installed) charon -> charon, ocfpy -> charon, charon -> ocfpy; the "
        "responder's memory per IKE SA with --memory SAs up. Needs root. Targets: rate >= "
        "charon's, memory per SA <= charon's (docs/benchmarking.md).",
    )
    p.add_argument("--n", type=int, default=200, help="establishments in one burst (default 200)")
    p.add_argument("--sequential", type=int, default=50,
                   help="establishments one after the other (default 50)")
    p.add_argument("--memory", type=int, default=10000,
                   help="SAs up when the responder's memory is read (default 10000; 0: skip)")
    p.add_argument("--no-charon", action="store_true",
                   help="ocfpy only (no strongSwan needed; no ratios)")
    p.add_argument("--profile", metavar="DIR",
                   help="run the ocfpy responder under cProfile, keep DIR/ike-responder.prof "
                   "and print its top entries")
    p.add_argument("--workdir", metavar="DIR",
                   help="keep configs and daemon logs here (default: a temporary folder)")
    p.add_argument("--prefix", default="obn",
                   help="name prefix of the namespaces, links and temp folders (default obn; "
                   "at most 5 characters, letters and digits)")
    p.add_argument("--json", action="store_true", help="print JSON results")
    p.set_defaults(func=run_ike)


def preflight(args: argparse.Namespace) -> str | None:
    """Why the benchmark cannot run as asked, with what to do about it; None when it can."""
    import os

    if not (args.prefix.isalnum() and args.prefix.isascii() and 1 <= len(args.prefix) <= 5):
        return f"--prefix {args.prefix!r}: 1 to 5 letters or digits (interface names are short)"
    if os.geteuid() != 0:
        return "`ocfpy bench ike` needs root (it builds network namespaces): run it with sudo"
    if min(args.n, args.sequential, args.memory) < 0 or args.n < 1:
        return "--n must be at least 1; --sequential and --memory at least 0"
    if not args.no_charon:
        from ocfpy.lab.charon import unavailable_reason

        why = unavailable_reason()
        if why:
            return (f"strongSwan's charon cannot run: {why}; {SETUP_HINT} (lane interop), "
                    "or pass --no-charon for ocfpy's figures alone")
    return None


def run_ike(args: argparse.Namespace) -> int:
    why = preflight(args)
    if why:
        fail(why)
    from rich.progress import Progress

    from ocfpy.bench import ike
    from ocfpy.cli.bench import _machine

    con = console()
    # ocfpy: sequential, burst, fill; charon: its own pair, two mixed pairs of two, fill
    steps = 2 + (1 if args.memory else 0)
    if not args.no_charon:
        steps += 5 + (1 if args.memory else 0)
    with Progress(console=con, transient=True, disable=args.json) as progress:
        task = progress.add_task("starting", total=steps)

        def step(label: str) -> None:
            progress.update(task, advance=1, description=label)
        try:
            report = ike.run(args.n, args.sequential, args.memory, charon=not args.no_charon,
                             workdir=args.workdir, prefix=args.prefix,
                             profile_dir=args.profile, step=step)
        except ike.IkeBenchError as exc:
            fail(f"bench ike: {exc}", 1)
            raise  # unreachable
    result = report.as_dict()
    result["machine"] = _machine()
    result["command"] = {"n": args.n, "sequential": args.sequential, "memory": args.memory,
                         "charon": not args.no_charon}
    if args.json:
        print_json(result)
        return 0
    _print(con, report)
    return 0


def _print(con, report) -> None:
    from rich.table import Table

    t = Table(title="ocfpy bench ike: IKE_SA + CHILD_SA (PSK, x25519, aes128gcm16)")
    for col in ("initiator -> responder", "burst", "up", "per second", "sequential ms", "notes"):
        t.add_column(col, justify="right" if col in ("burst", "up", "per second",
                                                     "sequential ms") else "left")
    for p in report.pairs:
        t.add_row(p.label, str(p.n), str(p.established), f"{p.rate_per_s:,.0f}",
                  f"{p.sequential_ms:.1f}", "; ".join(p.notes))
    con.print(t)
    if report.memory:
        m = Table(title="responder memory per IKE_SA + CHILD_SA")
        for col in ("implementation", "SAs up", "kB per SA", "fill per second", "notes"):
            m.add_column(col, justify="left" if col in ("implementation", "notes") else "right")
        for r in report.memory:
            m.add_row(r.implementation, f"{r.sas:,}", f"{r.kb_per_sa:.1f}",
                      f"{r.fill_per_s:,.0f}", "; ".join(r.notes))
        con.print(m)
    for name, value in report.ratios.items():
        con.print(f"{name}: {value:.2f}")
    for name, met in report.targets.items():
        con.print(f"target {name}: {'met' if met else 'MISSED'}")
    for name, why in report.skipped.items():
        con.print(f"skipped {name}: {why}")
    if report.profile:
        con.print("ocfpy responder, top functions by own time:")
        for row in report.profile[:10]:
            con.print(f"  {row['share']:6.1%}  {row['tottime_s']:8.3f} s  {row['calls']:>9}  "
                      f"{row['function']}")
    con.print(f"load average: {' '.join(report.load_average)}")
