"""`ocfpy drivers`: every registered driver, its kind, status and algorithms."""

from __future__ import annotations

import argparse

from ocfpy.cli.common import console, print_json
from ocfpy.crypto.registry import DriverStatus, Registry

_STYLE = {DriverStatus.ACTIVE: "green", DriverStatus.QUARANTINED: "red", DriverStatus.UNAVAILABLE: "yellow",
          DriverStatus.GONE: "magenta"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "drivers", help="list crypto drivers and what each serves",
        description="Load every driver registered under the `ocfpy.drivers` entry point group, "
        "run its known-answer tests, and list it as active, quarantined (failed a KAT) or "
        "unavailable (with the reason).",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--no-selftest", action="store_true",
                   help="skip the known-answer tests (admit drivers untested; for diagnosis only)")
    p.add_argument("--details", action="store_true",
                   help="show per algorithm the implementation that serves it")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    registry = Registry.load(run_selftests=not args.no_selftest)
    records = registry.records()
    if args.json:
        print_json([r.as_dict() for r in records])
        return 0
    from rich.table import Table

    table = Table(title="ocfpy drivers", show_lines=True)
    for col in ("driver", "kind", "status", "algorithms", "reason"):
        table.add_column(col, overflow="fold")
    for r in records:
        if args.details and r.admitted:
            algos = "\n".join(f"{k}: {o.implementation}" if o.implementation else k
                              for k, o in sorted(r.admitted.items()))
        else:
            algos = " ".join(sorted(r.admitted)) or "-"
        if r.quarantined:
            algos += "\n[red]quarantined: " + ", ".join(
                f"{k} ({v})" for k, v in sorted(r.quarantined.items())) + "[/red]"
        table.add_row(r.name, str(r.kind) if r.kind else "-",
                      f"[{_STYLE[r.status]}]{r.status.value}[/]", algos, r.reason or "")
    console().print(table)
    return 0
