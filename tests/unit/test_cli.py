"""The `ocfpy` command as a user runs it (a real subprocess of the installed console script)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from ocfpy.crypto.catalogue import crypto_transforms
from ocfpy.crypto.signatures import all_schemes

OCFPY = shutil.which("ocfpy", path=os.path.dirname(sys.executable)) or shutil.which("ocfpy")


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    assert OCFPY, "the ocfpy console script is not installed in this environment"
    e = dict(os.environ)
    e.pop("OCFPY_TESTDRIVERS", None)
    e.update(env or {})
    return subprocess.run([OCFPY, *args], capture_output=True, text=True, timeout=120, env=e)


def test_drivers_json_lists_openssl_active_with_every_catalogue_algorithm():
    out = run("drivers", "--json")
    assert out.returncode == 0, out.stderr
    drivers = {d["name"]: d for d in json.loads(out.stdout)}
    for d in drivers.values():
        assert {"name", "kind", "status", "reason", "algorithms"} <= d.keys()
    openssl = drivers["openssl"]
    assert openssl["status"] == "active" and openssl["kind"] == "software"
    # every catalogue transform, and every signature scheme (ocfpy.crypto.signatures)
    assert set(openssl["algorithms"]) == ({t.keyword for t in crypto_transforms()}
                                          | {s.keyword for s in all_schemes()})
    assert openssl["quarantined"] == {}


def test_drivers_table_shows_unavailable_reasons():
    out = run("drivers")
    assert out.returncode == 0, out.stderr
    assert "openssl" in out.stdout and "active" in out.stdout


def test_help_lists_the_subcommands():
    out = run("--help")
    assert out.returncode == 0
    for name in ("drivers", "algorithms", "bench"):
        assert name in out.stdout


def test_unknown_algorithm_is_a_clear_error_not_a_traceback():
    out = run("bench", "crypto", "--algorithms", "aes129gcm16", "--duration", "0.01")
    assert out.returncode == 2
    assert "unknown algorithm 'aes129gcm16'" in out.stderr
    assert "Traceback" not in out.stderr


def test_inactive_driver_is_named_with_what_is_active():
    out = run("bench", "crypto", "--drivers", "nonesuch", "--duration", "0.01")
    assert out.returncode == 2
    assert "'nonesuch' is not active" in out.stderr and "openssl" in out.stderr


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_bench_crypto_small_run(fmt, tmp_path):
    args = ["bench", "crypto", "--drivers", "openssl", "--algorithms", "aes128gcm16,x25519",
            "--sizes", "64", "--duration", "0.02", "--rounds", "1", "--save", str(tmp_path / "cal.json")]
    out = run(*args, *(["--json"] if fmt == "json" else []))
    assert out.returncode == 0, out.stderr
    if fmt == "json":
        results = json.loads(out.stdout)["results"]
        assert {(r["algorithm"], r["path"]) for r in results} == {
            ("aes128gcm16", "single"), ("aes128gcm16", "batch"), ("x25519", "exchange")}
        assert all(r["ops_per_s"] > 0 and r["fastest"] for r in results)
    else:
        assert "aes128gcm16" in out.stdout and "openssl*" in out.stdout
    cal = json.loads((tmp_path / "cal.json").read_text())
    assert cal["rates"]["aes128gcm16"]["openssl"][0][0] == 64


# -- a calibration reaches the daemon's dispatcher ---------------------------------------------
TESTDRIVERS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), ".testdrivers")
# Two drivers of one kind (hardware) that both serve aes128gcm16: only a calibration orders
# them by speed (tests/fixtures/ocfpy-testdrivers; inert unless OCFPY_TESTDRIVERS=1).
TWO_OF_A_KIND = ("test_flaky", "test_halfbad")
IKED_CONF = """\
[daemon]
crypto_backend = "auto"
dataplane = "none"
listen = ["127.0.0.1"]
{calibration}
[connections.t]
remote_addrs = ["127.0.0.2"]
proposals = ["aes128gcm16-prfsha256-x25519"]
[connections.t.children.net]
esp_proposals = ["aes128gcm16"]
[secrets.ike-t]
secret = "k"
"""


def _rank(path, fast: str, slow: str) -> None:
    path.write_text(json.dumps({"source": "test", "rates": {
        "aes128gcm16": {fast: [[64, 900.0], [1400, 1000.0]], slow: [[64, 9.0], [1400, 10.0]]}}}))


def _sessions_open_on(out: subprocess.CompletedProcess) -> dict[str, str]:
    assert out.returncode == 0, out.stderr
    line = next(s for s in out.stdout.splitlines() if s.startswith("sessions open on: "))
    return dict(item.split(" ") for item in line.removeprefix("sessions open on: ").split(", "))


@pytest.mark.skipif(not os.path.isdir(TESTDRIVERS), reason="run scripts/setup.sh (test drivers)")
@pytest.mark.parametrize("fast,slow", [TWO_OF_A_KIND, TWO_OF_A_KIND[::-1]])
def test_a_calibration_decides_where_the_daemons_sessions_open(tmp_path, fast, slow):
    env = {"OCFPY_TESTDRIVERS": "1", "PYTHONPATH": TESTDRIVERS}
    _rank(tmp_path / "cal.json", fast, slow)
    conf = tmp_path / "iked.toml"
    conf.write_text(IKED_CONF.format(calibration='calibration = "cal.json"'))
    out = run("iked", "--config", str(conf), "--check", env=env)
    assert _sessions_open_on(out)["aes128gcm16"] == fast
    assert f"calibration: {tmp_path / 'cal.json'} (test)" in out.stdout
    # --calibration overrides the config file's; the opposite ranking wins the other driver
    _rank(tmp_path / "other.json", slow, fast)
    out = run("iked", "--config", str(conf), "--check", "--calibration",
              str(tmp_path / "other.json"), env=env)
    assert _sessions_open_on(out)["aes128gcm16"] == slow


@pytest.mark.skipif(not os.path.isdir(TESTDRIVERS), reason="run scripts/setup.sh (test drivers)")
@pytest.mark.parametrize("fast,slow", [TWO_OF_A_KIND, TWO_OF_A_KIND[::-1]])
def test_the_daemons_dispatcher_opens_the_calibrated_drivers_session(tmp_path, monkeypatch,
                                                                     fast, slow):
    # In process, the way `ocfpy iked` builds the dispatcher it hands its IKE engine and
    # dataplane: from the loaded config's [daemon] table. A real session opens on the driver
    # the calibration ranks first, at the size an ESP packet has and at the default one.
    from ocfpy.cli.common import build_dispatcher
    from ocfpy.iked.configfile import load

    monkeypatch.setenv("OCFPY_TESTDRIVERS", "1")
    _rank(tmp_path / "cal.json", fast, slow)
    conf = tmp_path / "iked.toml"
    conf.write_text(IKED_CONF.format(calibration='calibration = "cal.json"'))
    opts = load(conf).daemon
    dispatcher = build_dispatcher(backend=opts.crypto_backend, strict=opts.strict_backend,
                                  calibration=opts.calibration)
    key = bytes(20)
    with dispatcher.open("aes128gcm16", key) as session:
        assert session.driver == fast
    with dispatcher.open("aes128gcm16", key, size_hint=64) as session:
        assert session.driver == fast


def test_a_broken_calibration_stops_the_daemon_before_it_starts(tmp_path):
    (tmp_path / "cal.json").write_text("{ broken")
    conf = tmp_path / "iked.toml"
    conf.write_text(IKED_CONF.format(calibration=""))
    conf.chmod(0o600)  # it holds a PSK: readable by others it would add a warning (issue 13)
    out = run("iked", "--config", str(conf), "--check", "--calibration",
              str(tmp_path / "cal.json"))
    assert out.returncode == 78  # EX_CONFIG, as for a bad config file
    assert out.stderr.strip() == (f"ocfpy iked: --calibration: {tmp_path / 'cal.json'}: not a "
                                  "usable calibration: not JSON (Expecting property name "
                                  "enclosed in double quotes at line 1)")
    assert "Traceback" not in out.stderr
    conf.write_text(IKED_CONF.format(calibration='calibration = "cal.json"'))
    out = run("iked", "--config", str(conf), "--check")
    assert out.returncode == 78
    assert out.stderr.startswith(f"ocfpy iked: {conf}:5: daemon.calibration: ")
