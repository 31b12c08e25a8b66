"""Helpers shared by CLI subcommands: console output, dispatcher construction, and the option
names every command spells the same way (docs/cli.md lists them all)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ocfpy.crypto.dispatcher import AUTO, Dispatcher
from ocfpy.crypto.errors import BackendUnavailable
from ocfpy.crypto.registry import Registry


def build_dispatcher(*, backend: str = AUTO, strict: bool = True,
                     calibration: str | None = None) -> Dispatcher:
    """The dispatcher of a command or of `ocfpy iked`: ``backend`` forced (auto: none),
    ``calibration`` a path as ``--calibration`` takes it (``default``: where `ocfpy bench
    crypto --save` writes). Raises BackendUnavailable or ConfigError (a bad calibration)."""
    from ocfpy.iked.configfile import calibration_path, load_calibration

    cal = load_calibration(calibration_path(calibration)) if calibration else None
    return Dispatcher(Registry.load(), backend=backend, strict=strict, calibration=cal)


def make_dispatcher(**kwargs: Any) -> Dispatcher:
    """build_dispatcher for a command: a refusal exits with the reason, no traceback."""
    from ocfpy.iked.configfile import ConfigError

    try:
        return build_dispatcher(**kwargs)
    except ConfigError as exc:
        fail(f"--calibration: {exc}")
    except BackendUnavailable as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


def add_calibration_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--calibration", metavar="PATH",
        help=f"rank drivers of one kind by this `ocfpy bench crypto --save` file for {what} "
        "('default': the file --save writes by default); matters only where no backend is "
        "forced")


def deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Accept ``old`` as a hidden spelling of the option ``new`` (already added): same
    destination and behaviour, plus a note on stderr, so old command lines keep working
    while help and docs show one name per meaning."""
    target = next(a for a in parser._actions if new in a.option_strings)

    class _Alias(argparse.Action):
        def __call__(self, p, namespace, values, option_string=None):  # noqa: ANN001
            print(f"ocfpy: note: {old} is deprecated, use {new}", file=sys.stderr)
            target(p, namespace, values, new)

    parser.add_argument(old, dest=target.dest, nargs=target.nargs, type=target.type,
                        choices=target.choices, default=argparse.SUPPRESS,
                        metavar=target.metavar, help=argparse.SUPPRESS, action=_Alias)


def comma_list(text: str) -> list[str]:
    """``a,b`` -> ["a", "b"] (empty items dropped): for options that take a list."""
    return [item for item in (s.strip() for s in text.split(",")) if item]


def fail(message: str, code: int = 2) -> None:
    print(f"ocfpy: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def console():
    from rich.console import Console

    return Console()
