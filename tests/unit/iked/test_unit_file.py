"""The shipped systemd unit: `systemd-analyze verify` accepts it, and it says what issue 16
asks (Type=notify, reload, watchdog, the three capabilities, hardening)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ocfpy.iked.systemd import NotifyError, main, unit_text


def _needs(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is missing in CI (Debian package systemd, scripts/setup.sh)")
        pytest.skip(f"{tool} not installed (Debian package systemd; scripts/setup.sh adds it)")
    return path


def _settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    tool = _needs("systemd-analyze")
    unit = tmp_path / "ocfpy-iked.service"
    unit.write_text(unit_text(executable=str(Path(sys.executable).parent / "ocfpy")))
    # --man=no: Documentation=man:ocfpy(1) is checked by test_manpage.py against the page we
    # generate; here the manual need not be installed.
    r = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr  # warnings (an unknown key ...) count as failures


def test_verify_would_catch_a_broken_unit(tmp_path):
    tool = _needs("systemd-analyze")
    unit = tmp_path / "ocfpy-iked.service"
    unit.write_text(unit_text(executable="/nonexistent/ocfpy"))
    r = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "/nonexistent/ocfpy" in r.stderr


def test_the_unit_says_what_the_service_needs():
    s = _settings(unit_text(executable="/opt/ocfpy/bin/ocfpy", config="/etc/ocfpy/site.toml"))
    assert s["Type"] == ["notify"]
    assert s["ExecStart"] == ["/opt/ocfpy/bin/ocfpy iked --foreground --config "
                              "/etc/ocfpy/site.toml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["WatchdogSec"] and s["Restart"] == ["on-failure"]
    assert set(s["CapabilityBoundingSet"][0].split()) == {
        "CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"}
    assert s["RuntimeDirectory"] == ["ocfpy"]
    assert s["ProtectSystem"] == ["strict"] and s["PrivateTmp"] == ["yes"]
    assert s["NoNewPrivileges"] == ["yes"] and s["ProtectHome"] == ["read-only"]
    assert "/run/ocfpy" in s["ReadWritePaths"]
    assert s["DeviceAllow"] == ["/dev/net/tun rw"]  # the userspace dataplane's TUN
    assert "PrivateDevices" not in s


def test_default_executable_is_this_installation():
    s = _settings(unit_text())
    exe = s["ExecStart"][0].split(" iked ")[0]
    assert exe.startswith("/") and ("ocfpy" in exe)
    assert os.access(exe.split()[0], os.X_OK)


def test_a_relative_executable_is_refused():
    with pytest.raises(NotifyError, match="absolute path"):
        unit_text(executable="ocfpy")


def test_module_entry_point_prints_the_unit(capsys):
    assert main(["unit", "--ocfpy", "/usr/bin/ocfpy"]) == 0
    out = capsys.readouterr().out
    assert "ExecStart=/usr/bin/ocfpy iked --foreground" in out and out.endswith("\n")
