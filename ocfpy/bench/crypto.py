"""Crypto benchmarks: every driver x algorithm x size, single-op and batch paths.

Each measurement runs a warm-up, then ``rounds`` rounds of about ``duration`` seconds each, and
reports the median and the spread (min..max of the rounds): this machine is shared and noisy,
so the figures that matter are ratios taken side by side in one run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from ocfpy.crypto.catalogue import Primitive, Transform
from ocfpy.crypto.catalogue import get as get_transform
from ocfpy.crypto.dispatcher import Dispatcher

DEFAULT_ALGORITHMS = [
    "aes128gcm16", "aes256gcm16", "chacha20poly1305", "aes256", "aes128ctr",
    "sha256", "sha1", "prfsha256", "hashsha256", "x25519", "ecp256", "modp2048",
]
DEFAULT_SIZES = [64, 256, 1400, 9000, 16384]
BATCH = 64


@dataclass
class Result:
    driver: str
    algorithm: str
    path: str  # "single" | "batch" | "exchange"
    size: int  # bytes per op (0 for key exchange)
    ops_per_s: float
    mb_per_s: float
    spread: tuple[float, float]  # min, max ops/s over rounds
    rounds: int
    fastest: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Plan:
    drivers: list[str]
    algorithms: list[Transform]
    sizes: list[int]
    duration: float = 0.2
    rounds: int = 3
    batch: bool = True
    cases: list[tuple[str, Transform, str, int]] = field(default_factory=list)

    def build(self, dispatcher: Dispatcher) -> None:
        for t in self.algorithms:
            serving = {r.name for r in dispatcher.candidates(t)}
            for drv in self.drivers:
                if drv not in serving:
                    continue
                if t.primitive is Primitive.KE:
                    self.cases.append((drv, t, "exchange", 0))
                    continue
                for size in self.sizes:
                    self.cases.append((drv, t, "single", size))
                    if self.batch and t.primitive in (Primitive.AEAD, Primitive.CIPHER, Primitive.INTEG):
                        self.cases.append((drv, t, "batch", size))


def _keymat(t: Transform) -> bytes | None:
    if t.primitive is Primitive.KE:
        return None
    return bytes((i * 7 + 3) & 0xFF for i in range(t.keymat_size or t.key_size or 16))


def _size_for(t: Transform, size: int) -> int:
    if t.primitive is Primitive.CIPHER and t.block_size > 1:
        return max(t.block_size, size - size % t.block_size)
    return size


def make_op(dispatcher: Dispatcher, driver: str, t: Transform, path: str, size: int
            ) -> tuple[Callable[[], object], int]:
    """A zero-argument callable doing one unit of work, and the ops it counts as."""
    if t.primitive is Primitive.KE:
        peer = dispatcher.open(t, backend=driver).public_value()

        def exchange():
            s = dispatcher.open(t, backend=driver)
            s.public_value()
            s.shared_secret(peer)
            s.close()
        return exchange, 1
    s = dispatcher.open(t, _keymat(t), backend=driver)
    data = bytes(_size_for(t, size))
    iv = bytes(t.iv_size)
    if t.primitive is Primitive.AEAD:
        if path == "batch":
            items = [(iv, data, b"12345678")] * BATCH
            return (lambda: s.seal_batch(items)), BATCH
        return (lambda: s.seal(iv, data, b"12345678")), 1
    if t.primitive is Primitive.CIPHER:
        if path == "batch":
            citems = [(iv, data)] * BATCH
            return (lambda: s.encrypt_batch(citems)), BATCH
        return (lambda: s.encrypt(iv, data)), 1
    if t.primitive is Primitive.INTEG:
        if path == "batch":
            mitems = [data] * BATCH
            return (lambda: s.compute_batch(mitems)), BATCH
        return (lambda: s.compute(data)), 1
    if t.primitive is Primitive.PRF:
        return (lambda: s.prf(data)), 1
    if t.primitive is Primitive.HASH:
        return (lambda: s.digest(data)), 1
    raise ValueError(f"cannot benchmark {t}")


def measure(op: Callable[[], object], ops_per_call: int, duration: float, rounds: int
            ) -> tuple[float, tuple[float, float]]:
    """Median ops/s over rounds, with (min, max)."""
    # warm-up and calibration of calls per timing check
    calls = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(calls):
            op()
        dt = time.perf_counter() - t0
        if dt > duration / 20 or calls > 1 << 20:
            break
        calls *= 2
    rates = []
    for _ in range(rounds):
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + duration
        while True:
            for _ in range(calls):
                op()
            n += calls
            now = time.perf_counter()
            if now >= deadline:
                break
        rates.append(n * ops_per_call / (now - t0))
    return statistics.median(rates), (min(rates), max(rates))


def run(dispatcher: Dispatcher, plan: Plan,
        progress: Callable[[str], None] | None = None) -> list[Result]:
    if not plan.cases:
        plan.build(dispatcher)
    results = []
    for driver, t, path, size in plan.cases:
        if progress:
            progress(f"{driver} {t.keyword} {path} {size or ''}".strip())
        op, per_call = make_op(dispatcher, driver, t, path, size)
        rate, spread = measure(op, per_call, plan.duration, plan.rounds)
        nbytes = _size_for(t, size) if size else 0
        results.append(Result(driver, t.keyword, path, nbytes, rate, rate * nbytes / 1e6,
                              spread, plan.rounds))
    mark_fastest(results)
    return results


def mark_fastest(results: Iterable[Result]) -> None:
    best: dict[tuple[str, str, int], Result] = {}
    for r in results:
        key = (r.algorithm, r.path, r.size)
        if key not in best or r.ops_per_s > best[key].ops_per_s:
            best[key] = r
    for r in best.values():
        r.fastest = True


def resolve_algorithms(names: Iterable[str]) -> list[Transform]:
    return [get_transform(n) for n in names]


# -- dispatch overhead: a session against a direct `cryptography` call -----------------------
def dispatch_overhead(dispatcher: Dispatcher, size: int = 1400, rounds: int = 7,
                      duration: float = 0.3, driver: str = "openssl") -> dict:
    """Per-op time of AES-256-GCM seal: direct AESGCM vs session.seal vs session.seal_batch.

    The three variants are measured interleaved, round by round, in one process, so that
    machine noise hits them alike; the ratios are medians of per-round ratios.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = bytes(range(32))
    salt = b"salt"
    iv = bytes(8)
    data = bytes(size)
    aad = b"SPI_SEQ_"
    aead = AESGCM(key)
    session = dispatcher.open("aes256gcm16", key + salt, backend=driver)
    items = [(iv, data, aad)] * BATCH

    def direct():
        aead.encrypt(salt + iv, data, aad)

    def single():
        session.seal(iv, data, aad)

    def batch():
        session.seal_batch(items)

    # the receive side: open (verify and decrypt) against AESGCM.decrypt
    ct = aead.encrypt(salt + iv, data, aad)
    open_items = [(iv, ct, aad)] * BATCH

    def direct_open():
        aead.decrypt(salt + iv, ct, aad)

    def single_open():
        session.open(iv, ct, aad)

    def batch_open():
        session.open_batch(open_items)

    variants = (("direct", direct, 1), ("session", single, 1), ("batch", batch, BATCH),
                ("direct_open", direct_open, 1), ("session_open", single_open, 1),
                ("batch_open", batch_open, BATCH))
    per_op: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for _ in range(rounds):
        for name, fn, k in variants:
            rate, _ = measure(fn, k, duration, 1)
            per_op[name].append(1e6 / rate)

    def ratio(num: str, den: str) -> float:
        return statistics.median(a / b for a, b in zip(per_op[num], per_op[den], strict=True))
    return {
        "algorithm": "aes256gcm16", "size": size, "driver": driver, "rounds": rounds,
        "us_per_op": {k: statistics.median(v) for k, v in per_op.items()},
        "ratio_session_vs_direct": ratio("session", "direct"),
        "ratio_batch_vs_direct": ratio("batch", "direct"),
        "ratio_session_open_vs_direct": ratio("session_open", "direct_open"),
        "ratio_batch_open_vs_direct": ratio("batch_open", "direct_open"),
        "target_session": 1.10, "target_batch": 1.0,
    }


