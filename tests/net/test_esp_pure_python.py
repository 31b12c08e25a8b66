"""The userspace dataplane without its compiled helpers (ocfpy/esp/_framing.c, _mmsg.c,
_csum.c): two real `ocfpy iked` daemons started with OCFPY_PURE_PYTHON=1 negotiate, carry a
ping and a TCP transfer through the pure-Python twins (framing.py, sendbatch.py, gso.py's
sum), and no helper's shared object is even mapped into any of their processes; started
without it, the helpers are (when built)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pytest

from ocfpy.esp import framing, sendbatch
from ocfpy.lab.netlab import can_build_lab, tcp_transfer

pytestmark = pytest.mark.net

why = can_build_lab()
if why:
    pytest.skip(f"namespace lab unavailable: {why}", allow_module_level=True)
from ocfpy.cli.demo import INNER_HOSTS, Gateways  # noqa: E402


def _options() -> argparse.Namespace:
    return argparse.Namespace(crypto_backend="openssl", calibration=None, proposal=None,
                              esp_proposal=["aes128gcm16"], dataplane="userspace", encap=True)


HELPERS = ("_framing", "_mmsg", "_csum")


def _helpers_mapped(pid: int) -> set[str]:
    """Which compiled helpers the process or any of its children (the ESP workers) mapped."""
    pids = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    maps = "".join(Path(f"/proc/{p}/maps").read_text() for p in pids)
    return {h for h in HELPERS if f"/{h}." in maps}


@pytest.mark.parametrize("pure", [True, False], ids=["pure-python", "compiled"])
def test_daemons_carry_traffic_with_and_without_the_helper(monkeypatch, pure):
    if not pure and not (framing.COMPILED and sendbatch.COMPILED):
        pytest.skip("the compiled helpers ocfpy.esp._framing / _mmsg are not built here")
    if pure:
        monkeypatch.setenv("OCFPY_PURE_PYTHON", "1")
    else:
        monkeypatch.delenv("OCFPY_PURE_PYTHON", raising=False)
    with Gateways(_options(), "oepp") as gw:
        gw.establish()
        for side in "ab":
            mapped = _helpers_mapped(gw.daemons[side].proc.pid)
            if pure:
                assert mapped == set(), mapped
            else:
                assert {"_framing", "_mmsg"} <= mapped, mapped
        ping = gw.lab.run(gw.a, ["ping", "-c", "3", "-i", "0.2", "-I", INNER_HOSTS[0],
                                 INNER_HOSTS[1]], timeout=20)
        assert ping.returncode == 0, ping.stdout + gw.log_tail("a") + gw.log_tail("b")
        t = tcp_transfer(gw.lab, gw.a, INNER_HOSTS[0], gw.b, INNER_HOSTS[1], 10 * 10**6)
        assert t.ok, (t.sent, t.received)
        time.sleep(0.3)
        da = gw.call("a", "list")[0]["children"][0]["dataplane"]
        db = gw.call("b", "list")[0]["children"][0]["dataplane"]
    assert db["packets_in"] == da["packets_out"] > 10 * 10**6 // 1400
    assert db["auth_failures"] == db["replay_drops"] == db["malformed"] == 0
