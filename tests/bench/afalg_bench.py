"""af_alg vs openssl, per operation, side by side in one run (the VM lane runs it).

Both drivers are reached the way a consumer reaches them: a session opened by the
dispatcher with the backend forced. Rounds of about 0.1 s alternate between the two drivers
(af_alg, openssl, af_alg, ...) so that load from elsewhere on a shared host hits both alike;
we report per driver the best round (the intrinsic cost: contention only adds time) and the
median. Ratios are af_alg / openssl of the best rounds (above 1: the kernel path is slower).

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

from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.registry import DriverStatus, Registry

CASES = [
    ("aes256gcm16 seal", "aes256gcm16", 64),
    ("aes256gcm16 seal", "aes256gcm16", 1400),
    ("aes256gcm16 seal", "aes256gcm16", 16384),
    ("aes256gcm16 open", "aes256gcm16", 1400),
    ("sha256 (HMAC-SHA2-256-128)", "sha256", 1400),
    ("modp2048 shared secret", "modp2048", 256),
]
ROUND_S = 0.1
ROUNDS = 7


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


def _calibrate(fn) -> int:
    """Operations per round, so that a round lasts about ROUND_S."""
    n, elapsed = 1, 0.0
    while elapsed < ROUND_S / 4:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - t0
        n *= 2
    return max(1, int(n / 2 * ROUND_S / max(elapsed, 1e-9)))


def interleaved_us(fns: dict[str, object]) -> dict[str, tuple[float, float]]:
    """{name: (best, median) microseconds per op}, rounds alternating between the fns."""
    counts = {name: _calibrate(fn) for name, fn in fns.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(ROUNDS):
        for name, fn in fns.items():
            n = counts[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()  # type: ignore[operator]
            samples[name].append((time.perf_counter() - t0) / n * 1e6)
    return {name: (min(v), statistics.median(v)) for name, v in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    registry = Registry.load()
    for name in ("af_alg", "openssl"):
        r = registry.get(name)
        if r is None or r.status is not DriverStatus.ACTIVE:
            print(f"afalg_bench: {name} is not active here ({r and r.reason}); "
                  "run it in the VM lane: scripts/vm-lane.sh --bench", file=sys.stderr)
            return 77
    drivers = {name: Dispatcher(registry, backend=name) for name in ("af_alg", "openssl")}
    impl = registry.get("af_alg").admitted
    rows = []
    for label, keyword, size in CASES:
        fns = {}
        for name, d in drivers.items():
            _, seal, open_ = _operation(d, keyword, size)
            fns[name] = open_ if label.endswith("open") else seal
        times = interleaved_us(fns)
        rows.append({
            "operation": label, "bytes": size,
            "af_alg_us": round(times["af_alg"][0], 2), "openssl_us": round(times["openssl"][0], 2),
            "af_alg_median_us": round(times["af_alg"][1], 2),
            "openssl_median_us": round(times["openssl"][1], 2),
            "ratio": round(times["af_alg"][0] / times["openssl"][0], 1),
            "kernel_implementation": impl[keyword].implementation if keyword in impl else "",
        })
    result = {
        "kernel": platform.release(), "machine": platform.machine(),
        "python": platform.python_version(), "rows": rows,
        "load_average": os.getloadavg(),
        "note": "best and median of interleaved rounds; ratio = af_alg / openssl (best)",
    }
    load = ", ".join(f"{x:.1f}" for x in result["load_average"])
    md = [f"Kernel {result['kernel']} ({result['machine']}), Python {result['python']}, "
          f"guest load average {load}; per-operation time through dispatcher sessions, best "
          "(median) of interleaved rounds, one run.", "",
          "| operation | bytes | af_alg us/op | openssl us/op | af_alg / openssl | kernel implementation |",
          "| --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        md.append(f"| {r['operation']} | {r['bytes']} | {r['af_alg_us']} ({r['af_alg_median_us']}) "
                  f"| {r['openssl_us']} ({r['openssl_median_us']}) "
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
