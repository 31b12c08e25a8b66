"""`ocfpy bench esp --crypto-backend A,B`: one tunnel per backend, measured in the same runs,
each backend's figures and the drivers its gateways reported (in the VM lane: af_alg; here,
where the host kernel has no AF_ALG, the forced openssl and the auto policy's choice)."""

from __future__ import annotations

import pytest

from tests.net.test_bench_smoke import bench, iperf3_or_skip, ours_left

pytestmark = pytest.mark.net


@pytest.fixture(autouse=True)
def nothing_left_behind():
    assert not ours_left(), f"leftovers before the test: {ours_left()}"
    yield
    assert not ours_left(), f"the benchmark left these behind: {ours_left()}"


def test_bench_esp_compares_backends_inside_the_tunnel_in_one_run():
    iperf3_or_skip()
    r = bench("esp", "--duration", "1", "--rounds", "1", "--no-strongswan",
              "--crypto-backend", "openssl,auto", timeout=300)
    assert list(r["backends"]) == ["openssl", "auto"] and r["crypto_backend"] == "openssl"
    for name, b in r["backends"].items():
        m = b["median"]
        assert m["tcp_mbit_s"] > 1 and m["udp64_pps"] > 100 and m["udp_mtu_pps"] > 100, name
        assert b["sa_bytes_in"] > 0, name
        # both gateways of each tunnel say who served their SAs
        assert b["drivers"]["a"] == b["drivers"]["b"] == {"in": "openssl", "out": "openssl"}
    assert r["ocfpy"]["median"] == r["backends"]["openssl"]["median"]  # the first is "ocfpy"
    assert not r["notes"]
