"""Asynchronous submission on the kernel: the af_alg driver's kernel AIO queue (one operation
socket per request in flight) and virtio-crypto's device queue through kernel_accel, checked
against OpenSSL; the depth benchmark (1 vs 8 vs 32) saved to the lane's results.

Runs in the VM lane (kernel marker from tests/kernel/conftest.py; `-k async` selects it).
"""

from __future__ import annotations

import json
import os

import pytest

from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.errors import AuthenticationError, InvalidInput
from tests.vm.guest import in_vm_lane, results_dir

KEY_GCM = os.urandom(36)
KEY_CBC = os.urandom(32)


def _seal_items(n: int, size: int):
    return [(i.to_bytes(8, "big"), os.urandom(size), os.urandom(8)) for i in range(n)]


@pytest.mark.parametrize("keyword,keylen", [("aes256gcm16", 36), ("chacha20poly1305", 36)])
def test_af_alg_aead_queue_matches_openssl_in_order_beyond_its_depth(registry, keyword, keylen):
    d = Dispatcher(registry)
    key = os.urandom(keylen)
    s = d.open(keyword, key, backend="af_alg")
    ref = d.open(keyword, key, backend="openssl")
    assert s.asynchronous and not ref.asynchronous
    items = _seal_items(100, 1400)  # 100 requests on a 32-deep queue: the rest wait their turn
    tickets = s.submit("seal", items, tags=list(range(100)))
    assert s.in_flight == 100
    done = s.drain()
    assert [c.ticket for c in done] == list(tickets) and [c.tag for c in done] == list(range(100))
    assert all(c.error is None for c in done)
    assert [c.result for c in done] == ref.seal_batch(items)
    assert s.ops == 100 and s.driver == "af_alg" and s.migrations == 0
    # and back: one forged tag fails that request only
    sealed = [c.result for c in done]
    sealed[17] = sealed[17][:-1] + bytes([sealed[17][-1] ^ 1])
    s.submit("open", [(iv, ct, aad) for (iv, _, aad), ct in zip(items, sealed, strict=True)])
    opened = s.drain()
    assert isinstance(opened[17].error, AuthenticationError)
    assert [c.result for i, c in enumerate(opened) if i != 17] == [
        pt for i, (_, pt, _) in enumerate(items) if i != 17]
    assert s.auth_failures == 1 and s.migrations == 0


def test_af_alg_cipher_queue_reports_bad_requests_per_request(registry):
    d = Dispatcher(registry)
    s = d.open("aes256", KEY_CBC, backend="af_alg")
    ref = d.open("aes256", KEY_CBC, backend="openssl")
    good = [(os.urandom(16), os.urandom(1408)) for _ in range(40)]
    items = good[:5] + [(os.urandom(16), os.urandom(15))] + good[5:] + [(os.urandom(16), b"")]
    s.submit("encrypt", items)
    done = s.drain()
    assert [c.ticket for c in done] == list(range(42))
    assert isinstance(done[5].error, InvalidInput) and done[-1].result == b""
    results = [c.result for i, c in enumerate(done) if i not in (5, 41)]
    assert results == ref.encrypt_batch(good)
    s.submit("decrypt", [(iv, ct) for (iv, _), ct in zip(good, results, strict=True)])
    assert [c.result for c in s.drain()] == [pt for _, pt in good]


def test_af_alg_removed_with_requests_in_flight_completes_on_openssl(registry):
    from ocfpy.crypto.registry import Registry

    own = Registry.load()  # this test removes af_alg: not from the shared registry
    d = Dispatcher(own, backend="af_alg", strict=False)
    s = d.open("aes256gcm16", KEY_GCM)
    ref = Dispatcher(own, backend="openssl").open("aes256gcm16", KEY_GCM)
    items = _seal_items(64, 1400)
    s.submit("seal", items[:40])
    own.remove("af_alg", "removed by the test with requests in flight")
    s.submit("seal", items[40:])
    done = s.drain()
    assert [c.ticket for c in done] == list(range(64))
    assert [c.result for c in done] == ref.seal_batch(items)
    assert s.driver == "openssl" and s.migrations == 1


def _virtio_driver(registry) -> str:
    if not in_vm_lane():
        pytest.skip("needs the VM lane's virtio-crypto device")
    names = [r.name for r in registry.active() if r.name.startswith("virtio_crypto@")]
    if not names:
        pytest.skip("no virtio-crypto device present (already unplugged?)")
    return names[0]


def test_virtio_crypto_queue_matches_openssl(registry):
    name = _virtio_driver(registry)
    d = Dispatcher(registry)
    s = d.open("aes256", KEY_CBC, backend=name)
    ref = d.open("aes256", KEY_CBC, backend="openssl")
    assert s.asynchronous
    items = [(os.urandom(16), os.urandom(1408)) for _ in range(80)]
    s.submit("encrypt", items)
    done = s.drain()
    assert [c.ticket for c in done] == list(range(80))
    assert [c.result for c in done] == ref.encrypt_batch(items)
    s.submit("decrypt", [(iv, c.result) for (iv, _), c in zip(items, done, strict=True)])
    assert [c.result for c in s.drain()] == [pt for _, pt in items]
    assert s.driver == name and s.migrations == 0
    s.close()


def test_depth_benchmark(registry):
    """Depth 1 vs 8 vs 32, AES-GCM and AES-CBC at 64/1400/9000 bytes, saved as
    async-depth.json; asserts only that every driver served every row asynchronously where
    it claims to (the figures themselves go to docs/performance.md)."""
    from ocfpy.bench.crypto import async_depth_table

    drivers = ["openssl", "af_alg"] + [r.name for r in registry.active()
                                       if r.name.startswith("virtio_crypto@")]
    d = Dispatcher(registry)
    rows = async_depth_table(d, drivers, ["aes256gcm16", "aes256"], [64, 1400, 9000],
                             [1, 8, 32], duration=1.0, rounds=3)
    assert {r["driver"] for r in rows} >= {"openssl", "af_alg"}
    assert all(r["asynchronous"] == (r["driver"] != "openssl") for r in rows)
    out = results_dir()
    report = {"kernel": os.uname().release, "results": rows}
    if out is not None:
        (out / "async-depth.json").write_text(json.dumps(report, indent=1))
    for r in rows:
        print(f"{r['algorithm']:12} {r['driver']:28} {r['size']:5} depth {r['depth']:2}: "
              f"{r['ops_per_s']:10,.0f} ops/s  {r['vs_depth1']:.2f}x")
