"""`ocfpy bench async`: throughput at queue depths through the asynchronous contract, its
table and JSON (the VM lane measures af_alg and virtio-crypto; here OpenSSL and a queueing
driver)."""

from __future__ import annotations

import json
import subprocess
import sys

from ocfpy.bench.crypto import async_depth_table
from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.registry import Registry
from tests.unit.test_async_submit import QueueDriver  # the contract test's queueing driver


def test_depth_rows_and_ratios_on_a_queueing_and_a_synchronous_driver():
    registry = Registry.load()
    driver = QueueDriver()
    registry.add(driver)
    rows = async_depth_table(Dispatcher(registry), ["test_queue", "openssl", "absent"],
                             ["aes256gcm16"], [64], [1, 8], duration=0.02, rounds=1)
    assert [(r["driver"], r["depth"]) for r in rows] == [
        ("test_queue", 1), ("test_queue", 8), ("openssl", 1), ("openssl", 8)]
    assert [r["asynchronous"] for r in rows] == [True, True, False, False]
    assert all(r["ops_per_s"] > 0 and r["size"] == 64 for r in rows)
    assert rows[0]["vs_depth1"] == rows[2]["vs_depth1"] == 1.0
    # every request the bench submitted came back through the driver's queue
    assert driver.completed == driver.submitted > 0


def test_cli_json():
    out = subprocess.run([sys.executable, "-m", "ocfpy", "bench", "async", "--drivers",
                          "openssl", "--algorithms", "aes256", "--sizes", "64,1400",
                          "--depths", "1,4", "--duration", "0.02", "--rounds", "1", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["results"]
    # AES-CBC takes whole blocks: 1400 is measured as 1392
    assert [(r["size"], r["depth"]) for r in rows] == [(64, 1), (64, 4), (1392, 1), (1392, 4)]
    assert {r["algorithm"] for r in rows} == {"aes256"}
