"""The af_alg driver where the kernel lacks AF_ALG (this CI host): unavailable, with the
reason, and the forced-backend policy around it. Skips on a kernel that has AF_ALG (those
checks run in the VM lane, tests/kernel)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from ocfpy.plugins.af_alg.algorithms import NOT_OFFERED_REASON, never_offered, table

from ocfpy.crypto.catalogue import crypto_transforms
from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.errors import BackendUnavailable
from ocfpy.crypto.registry import DriverStatus, Registry
from ocfpy.kernel import afalg, keyctl

HOST_REASON = afalg.available()
needs_no_af_alg = pytest.mark.skipif(
    HOST_REASON is None, reason="AF_ALG works on this kernel: see tests/kernel (VM lane)")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load()


@needs_no_af_alg
def test_af_alg_is_unavailable_and_says_which_kernel_option_is_missing(registry):
    r = registry.get("af_alg")
    assert r is not None and r.status is DriverStatus.UNAVAILABLE
    assert "CONFIG_CRYPTO_USER_API" in r.reason and "EAFNOSUPPORT" in r.reason


@needs_no_af_alg
def test_strict_forced_backend_refuses_with_the_reason(registry):
    with pytest.raises(BackendUnavailable) as info:
        Dispatcher(registry, backend="af_alg")
    assert "af_alg" in str(info.value) and "CONFIG_CRYPTO_USER_API" in str(info.value)


@needs_no_af_alg
def test_lenient_forced_backend_falls_back_and_counts(registry):
    if registry.get("openssl") is None or registry.get("openssl").status is not DriverStatus.ACTIVE:
        pytest.skip("the openssl driver is not active here")
    d = Dispatcher(registry, backend="af_alg", strict=False)
    s = d.open("aes128gcm16", key=bytes(20))
    assert s.driver == "openssl"
    d.open("sha256", key=bytes(32))
    assert d.fallbacks == 2


@needs_no_af_alg
def test_ocfpy_drivers_json_reports_af_alg_unavailable_with_reason():
    out = subprocess.run([sys.executable, "-m", "ocfpy.cli.main", "drivers", "--json"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    af = {r["name"]: r for r in json.loads(out)}["af_alg"]
    assert af["status"] == "unavailable"
    assert "CONFIG_CRYPTO_USER_API" in af["reason"]


def test_keyctl_dh_either_works_or_says_which_option_is_missing():
    reason = keyctl.available()
    if reason is None:  # this kernel has KEYCTL_DH_COMPUTE: check a real computation
        from ocfpy.crypto.modp import MODP_GROUPS

        p = MODP_GROUPS[14][2]
        x = 0x1234567890ABCDEF
        out = keyctl.dh_compute(x.to_bytes(8, "big"), p.to_bytes(256, "big"), b"\x02")
        assert int.from_bytes(out, "big") == pow(2, x, p)
    else:
        assert "CONFIG_KEY" in reason or "keyctl" in reason


def test_every_transform_is_mapped_or_declared_not_offered():
    mapped, never = set(table()), set(never_offered())
    assert mapped.isdisjoint(never)
    assert mapped | never == {t.keyword for t in crypto_transforms()}
    assert never == {"ecp256", "ecp384", "ecp521", "x25519", "x448"}
    assert "no user-space interface" in NOT_OFFERED_REASON
