"""The calibrated policy: ``crypto_backend = "calibrated"`` ranks drivers of one kind by what
`ocfpy bench crypto --save` measured (never software ahead of hardware), from the API, the
config file and the daemon's --check; and Dispatcher.explain, the "why" of `ocfpy sa list`.
Real drivers through real entry points (the ocfpy-testdrivers distribution, inert unless
OCFPY_TESTDRIVERS=1) next to OpenSSL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ocfpy.crypto.calibration import Calibration
from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.errors import BackendUnavailable
from ocfpy.crypto.registry import Registry
from ocfpy.iked.configfile import ConfigError, loads

pytest.importorskip("ocfpy_testdrivers", reason="ocfpy-testdrivers not installed: run scripts/setup.sh")

KEY128 = bytes(16) + b"salt"
# where scripts/setup.sh installs the test drivers' distribution (entry points included)
TESTDRIVERS = str(Path(__file__).resolve().parents[2] / ".testdrivers")
FAST, SLOW = "test_halfbad", "test_flaky"  # both hardware, both admitted for aes128gcm16


def _rates(fast: str, slow: str, software: float = 0.0) -> dict:
    rates = {fast: [[64, 900.0], [1400, 1000.0]], slow: [[64, 9.0], [1400, 10.0]]}
    if software:
        rates["openssl"] = [[64, software], [1400, software]]
    return {"aes128gcm16": rates}


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setenv("OCFPY_TESTDRIVERS", "1")
    return Registry.load()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """XDG_CONFIG_HOME where `bench crypto --save` writes by default."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    return tmp_path


def _save_default(home, rates) -> None:
    (home / "ocfpy").mkdir(exist_ok=True)
    (home / "ocfpy" / "calibration.json").write_text(json.dumps({"source": "t", "rates": rates}))


@pytest.mark.parametrize("fast,slow", [(FAST, SLOW), (SLOW, FAST)])
def test_calibrated_backend_reads_the_default_calibration(registry, home, fast, slow):
    # software measured 1000x faster still does not go ahead of hardware
    _save_default(home, _rates(fast, slow, software=1e6))
    d = Dispatcher(registry, backend="calibrated")
    assert d.policy == "calibrated" and d.backend is None and d.calibration is not None
    with d.open("aes128gcm16", KEY128) as s:
        assert s.driver == fast
    assert d.explain("aes128gcm16", fast) == "calibrated"
    assert d.explain("aes128gcm16", "openssl") == "migrated"  # never chosen while hardware is up
    # a per-session "calibrated" is the policy too, not a driver of that name
    with d.open("aes128gcm16", KEY128, backend="calibrated") as s:
        assert s.driver == fast


def test_calibrated_backend_without_a_calibration_is_refused_with_the_way_out(registry, home):
    with pytest.raises(BackendUnavailable, match="run `ocfpy bench crypto --save` first"):
        Dispatcher(registry, backend="calibrated")


def test_explain_names_each_reason(registry):
    d = Dispatcher(registry)
    # two hardware drivers of equal priority, no calibration: registration order decides
    first = d.driver_for("aes128gcm16")
    assert d.explain("aes128gcm16", first) == "priority"
    # the only hardware driver admitted for aes256gcm16 (test_halfbad's is quarantined)
    assert d.explain("aes256gcm16", "test_flaky") == "kind"
    assert d.explain("chacha20poly1305", "openssl") == "kind"
    forced = Dispatcher(registry, backend="openssl")
    assert forced.explain("aes128gcm16", "openssl") == "forced"
    assert forced.explain("aes128gcm16", "test_flaky") == "migrated"
    lax = Dispatcher(registry, backend="test_flaky", strict=False)
    assert lax.explain("chacha20poly1305", "openssl") == "fallback"


def test_config_calibrated_without_a_file_named_uses_and_checks_the_default(home):
    with pytest.raises(ConfigError) as exc:
        loads('[daemon]\ncrypto_backend = "calibrated"\n', "home.conf")
    assert exc.value.key == "daemon.calibration" and "ocfpy bench crypto --save" in str(exc.value)
    _save_default(home, _rates(FAST, SLOW))
    opts = loads('[daemon]\ncrypto_backend = "calibrated"\n', "home.conf").daemon
    assert opts.calibration == str(home / "ocfpy" / "calibration.json")
    assert opts.crypto_backend == "calibrated"


IKED_CONF = """\
[daemon]
crypto_backend = "calibrated"
dataplane = "none"
listen = ["127.0.0.1"]
[connections.t]
remote_addrs = ["127.0.0.2"]
proposals = ["aes128gcm16-prfsha256-x25519"]
[connections.t.children.net]
esp_proposals = ["aes128gcm16"]
[secrets.ike-t]
secret = "k"
"""


@pytest.mark.parametrize("fast,slow", [(FAST, SLOW), (SLOW, FAST)])
def test_the_daemon_opens_its_sessions_where_the_calibration_says(home, tmp_path, fast, slow):
    _save_default(home, _rates(fast, slow))
    conf = tmp_path / "iked.toml"
    conf.write_text(IKED_CONF)
    conf.chmod(0o600)
    out = subprocess.run([sys.executable, "-m", "ocfpy", "iked", "--config", str(conf),
                          "--check"], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, OCFPY_TESTDRIVERS="1", XDG_CONFIG_HOME=str(home),
                                  PYTHONPATH=TESTDRIVERS))
    assert out.returncode == 0, out.stderr
    assert f"calibration: {home / 'ocfpy' / 'calibration.json'} (t)" in out.stdout
    line = next(s for s in out.stdout.splitlines() if s.startswith("sessions open on: "))
    assert f"aes128gcm16 {fast}" in line


def test_calibration_rate_is_what_explain_compares():
    cal = Calibration()
    cal.add("aes128gcm16", "a", 1400, 5.0)
    assert cal.rate("aes128gcm16", "a", None) == 5.0 and cal.rate("aes128gcm16", "b", None) is None
