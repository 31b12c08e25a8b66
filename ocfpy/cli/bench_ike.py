"""`ocfpy bench ike`: IKE_SA + CHILD_SA establishments per second and memory per SA, ocfpy
against strongSwan's charon in the same run (measurement: ocfpy.bench.ike)."""

from __future__ import annotations

import argparse

from ocfpy.cli.bench_netns import NetnsBench


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=200, help="establishments in one burst (default 200)")
    p.add_argument("--sequential", type=int, default=50,
                   help="establishments one after the other (default 50)")
    p.add_argument("--memory", type=int, default=10000,
                   help="SAs up when the responder's memory is read (default 10000; 0: skip)")
    p.add_argument("--auth", default="psk", metavar="KIND",
                   help="psk (default), or certificates of this key kind on both sides: "
                   "ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, ed25519, ... (RFC 7427)")


def _check(args: argparse.Namespace) -> str | None:
    if min(args.n, args.sequential, args.memory) < 0 or args.n < 1:
        return "--n must be at least 1; --sequential and --memory at least 0"
    from ocfpy.lab.pki import KINDS

    if args.auth != "psk" and args.auth not in KINDS:
        return f"--auth {args.auth!r}: psk or one of {', '.join(KINDS)}"
    return None


def _steps(args: argparse.Namespace) -> int:
    # ocfpy: sequential, burst, fill; charon: its own pair, two mixed pairs of two, fill
    steps = 2 + (1 if args.memory else 0)
    if not args.no_strongswan:
        steps += 5 + (1 if args.memory else 0)
    return steps


def _measure(args: argparse.Namespace, step) -> object:
    from ocfpy.bench import ike

    return ike.run(args.n, args.sequential, args.memory, charon=not args.no_strongswan,
                   workdir=args.workdir, prefix=args.prefix, profile_dir=args.profile,
                   step=step, auth=args.auth)


def _errors() -> tuple[type[Exception], ...]:
    from ocfpy.bench.ike import IkeBenchError

    return (IkeBenchError,)


BENCH = NetnsBench(
    name="ike", help="IKE_SA + CHILD_SA establishment rate and memory per SA vs charon",
    description="Two network namespaces, PSK (or --auth: certificates) + x25519 + "
    "aes128gcm16: a burst of --n "
    "establishments at once and --sequential one after the other for ocfpy -> ocfpy and "
    "(with strongSwan installed) charon -> charon, ocfpy -> charon, charon -> ocfpy; the "
    "responder's memory per IKE SA with --memory SAs up. Needs root. Targets: rate >= "
    "charon's, memory per SA <= charon's (docs/benchmarking.md).",
    add_options=_options, check=_check, steps=_steps, measure=_measure,
    show=lambda con, report: _print(con, report), errors=_errors,
    command=lambda a: {"n": a.n, "sequential": a.sequential, "memory": a.memory,
                       "charon": not a.no_strongswan, "auth": a.auth},
    deprecated={"--no-charon": "--no-strongswan"},
)


def _print(con, report) -> None:
    from rich.table import Table

    auth = "PSK" if report.auth == "psk" else f"{report.auth} certificates"
    t = Table(title=f"ocfpy bench ike: IKE_SA + CHILD_SA ({auth}, x25519, aes128gcm16)")
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
