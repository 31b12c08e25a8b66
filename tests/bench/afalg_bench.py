"""af_alg vs openssl, per operation, side by side in one run (the VM lane runs it).

Both drivers are reached the way a consumer reaches them: a session opened by the
dispatcher with the backend forced. Each figure is the median of 5 timed rounds; each round
runs enough operations to last about 0.2 s. Ratios are af_alg time / openssl time
(above 1: the kernel path is slower).

    .venv/bin/python tests/bench/afalg_bench.py [--out DIR]   # writes afalg_bench.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from ocfpy.dispatcher import Dispatcher
from ocfpy.registry import Registry, Status

CASES = [
    ("aes256gcm16 seal", "aes256gcm16", 64),
    ("aes256gcm16 seal", "aes256gcm16", 1400),
    ("aes256gcm16 seal", "aes256gcm16", 16384),
    ("aes256gcm16 open", "aes256gcm16", 1400),
    ("sha256 (HMAC-SHA2-256-128)", "sha256", 1400),
    ("modp2048 shared secret", "modp2048", 256),
]
ROUND_S = 0.2
ROUNDS = 5


def _operation(d: Dispatcher, keyword: str, size: int):
    payload = os.urandom(size)
    if keyword.startswith("aes") and "gcm" in keyword:
        s = d.open(keyword, key=os.urandom(36))
        iv, aad = os.urandom(8), os.urandom(8)
        ct = s.seal(iv, payload, aad)
        return s, (lambda: s.seal(iv, payload, aad)), (lambda: s.open(iv, ct, aad))
    if keyword == "sha256":
        s = d.open(keyword, key=os.urandom(32))
        return s, (lambda: s.compute(payload)), None
    if keyword.startswith("modp"):
        s = d.open(keyword)
        peer = d.open(keyword).public_value()
        s.public_value()
        return s, (lambda: s.shared_secret(peer)), None
    raise ValueError(keyword)


def per_op_us(fn) -> float:
    n, elapsed = 1, 0.0
    while elapsed < ROUND_S / 4:  # find an n that fills a round
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - t0
        n *= 2
    n = max(1, int(n * ROUND_S / max(elapsed, 1e-9) / 2))
    samples = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    registry = Registry.load()
    for name in ("af_alg", "openssl"):
        r = registry.get(name)
        if r is None or r.status is not Status.ACTIVE:
            print(f"afalg_bench: {name} is not active here ({r and r.reason}); "
                  "run it in the VM lane: scripts/vm-lane.sh --bench", file=sys.stderr)
            return 77
    drivers = {name: Dispatcher(registry, backend=name) for name in ("af_alg", "openssl")}
    impl = registry.get("af_alg").admitted
    rows = []
    for label, keyword, size in CASES:
        times = {}
        for name, d in drivers.items():
            _, seal, open_ = _operation(d, keyword, size)
            fn = open_ if label.endswith("open") else seal
            times[name] = per_op_us(fn)
        rows.append({
            "operation": label, "bytes": size,
            "af_alg_us": round(times["af_alg"], 2), "openssl_us": round(times["openssl"], 2),
            "ratio": round(times["af_alg"] / times["openssl"], 1),
            "kernel_implementation": impl[keyword].implementation if keyword in impl else "",
        })
    result = {
        "kernel": platform.release(), "machine": platform.machine(),
        "python": platform.python_version(), "rows": rows,
        "note": "per-op medians; ratio = af_alg / openssl; measured side by side in one run",
    }
    md = [f"Kernel {result['kernel']} ({result['machine']}), Python {result['python']}; "
          "per-operation medians through dispatcher sessions, one run.", "",
          "| operation | bytes | af_alg us/op | openssl us/op | af_alg / openssl | kernel implementation |",
          "| --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        md.append(f"| {r['operation']} | {r['bytes']} | {r['af_alg_us']} | {r['openssl_us']} "
                  f"| {r['ratio']}x | {r['kernel_implementation']} |")
    text = "\n".join(md)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "afalg_bench.json").write_text(json.dumps(result, indent=2))
        (args.out / "afalg_bench.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
