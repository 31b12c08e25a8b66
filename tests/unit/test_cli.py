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


def test_inactive_backend_is_named_with_what_is_active():
    out = run("bench", "crypto", "--backend", "nonesuch", "--duration", "0.01")
    assert out.returncode == 2
    assert "'nonesuch' is not active" in out.stderr and "openssl" in out.stderr


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_bench_crypto_small_run(fmt, tmp_path):
    args = ["bench", "crypto", "--backend", "openssl", "--algorithms", "aes128gcm16,x25519",
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
