"""The af_alg driver as the framework sees it: admission, reporting, forced-backend policy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ocfpy.crypto.devices import proc_crypto
from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.errors import BackendUnavailable
from ocfpy.crypto.registry import DriverStatus


def test_af_alg_is_active_with_no_quarantine(registry):
    r = registry.get("af_alg")
    assert r is not None
    assert r.status is DriverStatus.ACTIVE, r.reason
    assert not r.quarantined, r.quarantined
    for keyword in ("aes128gcm16", "aes256gcm16", "aes256", "aes128ctr", "sha256",
                    "prfsha256", "prfaesxcbc", "hashsha256", "modp2048"):
        assert keyword in r.admitted, keyword


def test_every_offer_names_a_kernel_driver_listed_in_proc_crypto(registry):
    drivers = {a.driver for a in proc_crypto.read()}
    for keyword, offer in registry.get("af_alg").admitted.items():
        assert offer.implementation, keyword
        # "gcm(aes): generic-gcm-aesni (priority 400)" -> generic-gcm-aesni
        detail = offer.implementation.rsplit(": ", 1)[-1]
        name = detail.split(" (priority")[0]
        assert name in drivers, (keyword, offer.implementation)


def test_curves_are_not_offered_and_the_reason_is_given(registry):
    d = registry.get("af_alg").driver
    for keyword in ("ecp256", "x25519", "x448"):
        assert keyword not in registry.get("af_alg").admitted
        assert "no user-space interface" in d.not_offered[keyword]
    assert "ecp/x25519/x448" in d.description


def test_forced_backend_strict_names_the_gap(registry):
    d = Dispatcher(registry, backend="af_alg")
    assert d.open("aes256gcm16", key=bytes(36)).driver == "af_alg"
    with pytest.raises(BackendUnavailable) as info:
        d.open("x25519")
    msg = str(info.value)
    assert "af_alg" in msg and "x25519" in msg and "does not offer" in msg
    assert "openssl" in info.value.alternatives


def test_forced_backend_non_strict_falls_back_and_counts(registry):
    d = Dispatcher(registry, backend="af_alg", strict=False)
    s = d.open("x25519")
    assert s.driver == "openssl"
    assert d.fallbacks == 1
    assert d.open("aes128gcm16", key=bytes(20)).driver == "af_alg"
    assert d.fallbacks == 1


def test_ocfpy_drivers_json_shows_af_alg_active_with_kernel_drivers():
    out = subprocess.run([sys.executable, "-m", "ocfpy.cli.main", "drivers", "--json"],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    records = {r["name"]: r for r in json.loads(out)}
    af = records["af_alg"]
    assert af["status"] == "active", af["reason"]
    assert "generic-gcm-aesni" in af["implementations"]["aes128gcm16"] or \
        "gcm" in af["implementations"]["aes128gcm16"]
    assert "priority" in af["implementations"]["aes128gcm16"]
