"""AfAlgDriver: the Linux kernel crypto API as an ocfpy driver.

probe() finds out, honestly and at load time, what this kernel can do: AF_ALG at all, each
socket type, every algorithm (by binding it), MODP DH through keyctl (one tiny computation
per group, since the kernel refuses primes under 1536 bits). Each offer names the kernel
implementation that will serve it, read from /proc/crypto after the bind created it, e.g.
``gcm(aes): generic-gcm-aesni (priority 400)``. What it does not offer, and why, is kept in
``not_offered`` and summarised in the description that `ocfpy drivers` prints.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from ocfpy.crypto.catalogue import Primitive, Transform
from ocfpy.crypto.devices import proc_crypto
from ocfpy.crypto.driver import Context, Driver, DriverKind, Offer
from ocfpy.crypto.errors import (
    DriverFailure,
    DriverUnavailable,
    InvalidInput,
    Reason,
    Unsupported,
)
from ocfpy.crypto.modp import MODP_GROUPS
from ocfpy.kernel import afalg, keyctl

from . import contexts
from .algorithms import NOT_OFFERED_REASON, KernelAlg, never_offered, table

log = logging.getLogger(__name__)

AFALG_TYPES = ("hash", "skcipher", "aead")


class AfAlgDriver(Driver):
    name = "af_alg"
    # The kernel's CPU implementations are software like OpenSSL's, reached through two system
    # calls per operation (measured 2.5-4x OpenSSL's per-op time for AES-GCM at ESP sizes):
    # they rank below openssl unless forced, overridden or calibrated faster. Devices behind
    # the kernel are drivers/kernel_accel's, as hardware.
    kind = DriverKind.SOFTWARE
    priority = 50
    description = "Linux kernel crypto API (AF_ALG sockets, keyctl DH)"

    def __init__(self) -> None:
        self._offers: dict[str, Offer] = {}
        self._kernel: dict[str, KernelAlg] = {}
        self.not_offered: dict[str, str] = {}
        self.kernel_release = os.uname().release

    # -- admission ---------------------------------------------------------------------------
    def probe(self) -> None:
        reason = afalg.available()
        if reason:
            raise afalg.AfAlgUnavailable(reason)
        type_reasons = {t: afalg.type_available(t) for t in AFALG_TYPES}
        dh_reason = keyctl.available()
        if all(type_reasons.values()) and dh_reason:
            raise DriverUnavailable("no usable kernel crypto interface: " + "; ".join(
                f"{t}: {r}" for t, r in type_reasons.items()) + f"; keyctl DH: {dh_reason}")

        bound: dict[tuple[str, str], str | Exception] = {}
        for keyword, ka in table().items():
            if ka.afalg_type == "keyctl":
                why = dh_reason or self._probe_group(keyword)
                impl = "" if why else self._dh_implementation()
            elif type_reasons[ka.afalg_type]:
                why, impl = type_reasons[ka.afalg_type], ""
            else:
                key = (ka.afalg_type, ka.name)
                if key not in bound:
                    bound[key] = self._probe_bind(ka)
                result = bound[key]
                why = str(result) if isinstance(result, Exception) else ""
                impl = "" if why else f"{ka.name}: {result}"
            if why:
                self.not_offered[keyword] = why
            else:
                self._offers[keyword] = Offer(keyword, impl)
                self._kernel[keyword] = ka
        for keyword in never_offered():
            self.not_offered[keyword] = NOT_OFFERED_REASON
        if not self._offers:
            raise DriverUnavailable("the kernel crypto API offers none of our algorithms: "
                                    + "; ".join(sorted(set(self.not_offered.values()))[:4]))
        missing = sorted(k for k, r in self.not_offered.items() if r != NOT_OFFERED_REASON)
        self.description = (
            f"Linux kernel {self.kernel_release} crypto API via AF_ALG and keyctl DH; "
            f"not offered: ecp/x25519/x448 (no user-space kernel interface)"
            + (f", {', '.join(missing)} (see `not_offered`)" if missing else "")
        )
        log.info("af_alg: %d algorithms offered on kernel %s", len(self._offers),
                 self.kernel_release)

    @staticmethod
    def _probe_bind(ka: KernelAlg) -> str | Exception:
        """Bind once (creating the template instance) and name what the kernel chose."""
        try:
            afalg.bind(ka.afalg_type, ka.name).close()
        except (Unsupported, DriverUnavailable) as exc:
            return exc
        impl = proc_crypto.resolve(ka.name, ka.afalg_type)
        return impl.describe() if impl else "implementation not listed in /proc/crypto"

    @staticmethod
    def _probe_group(keyword: str) -> str:
        from ocfpy.crypto.catalogue import get

        group = get(keyword).group or 0
        prime = MODP_GROUPS[group][2]
        size = (prime.bit_length() + 7) // 8
        try:
            out = keyctl.dh_compute(b"\x03", prime.to_bytes(size, "big"), b"\x02")
        except (InvalidInput, DriverFailure, DriverUnavailable) as exc:
            return str(exc)
        return "" if int.from_bytes(out, "big") == 8 else "kernel DH gave a wrong answer"

    @staticmethod
    def _dh_implementation() -> str:
        impl = proc_crypto.resolve("dh")
        return "keyctl KEYCTL_DH_COMPUTE" + (f": dh: {impl.describe()}" if impl else "")

    def offers(self) -> Iterable[Offer]:
        return list(self._offers.values())

    # -- contexts ----------------------------------------------------------------------------
    def new_context(self, transform: Transform, key: bytes | None) -> Context:
        ka = self._kernel.get(transform.keyword)
        if ka is None:
            raise Unsupported(transform.keyword, Reason.NOT_OFFERED,
                              self.not_offered.get(transform.keyword, ""))
        try:
            return self._make(transform, key, ka)
        except (Unsupported, DriverUnavailable) as exc:
            # It bound at probe time: the kernel lost it since (module removed, device
            # gone). A failure of this driver, so the dispatcher tries the next one.
            raise DriverFailure(f"af_alg: {transform.keyword} no longer available: {exc}") \
                from None

    @staticmethod
    def _make(t: Transform, key: bytes | None, ka: KernelAlg) -> Context:
        p = t.primitive
        if p is Primitive.AEAD:
            if t.keyword == "chacha20poly1305":
                return contexts.ChaChaEspContext(t, key)
            return contexts.GcmContext(t, key)
        if p is Primitive.CIPHER:
            return contexts.SkcipherContext(t, key, ka.name)
        if p is Primitive.INTEG:
            return contexts.MacOpContext(t, key, ka.name)
        if p is Primitive.PRF:
            if ka.name.startswith("hmac("):
                return contexts.HmacPrfContext(t, key, ka.name)
            return contexts.AesPrfContext(t, key, ka.name)
        if p is Primitive.HASH:
            return contexts.DigestContext(t, ka.name)
        if p is Primitive.KE:
            return contexts.ModpContext(t, key)
        raise Unsupported(t.keyword, Reason.NOT_OFFERED)
