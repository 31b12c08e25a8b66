"""MODP Diffie-Hellman computed by the kernel (keyctl) agrees with OpenSSL (groups 14, 15)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import dh

from ocfpy.crypto.catalogue import get
from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.errors import InvalidPublicValue
from ocfpy.crypto.modp import MODP_GROUPS
from ocfpy.kernel import keyctl


@pytest.fixture(scope="module")
def dispatcher(registry) -> Dispatcher:
    reason = keyctl.available()
    if reason:
        pytest.fail(f"keyctl DH unavailable in the VM lane: {reason}")
    return Dispatcher(registry, backend="af_alg")


@pytest.mark.parametrize("keyword", ["modp2048", "modp3072"])
def test_kernel_dh_agrees_with_openssl(dispatcher, keyword):
    t = get(keyword)
    p = MODP_GROUPS[t.group][2]
    numbers = dh.DHParameterNumbers(p, 2)
    ours = dispatcher.open(keyword)
    assert ours.driver == "af_alg"
    pub = ours.public_value()
    assert len(pub) == t.public_size
    x = int.from_bytes(ours._ctx.private_value(), "big")
    assert int.from_bytes(pub, "big") == pow(2, x, p)  # the kernel computed g^x mod p

    peer = numbers.parameters().generate_private_key()
    peer_pub = peer.public_key().public_numbers().y.to_bytes(t.public_size, "big")
    secret = ours.shared_secret(peer_pub)
    mine_in_openssl = dh.DHPublicNumbers(int.from_bytes(pub, "big"), numbers).public_key()
    want = peer.exchange(mine_in_openssl).rjust(t.public_size, b"\0")
    assert secret == want


@pytest.mark.parametrize("bad", ["zero", "one", "p-1", "p", "short"])
def test_bad_peer_values_are_rejected(dispatcher, bad):
    t = get("modp2048")
    p = MODP_GROUPS[14][2]
    value = {"zero": 0, "one": 1, "p-1": p - 1, "p": p, "short": 5}[bad]
    size = t.public_size - 1 if bad == "short" else t.public_size
    s = dispatcher.open("modp2048")
    with pytest.raises(InvalidPublicValue):
        s.shared_secret(value.to_bytes(size, "big"))


def test_two_kernel_sides_agree_and_private_value_survives_migration(dispatcher):
    a, b = dispatcher.open("modp2048"), dispatcher.open("modp2048")
    sa = a.shared_secret(b.public_value())
    assert sa == b.shared_secret(a.public_value())
    # The private value can leave the kernel path: a new context with it (what the
    # dispatcher does on migration) finishes the same exchange.
    again = dispatcher.open("modp2048", key=a._ctx.private_value())
    assert again.public_value() == a.public_value()
    assert again.shared_secret(b.public_value()) == sa


def test_modp1024_is_refused_by_the_kernel_and_said_so(registry):
    d = registry.get("af_alg").driver
    if "modp1024" in {o.keyword for o in d.offers()}:
        pytest.skip("this kernel accepts 1024-bit DH primes")
    assert "modp1024" in d.not_offered and d.not_offered["modp1024"]
