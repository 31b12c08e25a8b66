#!/usr/bin/env python3
"""Kept for old command lines: the ESP benchmark is now `ocfpy bench esp`
(ocfpy/bench/esp.py; docs/benchmarking.md). This maps the old options onto it:

    sudo .venv/bin/python tests/bench/esp_bench.py [--esp P] [--encap] [--seconds 5] [--runs 3]
        [--crypto-backend openssl] [--mtu 1400] [--gso BYTES] [--strongswan] [--json]

Differences: without --encap this script asked for raw ESP (the CLI's default is ESP in UDP
4500, like libipsec), and without --strongswan it measured ocfpy alone.
"""

from __future__ import annotations

import argparse
import sys

from ocfpy.cli.main import main as ocfpy_main


def translate(argv: list[str]) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--esp", default="aes128gcm16")
    p.add_argument("--encap", action="store_true")
    p.add_argument("--seconds", default="5")
    p.add_argument("--runs", default="3")
    p.add_argument("--crypto-backend", default="openssl")
    p.add_argument("--mtu", default="1400")
    p.add_argument("--gso", default="0")
    p.add_argument("--strongswan", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    out = ["bench", "esp", "--esp-proposal", a.esp, "--duration", a.seconds, "--rounds", a.runs,
           "--crypto-backend", a.crypto_backend, "--mtu", a.mtu, "--gso", a.gso]
    out += [] if a.encap else ["--raw-esp"]
    out += [] if a.strongswan else ["--no-strongswan"]
    out += ["--json"] if a.json else []
    return out


if __name__ == "__main__":
    sys.exit(ocfpy_main(translate(sys.argv[1:])))
