"""Dispatch overhead as instruction counts (valgrind callgrind), which the load of a shared
machine does not move: per operation, a direct `cryptography` AESGCM call against a session's
seal/open and seal_batch/open_batch (AES-256-GCM, 1400 bytes, openssl driver, no self-tests).

    .venv/bin/python tests/bench/overhead_instructions.py [--n 20000]

Each variant runs in its own process under callgrind with N operations; a run with 0
operations gives the start-up cost, subtracted. Instructions are a proxy for the target's
measure (time, `ocfpy bench overhead`): an interpreter instruction and an AES-NI instruction do
not cost the same, and under valgrind OpenSSL takes a narrower AES-GCM code path (no AVX-512).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

VARIANTS = ("direct", "session", "batch", "direct_open", "session_open", "batch_open")


def child(mode: str, n: int) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from ocfpy.plugins.openssl import OpenSSLDriver

    from ocfpy.crypto.dispatcher import Dispatcher
    from ocfpy.crypto.registry import Registry

    key, salt, iv, data, aad = bytes(range(32)), b"salt", bytes(8), bytes(1400), b"SPI_SEQ_"
    aead = AESGCM(key)
    registry = Registry.from_drivers([OpenSSLDriver()], run_selftests=False)
    s = Dispatcher(registry).open("aes256gcm16", key + salt, backend="openssl")
    ct = aead.encrypt(salt + iv, data, aad)
    if mode == "direct":
        for _ in range(n):
            aead.encrypt(salt + iv, data, aad)
    elif mode == "session":
        for _ in range(n):
            s.seal(iv, data, aad)
    elif mode == "batch":
        items = [(iv, data, aad)] * 64
        for _ in range(n // 64):
            s.seal_batch(items)
    elif mode == "direct_open":
        for _ in range(n):
            aead.decrypt(salt + iv, ct, aad)
    elif mode == "session_open":
        for _ in range(n):
            s.open(iv, ct, aad)
    elif mode == "batch_open":
        items = [(iv, ct, aad)] * 64
        for _ in range(n // 64):
            s.open_batch(items)


def count(mode: str, n: int) -> int:
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                          sys.executable, __file__, "--child", mode, "--n", str(n)],
                         capture_output=True, text=True, check=True)
    return int(re.search(r"Collected : (\d+)", out.stderr).group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="operations per variant (a multiple of 64)")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.n)
        return 0
    base = count("direct", 0)
    per_op = {m: (count(m, args.n) - base) / args.n for m in VARIANTS}
    for m in VARIANTS:
        ref = per_op["direct_open" if m.endswith("open") else "direct"]
        print(f"{m:13} {per_op[m]:9,.0f} instructions/op  {per_op[m] / ref:.3f}x direct")
    return 0


if __name__ == "__main__":
    sys.exit(main())
