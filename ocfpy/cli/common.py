"""Helpers shared by CLI subcommands: console output and dispatcher construction."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ocfpy.crypto.dispatcher import AUTO, Dispatcher
from ocfpy.crypto.errors import BackendUnavailable
from ocfpy.crypto.registry import Registry


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--crypto-backend", "--backend", dest="backend", default=AUTO, metavar="NAME",
        help="force every crypto session onto one driver (auto, openssl, af_alg, or a driver "
        "name from `ocfpy drivers`); default: auto (hardware > accelerated > software)",
    )
    parser.add_argument(
        "--fallback", action="store_true",
        help="with a forced backend, let algorithms it cannot serve fall back to the next "
        "driver (logged and counted) instead of failing",
    )


def make_dispatcher(args: argparse.Namespace) -> Dispatcher:
    """A dispatcher for the CLI; a bad backend choice exits with the reason, no traceback."""
    try:
        return Dispatcher(Registry.load(), backend=getattr(args, "backend", AUTO),
                          strict=not getattr(args, "fallback", False))
    except BackendUnavailable as exc:
        fail(str(exc))
        raise  # unreachable


def fail(message: str, code: int = 2) -> None:
    print(f"ocfpy: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def console():
    from rich.console import Console

    return Console()