# -- asynchronous submission: throughput at a queue depth ---------------------------------------
DEFAULT_DEPTHS = [1, 8, 32]


def async_depth(dispatcher: Dispatcher, driver: str, algorithm: str, size: int, depth: int,
                duration: float = 0.3, rounds: int = 3) -> dict:
    """ops/s with ``depth`` requests kept in flight through Session.submit/collect (OCF's
    crypto_dispatch model): fill the queue, then for every completion collected submit one
    more. At depth 1 this is one request at a time through the same path, so the ratio
    depth N / depth 1 is what queueing buys on this driver (a synchronous driver: about 1)."""
    t = get_transform(algorithm)
    s = dispatcher.open(t, _keymat(t), backend=driver)
    n = _size_for(t, size)
    data = bytes(n)
    if t.primitive is Primitive.AEAD:
        method, item = "seal", (bytes(t.iv_size), data, b"12345678")
    elif t.primitive is Primitive.CIPHER:
        method, item = "encrypt", (bytes(t.iv_size), data)
    else:
        raise ValueError(f"{algorithm}: only AEAD and cipher requests are submitted")
    refill = [item] * depth
    try:
        def run_for(seconds: float) -> float:
            done = 0
            s.submit(method, refill)
            t0 = time.perf_counter()
            deadline = t0 + seconds
            while True:
                got = s.collect(True)
                done += len(got)
                if time.perf_counter() >= deadline:
                    break
                s.submit(method, refill[:len(got)])
            elapsed = time.perf_counter() - t0
            s.drain()
            return done / elapsed

        run_for(duration / 4)  # warm-up: sockets accepted, buffers grown
        rates = [run_for(duration) for _ in range(rounds)]
        return {"driver": driver, "algorithm": t.keyword, "size": n, "depth": depth,
                "asynchronous": s.asynchronous, "ops_per_s": statistics.median(rates),
                "spread": (min(rates), max(rates)), "mb_per_s": statistics.median(rates) * n / 1e6}
    finally:
        s.close()


def async_depth_table(dispatcher: Dispatcher, drivers: Iterable[str], algorithms: Iterable[str],
                      sizes: Iterable[int], depths: Iterable[int] = DEFAULT_DEPTHS,
                      duration: float = 0.3, rounds: int = 3) -> list[dict]:
    """async_depth for every serving driver x algorithm x size x depth, with each row's ratio
    to depth 1 (``vs_depth1``) of the same driver, algorithm and size."""
    rows = []
    depths = list(depths)
    for algorithm in algorithms:
        serving = {r.name for r in dispatcher.candidates(algorithm)}
        for driver in drivers:
            if driver not in serving:
                continue
            for size in sizes:
                base = None
                for depth in depths:
                    row = async_depth(dispatcher, driver, algorithm, size, depth, duration,
                                      rounds)
                    if depth == 1:
                        base = row["ops_per_s"]
                    row["vs_depth1"] = row["ops_per_s"] / base if base else None
                    rows.append(row)
    return rows
