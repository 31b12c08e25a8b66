"""Third-party drivers, installed the way a vendor's package would be.

A session-scoped fixture (`third_party_site`) pip-installs the three packages under examples/
into a throw-away target directory (not the project venv, so no other test's registry ever
sees them); tests put that directory on PYTHONPATH of a child interpreter, whose registry
then finds them through the ``ocfpy.drivers`` entry point group, exactly as after a real
`pip install`. In-process tests import the packages from the same directory.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.registry import DriverStatus, Registry

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PACKAGES = ["ocfpy-example-driver", "ocfpy-broken-driver", "ocfpy-faulty-driver"]


@pytest.fixture(scope="session")
def third_party_site():
    target = Path(tempfile.mkdtemp(prefix="ocfpy-drv-site-"))
    try:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
               str(target), *(str(EXAMPLES / p) for p in PACKAGES)]
        if importlib.util.find_spec("wheel") and importlib.util.find_spec("setuptools"):
            # the venv can build them itself (scripts/setup.sh installs wheel): no fetching
            # of a build backend per package, which costs tens of seconds on a busy machine
            cmd.insert(5, "--no-build-isolation")
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
        except subprocess.TimeoutExpired:
            pytest.skip("pip install of examples/ timed out (needs setuptools+wheel from an index)")
        if done.returncode != 0:
            if "No matching distribution" in done.stderr or "Could not find" in done.stderr:
                pytest.skip(f"pip cannot fetch the build backend: {done.stderr.strip()[-300:]}")
            pytest.fail(f"pip install of examples/ failed:\n{done.stderr[-2000:]}")
        yield target
    finally:
        shutil.rmtree(target, ignore_errors=True)


@pytest.fixture
def third_party_modules(third_party_site, monkeypatch):
    monkeypatch.syspath_prepend(str(third_party_site))
    import ocfpy_broken_driver
    import ocfpy_example_driver
    import ocfpy_faulty_driver

    return ocfpy_example_driver, ocfpy_broken_driver, ocfpy_faulty_driver


_LOAD = """
import json
from ocfpy.crypto.registry import Registry
print(json.dumps([r.as_dict() for r in Registry.load().records()]))
"""


def test_entry_points_admit_the_good_and_quarantine_the_broken(third_party_site):
    env = dict(os.environ, PYTHONPATH=str(third_party_site))
    done = subprocess.run([sys.executable, "-c", _LOAD], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    records = {r["name"]: r for r in json.loads(done.stdout)}
    example = records["example"]
    assert example["status"] == "active", example
    assert example["entry_point"] == "ocfpy_example_driver:ExampleDriver"
    assert set(example["algorithms"]) == {
        "hashsha256", "hashsha384", "hashsha512", "sha256", "sha384", "sha512",
        "prfsha256", "prfsha384", "prfsha512"}
    broken = records["broken"]
    assert broken["status"] == "quarantined", broken
    assert set(broken["quarantined"]) == {"hashsha256", "sha256"}
    assert broken["algorithms"] == []
    assert "known-answer" in broken["reason"]
    faulty = records["faulty"]  # inert without its switch
    assert faulty["status"] == "unavailable" and "OCFPY_FAULTY_FAIL_AFTER" in faulty["reason"]


def test_example_driver_computes_what_hashlib_does(third_party_modules):
    example, _, _ = third_party_modules
    d = Dispatcher(Registry.from_drivers([example.ExampleDriver()]))
    key = bytes(range(32))
    mac = d.open("sha256", key=key)
    assert mac.driver == "example"
    data = b"ocfpy third-party driver" * 3
    assert mac.compute(data) == hmac.new(key, data, "sha256").digest()[:16]
    mac.verify(data, hmac.new(key, data, "sha256").digest()[:16])
    assert d.open("hashsha384").digest(data) == hashlib.sha384(data).digest()
    prf = d.open("prfsha512", key=b"k" * 7)  # PRF keys of any length
    assert prf.prf(data) == hmac.new(b"k" * 7, data, "sha512").digest()


def test_broken_driver_never_serves(third_party_modules):
    example, broken, _ = third_party_modules
    registry = Registry.from_drivers([broken.BrokenDriver(), example.ExampleDriver()])
    assert registry.get("broken").status is DriverStatus.QUARANTINED
    # it claims the hardware class, yet sessions go to the admitted software driver
    assert Dispatcher(registry).open("hashsha256").driver == "example"


def _stream(session, key: bytes, count: int) -> None:
    for i in range(count):
        data = i.to_bytes(4, "big") * (1 + i % 50)
        assert session.compute(data) == hmac.new(key, data, "sha256").digest()[:16], i


def test_faulty_driver_fails_mid_stream_and_the_session_moves(third_party_modules):
    example, _, faulty = third_party_modules
    bad = faulty.FaultyDriver()
    bad.enabled, bad.fail_after = True, 25
    d = Dispatcher(Registry.from_drivers([bad, example.ExampleDriver()]))
    key = os.urandom(32)
    s = d.open("sha256", key=key)
    assert s.driver == "faulty"  # accelerated beats software
    _stream(s, key, 100)  # every output is checked against hmac
    assert s.driver == "example"
    assert s.migrations == 1 and s.errors == 1 and s.ops == 100
    assert bad.ops == 25
    assert d.open("sha256", key=key).driver == "example"  # new sessions avoid the failed one


def test_faulty_driver_gone_moves_every_session(third_party_modules):
    example, _, faulty = third_party_modules
    bad = faulty.FaultyDriver()
    bad.enabled, bad.fail_after, bad.mode = True, 10, "gone"
    registry = Registry.from_drivers([bad, example.ExampleDriver()])
    d = Dispatcher(registry)
    keys = [os.urandom(32) for _ in range(3)]
    sessions = [d.open("sha256", key=k) for k in keys]
    assert {s.driver for s in sessions} == {"faulty"}
    _stream(sessions[0], keys[0], 40)  # trips the simulated unplug at op 11
    assert registry.get("faulty").status is DriverStatus.GONE
    assert [s.driver for s in sessions] == ["example"] * 3
    for s, k in zip(sessions, keys, strict=True):
        _stream(s, k, 5)
    assert sum(s.migrations for s in sessions) == 3


def test_faulty_driver_env_switches(third_party_site):
    code = ("import ocfpy_faulty_driver as f; d = f.FaultyDriver(); "
            "print(d.enabled, d.fail_after, d.mode, int(d.kind))")
    env = dict(os.environ, PYTHONPATH=str(third_party_site), OCFPY_FAULTY_FAIL_AFTER="7",
               OCFPY_FAULTY_MODE="gone", OCFPY_FAULTY_KIND="hardware")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "7", "gone", "3"]
