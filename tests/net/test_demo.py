"""`ocfpy demo` end to end: two daemons, a tunnel, traffic, a report; cleanup on Ctrl-C;
a clear refusal without root."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from ocfpy.lab.netlab import can_build_lab

pytestmark = pytest.mark.net

why = can_build_lab()
if why:
    pytest.skip(f"namespace lab unavailable: {why}", allow_module_level=True)

DEMO = [sys.executable, "-m", "ocfpy.cli.main", "demo"]


def _netns() -> set[str]:
    from pyroute2 import netns

    return set(netns.listnetns())


@pytest.mark.parametrize("extra", [
    [],
    ["--encap", "--esp-proposal", "aes256-sha256-esn", "--proposal",
     "aes256-sha256-prfsha256-ecp256"],
], ids=["default", "encap-cbc-esn"])
def test_demo_with_daemons_reports_a_working_tunnel(extra):
    proc = subprocess.run([*DEMO, "--prefix", "oesx", "--megabytes", "5", "--json", *extra],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    traffic = report["traffic"]
    assert traffic["ping_ok"] and traffic["sha256_match"] and traffic["tcp_bytes"] == 5 * 10**6
    assert report["time_to_establish_ms"] > 0
    assert report["ike"]["algorithms"]["encr"] in ("aes128gcm16", "aes256")
    assert report["esp_drivers"]["a"] == {"in": "openssl", "out": "openssl"}
    a, b = report["counters"]["a"], report["counters"]["b"]
    assert b["packets_in"] == a["packets_out"] > 5 * 10**6 // 1400  # nothing lost or faked
    assert a["packets_in"] == b["packets_out"] > 0
    if extra:
        assert report["esp"]["encap"] is True and report["esp"]["esn"] is True
        assert report["esp"]["integ"] == "sha256"
    assert not {"oesx-a", "oesx-b"} & _netns()


def test_demo_static_keys():
    proc = subprocess.run([*DEMO, "--static", "--prefix", "oesy", "--megabytes", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "static keys (no IKE): OK" in proc.stdout
    assert "SHA-256 match" in proc.stdout


def _as_at_a_terminal() -> None:
    """Ctrl-C at a terminal reaches a foreground process with SIGINT at its default. A test
    run started in the background (a CI job, `cmd &`) inherits SIGINT ignored, and Python
    then keeps it ignored, as a background program should: undo that for the demo."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_removes_everything():
    proc = subprocess.Popen([*DEMO, "--prefix", "oesz", "--megabytes", "2000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_as_at_a_terminal)
    try:
        deadline = time.monotonic() + 60
        # wait until the transfer runs: both namespaces exist and a TCP sink is up
        while time.monotonic() < deadline:
            if {"oesz-a", "oesz-b"} <= _netns() and _pids_in("oesz-b"):
                break
            time.sleep(0.2)
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "removed" in err
    assert not {"oesz-a", "oesz-b"} & _netns()


def _pids_in(ns: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return out.stdout.split()


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) not installed")
def test_without_root_it_says_what_it_needs():
    cmd = DEMO if os.geteuid() != 0 else [
        "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *DEMO]
    env = dict(os.environ, HOME="/tmp")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 77, proc.stderr
    assert "root" in proc.stderr and "ocfpy bench" in proc.stderr


TESTDRIVERS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), ".testdrivers")


@pytest.mark.skipif(not os.path.isdir(TESTDRIVERS), reason="run scripts/setup.sh (test drivers)")
def test_a_calibration_picks_the_driver_the_gateways_esp_runs_on(tmp_path):
    # Two hardware test drivers serve aes128gcm16 (real AES-GCM); without a calibration the
    # daemons take test_flaky (registered first). A calibration that measured test_halfbad
    # faster must reach both daemons through the config the demo writes, and their ESP SAs
    # must run on it, with the traffic intact.
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps({"source": "test", "rates": {"aes128gcm16": {
        "test_halfbad": [[1400, 1000.0]], "test_flaky": [[1400, 10.0]]}}}))
    env = {**os.environ, "OCFPY_TESTDRIVERS": "1", "PYTHONPATH": TESTDRIVERS}
    proc = subprocess.run([*DEMO, "--prefix", "oesc", "--megabytes", "2", "--json",
                           "--calibration", str(cal)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True and report["traffic"]["sha256_match"]
    for side in "ab":
        assert report["esp_drivers"][side] == {"in": "test_halfbad", "out": "test_halfbad"}
    assert not {"oesc-a", "oesc-b"} & _netns()


def test_a_broken_calibration_is_refused_before_anything_is_built(tmp_path):
    (tmp_path / "cal.json").write_text("[]")
    proc = subprocess.run([*DEMO, "--prefix", "oesd", "--calibration",
                           str(tmp_path / "cal.json")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"ocfpy demo: --calibration: {tmp_path / 'cal.json'}: not a "
                                   "usable calibration: expected an object with \"rates\" (as "
                                   "`ocfpy bench crypto --save` writes)")
    assert not {"oesd-a", "oesd-b"} & _netns()
