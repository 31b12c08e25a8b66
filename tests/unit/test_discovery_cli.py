"""`ocfpy devices` as a user runs it (the installed console script, in a subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

OCFPY = shutil.which("ocfpy", path=os.path.dirname(sys.executable)) or shutil.which("ocfpy")
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "devices"


def ocfpy(*args: str) -> subprocess.CompletedProcess:
    assert OCFPY, "the ocfpy console script is not installed in this environment"
    env = dict(os.environ, COLUMNS="250")  # one table row per line
    return subprocess.run([OCFPY, *args], capture_output=True, text=True, timeout=60, env=env)


def test_devices_from_a_recording_json():
    out = ocfpy("devices", "--from", str(FIXTURES / "qat-c62x-no-firmware.json"), "--json")
    assert out.returncode == 0, out.stderr
    (dev,) = json.loads(out.stdout)
    assert dev["family"] == "qat-c62x" and dev["kernel_driver"] == "c6xx"
    assert dev["usable"] is False
    assert dev["summary"].startswith("Intel QAT c62x 8086:37c8 at 0000:3d:00.0, kernel driver "
                                     "c6xx (qat_c62x), 0 algorithms registered: firmware not "
                                     "loaded")


def test_devices_table_says_why_not():
    out = ocfpy("devices", "--from", str(FIXTURES / "hisi-unbound.json"))
    assert out.returncode == 0, out.stderr
    (row,) = [line for line in out.stdout.splitlines() if "0000:76:00.0" in line]
    assert "HiSilicon SEC2" in row
    assert "no: no kernel driver bound (expected hisi_sec2; try modprobe hisi_sec2)" in row


def test_devices_on_this_machine_and_record_round_trip(tmp_path):
    path = tmp_path / "ocfpy-drv-record.json"
    out = ocfpy("devices", "--json", "--record", str(path))
    assert out.returncode == 0, out.stderr
    live = json.loads(out.stdout)
    replay = ocfpy("devices", "--json", "--from", str(path))
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout) == live
    data = json.loads(path.read_text())
    assert "proc_crypto" in data and data["source"].startswith("recorded by")


def test_bad_recording_is_a_clear_error(tmp_path):
    bad = tmp_path / "ocfpy-drv-bad.json"
    bad.write_text("{not json")
    out = ocfpy("devices", "--from", str(bad))
    assert out.returncode == 2
    assert str(bad) in out.stderr and "Traceback" not in out.stderr


def test_known_table_lists_the_families():
    out = ocfpy("devices", "--known", "--json")
    assert out.returncode == 0, out.stderr
    keys = {f["key"] for f in json.loads(out.stdout)}
    assert {"virtio-crypto", "qat-c62x", "amd-ccp-1468", "hisi-sec2", "nxp-caam"} <= keys


def test_watch_runs_for_a_bounded_time():
    out = ocfpy("devices", "--watch", "--stop-after", "0.5")
    if out.returncode == 1 and "cannot listen" in out.stderr:
        pytest.skip(out.stderr.strip())
    assert out.returncode == 0, out.stderr
    assert "watching" in out.stdout
