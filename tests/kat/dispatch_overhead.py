"""Dispatch overhead of a session against a direct `cryptography` call (AES-256-GCM seal).

Run from the repository root:  .venv/bin/python tests/kat/dispatch_overhead.py [--size 1400]

Prints per-operation times (the fastest of --rounds interleaved rounds, so that the shared
machine's noise hits both sides alike) and the ratios session/direct for a single seal, a
single open and a 64-packet seal_batch against a loop of direct calls. Target (performance.md):
single op at most 1.10x, batch at least as fast as direct calls.
"""

from __future__ import annotations

import argparse
import os
import timeit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1400)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--backend", default="openssl")
    args = parser.parse_args()

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from ocfpy.crypto.dispatcher import Dispatcher

    key, salt = os.urandom(32), os.urandom(4)
    iv, aad, pt = os.urandom(8), os.urandom(8), os.urandom(args.size)
    session = Dispatcher(backend=args.backend).open("aes256gcm16", key=key + salt)
    direct = AESGCM(key)
    encrypt, decrypt = direct.encrypt, direct.decrypt
    ct = session.seal(iv, pt, aad)
    assert ct == encrypt(salt + iv, pt, aad)
    batch = [(os.urandom(8), pt, aad) for _ in range(64)]

    def direct_loop():
        for i, p, a in batch:
            encrypt(salt + i, p, a)

    cases = {
        "direct seal": (lambda: encrypt(salt + iv, pt, aad), 1),
        "session seal": (lambda: session.seal(iv, pt, aad), 1),
        "direct open": (lambda: decrypt(salt + iv, ct, aad), 1),
        "session open": (lambda: session.open(iv, ct, aad), 1),
        "direct loop x64": (direct_loop, 64),
        "session seal_batch x64": (lambda: session.seal_batch(batch), 64),
    }
    best = {name: float("inf") for name in cases}
    for _ in range(args.rounds):
        for name, (fn, per) in cases.items():
            number = max(1, args.number // per)
            best[name] = min(best[name], timeit.timeit(fn, number=number) / (number * per))
    print(f"AES-256-GCM, {args.size}-byte packets, driver {session.driver}")
    for name, t in best.items():
        print(f"  {name:24s} {t * 1e9:8.0f} ns/op")
    print(f"  ratio seal   {best['session seal'] / best['direct seal']:.3f}")
    print(f"  ratio open   {best['session open'] / best['direct open']:.3f}")
    print(f"  ratio batch  {best['session seal_batch x64'] / best['direct loop x64']:.3f}"
          f"  (vs single direct seal {best['session seal_batch x64'] / best['direct seal']:.3f})")


if __name__ == "__main__":
    main()
