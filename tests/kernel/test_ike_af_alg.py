"""Two `ocfpy iked --crypto-backend af_alg` daemons in two namespaces (the VM lane).

Every IKE crypto session (MODP key exchange through keyctl, PRF and prf+ through
hmac(sha256), the SK payloads through gcm(aes), NAT-D hashes) must run on the kernel: the
backend is forced and strict, so a session af_alg cannot serve would refuse to open rather
than fall back silently. The daemons' `sa list` says which driver served each session.
"""

from __future__ import annotations

import pytest

pytest.importorskip("ocfpy.ike.engine", reason="the IKE engine is not in this tree")

from tests.net import ike_harness as H  # noqa: E402

# af_alg offers no ECP or Curve25519 (the kernel has no user-space interface for them):
# MODP through keyctl is its key exchange.
IKE, ESP = "aes128gcm16-prfsha256-modp2048", "aes128gcm16"


@pytest.fixture
def pair():
    with H.ike_lab("oka") as pair:
        yield pair


def test_establish_with_every_ike_session_on_the_kernel(pair):
    for side, d in ((0, pair.a), (1, pair.b)):
        d.start(H.config(side, proposals=[IKE], esp=[ESP], backend="af_alg", dataplane="none"),
                timeout=240)  # the guest is slow to import and self-test
    sa = pair.b.call("initiate", name="t", wait=60, timeout=90)
    assert sa["state"] == "established", pair.logs()
    H.wait_for(pair.a.established, 20, "responder established", on_fail=pair.logs)
    for d in (pair.a, pair.b):
        (ike,) = d.established()
        assert ike["algorithms"] == {"encr": "aes128gcm16", "integ": None, "prf": "prfsha256",
                                     "ke": "modp2048"}, ike
        assert ike["drivers"] == {"encr": "af_alg", "prf": "af_alg", "ke": "af_alg"}, ike
        (child,) = ike["children"]
        # dataplane "none" carries no ESP: the driver of record comes from the dataplane,
        # so none is claimed (it used to echo the dispatcher's pick, which no packet used)
        assert child["encr"] == "aes128gcm16" and child["driver"] is None, child

