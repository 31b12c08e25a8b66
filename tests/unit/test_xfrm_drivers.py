"""The driver of record of the kernel and the control-plane-only dataplanes (no root).

``SaCounters.drivers`` names, per direction, what does a CHILD_SA's crypto; the daemon reports
it (the IKE engine no longer guesses it). For xfrm that is the kernel driver the kernel picks
for the states' algorithms: the usable /proc/crypto entry of highest priority. The userspace
dataplane's report (the dispatcher session's driver, after any migration) is tested in
tests/unit/esp/test_loops.py and, through real worker processes, tests/net.
"""

from __future__ import annotations

import ipaddress

from ocfpy.crypto.devices import proc_crypto
from ocfpy.esp.dataplane.null import NullDataplane
from ocfpy.esp.dataplane.xfrm import kernel_drivers
from ocfpy.esp.spec import ChildSaSpec, SaKeys

# Abridged from a real /proc/crypto (x86-64 with AES-NI, 6.1): two implementations of the
# ESP GCM template and of cbc(aes), one of them not usable (internal), one failed self-test.
PROC_CRYPTO = """\
name         : rfc4106(gcm(aes))
driver       : rfc4106(gcm_base(ctr(aes-aesni),ghash-clmulni))
module       : kernel
priority     : 400
selftest     : passed
internal     : no
type         : aead

name         : rfc4106(gcm(aes))
driver       : rfc4106-gcm-aesni
module       : aesni_intel
priority     : 400
selftest     : passed
internal     : no
type         : aead

name         : rfc4106(gcm(aes))
driver       : __rfc4106-gcm-aesni
module       : aesni_intel
priority     : 500
selftest     : passed
internal     : yes
type         : aead

name         : cbc(aes)
driver       : cbc-aes-aesni
module       : aesni_intel
priority     : 400
selftest     : passed
internal     : no
type         : skcipher

name         : cbc(aes)
driver       : cbc(aes-generic)
module       : kernel
priority     : 100
selftest     : passed
internal     : no
type         : skcipher

name         : hmac(sha256)
driver       : hmac(sha256-avx2)
module       : kernel
priority     : 170
selftest     : unknown
internal     : no
type         : shash

name         : hmac(sha256)
driver       : hmac(sha256-generic)
module       : kernel
priority     : 100
selftest     : passed
internal     : no
type         : shash
"""


def _spec(encryption: str, integrity: str | None) -> ChildSaSpec:
    a, b = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")
    return ChildSaSpec("t", 1, a, b, SaKeys(0x1000, b""), SaKeys(0x2000, b""), encryption,
                       integrity)


def test_xfrm_names_the_kernel_driver_the_kernel_picks():
    algs = proc_crypto.parse(PROC_CRYPTO)
    # Two usable entries of priority 400: the kernel's lookup walks the list /proc/crypto
    # prints and keeps the first of the highest priority; the internal one (priority 500)
    # is never handed out to a name lookup.
    drivers = kernel_drivers(_spec("aes256gcm16", None), algs)
    assert drivers == {"in": "kernel:rfc4106(gcm_base(ctr(aes-aesni),ghash-clmulni))",
                       "out": "kernel:rfc4106(gcm_base(ctr(aes-aesni),ghash-clmulni))"}
    # cipher + integrity: both drivers; a self-test that has not passed is not usable
    drivers = kernel_drivers(_spec("aes128", "sha256"), algs)
    assert drivers["in"] == drivers["out"] == "kernel:cbc-aes-aesni+kernel:hmac(sha256-generic)"


def test_xfrm_falls_back_to_the_algorithm_name():
    """Not (yet) in /proc/crypto, e.g. a template the kernel has not instantiated."""
    drivers = kernel_drivers(_spec("chacha20poly1305", None), proc_crypto.parse(PROC_CRYPTO))
    assert drivers == {"in": "kernel:rfc7539esp(chacha20,poly1305)",
                       "out": "kernel:rfc7539esp(chacha20,poly1305)"}


def test_none_names_no_driver():
    """dataplane none does no crypto: it must not claim a driver (nor count traffic)."""
    dp = NullDataplane()
    spec = _spec("aes256gcm16", None)
    dp.install(spec)
    c = dp.counters(spec.unique_id)
    assert c.drivers == {}
    assert (c.packets_in, c.packets_out, c.bytes_in, c.bytes_out) == (0, 0, 0, 0)
