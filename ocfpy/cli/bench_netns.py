"""The one way to declare a `ocfpy bench` subcommand that measures in network namespaces
against strongSwan (`bench ike`, `bench esp`): each declares a :class:`NetnsBench`; this
module gives them their shared options, refusals, progress bar, JSON and exit codes."""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ocfpy.cli.common import console, deprecated_alias, fail, print_json

SETUP_HINT = "install the lanes' packages with `bash scripts/setup.sh`"
Step = Callable[[str], None]


@dataclass(frozen=True)
class NetnsBench:
    name: str
    help: str
    description: str
    add_options: Callable[[argparse.ArgumentParser], None]  # the benchmark's own options
    check: Callable[[argparse.Namespace], str | None]  # its own refusals (numbers, ranges)
    steps: Callable[[argparse.Namespace], int]  # progress bar length
    measure: Callable[[argparse.Namespace, Step], Any]  # a report with as_dict()
    show: Callable[[Any, Any], None]  # (console, report): the human-readable output
    errors: Callable[[], tuple[type[Exception], ...]]  # what a failed measurement raises
    # (a callable: the measuring modules are imported only when a benchmark runs)
    tools: tuple[str, ...] = ()  # programs it needs, by name
    needs_tun: bool = False
    command: Callable[[argparse.Namespace], dict[str, Any]] | None = None  # echoed in JSON
    deprecated: dict[str, str] = field(default_factory=dict)  # old spelling -> new


def register(bsub: argparse._SubParsersAction, bench: NetnsBench) -> None:
    p = bsub.add_parser(bench.name, help=bench.help, description=bench.description)
    bench.add_options(p)
    p.add_argument("--no-strongswan", action="store_true",
                   help="ocfpy only (no strongSwan needed; no ratios)")
    p.add_argument("--profile", metavar="DIR",
                   help="cProfile ocfpy's processes into DIR and print their top entries")
    p.add_argument("--workdir", metavar="DIR",
                   help="keep configs and daemon logs here (default: a temporary folder)")
    p.add_argument("--prefix", default="obn",
                   help="name prefix of the namespaces, links and temp folders (default obn; "
                   "at most 5 characters, letters and digits)")
    p.add_argument("--json", action="store_true", help="print JSON results")
    for old, new in bench.deprecated.items():
        deprecated_alias(p, old, new)
    p.set_defaults(func=lambda args: run(bench, args))


def preflight(bench: NetnsBench, args: argparse.Namespace) -> str | None:
    """Why the benchmark cannot run as asked, with what to do about it; None when it can."""
    if not (args.prefix.isalnum() and args.prefix.isascii() and 1 <= len(args.prefix) <= 5):
        return f"--prefix {args.prefix!r}: 1 to 5 letters or digits (interface names are short)"
    if os.geteuid() != 0:
        return (f"`ocfpy bench {bench.name}` needs root (network namespaces"
                f"{', TUN devices' if bench.needs_tun else ''}): run it with sudo")
    why = bench.check(args)
    if why:
        return why
    for tool in bench.tools:
        if shutil.which(tool) is None:
            return f"{tool} is missing: {SETUP_HINT} (lane net), or apt-get install {tool}"
    if bench.needs_tun and not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing: this kernel or container has no TUN support"
    if not args.no_strongswan:
        from ocfpy.lab.charon import unavailable_reason

        why = unavailable_reason()
        if why:
            return (f"strongSwan's charon cannot run: {why}; {SETUP_HINT} (lane interop), "
                    "or pass --no-strongswan for ocfpy's figures alone")
    return None


def run(bench: NetnsBench, args: argparse.Namespace) -> int:
    why = preflight(bench, args)
    if why:
        fail(why)
    from rich.progress import Progress

    from ocfpy.cli.bench import machine

    con = console()
    with Progress(console=con, transient=True, disable=args.json) as progress:
        task = progress.add_task("starting", total=bench.steps(args))

        def step(label: str) -> None:
            progress.update(task, advance=1, description=label)
        try:
            report = bench.measure(args, step)
        except bench.errors() as exc:
            fail(f"bench {bench.name}: {exc}", 1)
    result = report.as_dict()
    result["machine"] = machine()
    if bench.command is not None:
        result["command"] = bench.command(args)
    if args.json:
        print_json(result)
        return 0
    bench.show(con, report)
    return 0
