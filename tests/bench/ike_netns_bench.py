#!/usr/bin/env python3
"""Kept for old command lines: the IKE benchmark is now `ocfpy bench ike`
(ocfpy/bench/ike.py; docs/benchmarking.md). This maps the old options onto it:

    sudo .venv/bin/python tests/bench/ike_netns_bench.py [--concurrent 200] [--sequential 50]
        [--memory 10000] [--charon]

--concurrent is the CLI's --n; without --charon it measures ocfpy alone (--no-strongswan).
Output is the CLI's JSON.
"""

from __future__ import annotations

import argparse
import sys

from ocfpy.cli.main import main as ocfpy_main


def translate(argv: list[str]) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrent", default="200")
    p.add_argument("--sequential", default="50")
    p.add_argument("--memory", default="10000")
    p.add_argument("--charon", action="store_true")
    a = p.parse_args(argv)
    return (["bench", "ike", "--n", a.concurrent, "--sequential", a.sequential,
             "--memory", a.memory, "--json"] + ([] if a.charon else ["--no-strongswan"]))


if __name__ == "__main__":
    sys.exit(ocfpy_main(translate(sys.argv[1:])))
