"""The `ocfpy` command. Each subcommand lives in its own module, ocfpy/cli/<name>.py, which
defines ``register(subparsers)``; the module's parser sets ``func`` to a callable taking the
parsed arguments and returning an exit code."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Order of appearance in `ocfpy --help`. A module that is absent is simply not offered.
SUBCOMMANDS = ["drivers", "algorithms", "devices", "bench", "iked", "sa", "certs", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocfpy",
        description="An OCF-style crypto framework with an IKEv2 daemon and an ESP dataplane. "
        "Drivers (OpenSSL, the kernel crypto API, detected accelerators) serve crypto sessions; "
        "the dispatcher picks one per session and migrates sessions when a driver fails.",
        epilog="Run `ocfpy COMMAND --help` for a command's options. Docs: docs/ in the source tree.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v info, -vv debug); also accepted after the command")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"ocfpy.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"ocfpy.cli.{name}":
                continue
            raise
        module.register(sub)
    _verbose_everywhere(parser)
    return parser


def _version() -> str:
    from ocfpy import __version__  # the one definition (pyproject reads it too)

    return __version__


def _verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """`ocfpy sa list -v` as well as `ocfpy -v sa list`: every (sub)command parser takes -v.
    Its count goes to its own dest, because argparse copies a subcommand's namespace over the
    parent's and would reset the count given before the command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                if not any(o in child._option_string_actions for o in ("-v", "--verbose")):
                    child.add_argument("-v", "--verbose", action="count",
                                       dest="verbose_after", default=argparse.SUPPRESS,
                                       help="log more (-v info, -vv debug)")
                _verbose_everywhere(child)


def verbosity(args: argparse.Namespace) -> int:
    """-v counted wherever it was given."""
    return getattr(args, "verbose", 0) + getattr(args, "verbose_after", 0)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose = verbosity(args)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
