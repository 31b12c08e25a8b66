"""Parse /proc/crypto: which kernel crypto implementations exist, and which one wins.

The kernel lists one block per registered algorithm implementation, blank-line separated::

    name         : gcm(aes)
    driver       : generic-gcm-aesni
    module       : aesni_intel
    priority     : 400
    refcnt       : 1
    selftest     : passed
    internal     : no
    type         : aead
    ...

When a socket binds an algorithm *name*, the kernel picks the tested, non-internal entry
of highest priority (crypto/api.c `__crypto_alg_lookup`); binding a *driver* name selects
that entry exactly. `resolve()` mirrors that choice so we can say what serves a session.
Template instances (``gcm(aes)``, ``hmac(sha256)``) only appear once something has asked
for them, so resolve after binding, not before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PROC_CRYPTO = Path("/proc/crypto")

# AF_ALG socket type -> /proc/crypto "type" values that such a socket can bind.
AFALG_TYPES: dict[str, frozenset[str]] = {
    "hash": frozenset({"shash", "ahash"}),
    "skcipher": frozenset({"skcipher", "lskcipher"}),
    "aead": frozenset({"aead"}),
    "rng": frozenset({"rng"}),
    "akcipher": frozenset({"akcipher"}),
}


@dataclass(frozen=True, slots=True)
class CryptoAlg:
    name: str
    driver: str
    module: str = ""
    priority: int = 0
    selftest: str = ""  # "passed", "unknown", or absent on old kernels
    internal: bool = False
    type: str = ""
    fields: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def usable(self) -> bool:
        """What the kernel itself would hand out to a name lookup."""
        return not self.internal and self.selftest in ("passed", "")

    def describe(self) -> str:
        """For Offer.implementation: ``generic-gcm-aesni (priority 400)``."""
        return f"{self.driver} (priority {self.priority})"


def parse(text: str) -> list[CryptoAlg]:
    """Every entry in a /proc/crypto dump. Unknown keys are kept in ``fields``."""
    algs: list[CryptoAlg] = []
    for block in text.split("\n\n"):
        kv: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                kv[key.strip()] = value.strip()
        if "name" not in kv or "driver" not in kv:
            continue
        try:
            priority = int(kv.get("priority", "0"))
        except ValueError:
            priority = 0
        algs.append(CryptoAlg(
            name=kv["name"], driver=kv["driver"], module=kv.get("module", ""),
            priority=priority, selftest=kv.get("selftest", ""),
            internal=kv.get("internal", "no") == "yes", type=kv.get("type", ""), fields=kv,
        ))
    return algs


def read(path: Path = PROC_CRYPTO) -> list[CryptoAlg]:
    """The current /proc/crypto, or [] where it cannot be read (not Linux, no procfs)."""
    try:
        return parse(path.read_text())
    except OSError:
        return []


def resolve(name: str, afalg_type: str | None = None,
            algs: list[CryptoAlg] | None = None) -> CryptoAlg | None:
    """The entry that serves ``name`` (an algorithm or a driver name), as the kernel picks it.

    A driver name matches exactly one entry. An algorithm name matches the usable entry of
    highest priority. Returns None when nothing registered matches (yet).
    """
    algs = read() if algs is None else algs
    types = AFALG_TYPES.get(afalg_type, frozenset()) if afalg_type else None

    def fits(a: CryptoAlg) -> bool:
        return types is None or a.type in types

    for a in algs:
        if a.driver == name and fits(a):
            return a
    named = [a for a in algs if a.name == name and a.usable and fits(a)]
    return max(named, key=lambda a: a.priority, default=None)


def by_driver(driver: str, algs: list[CryptoAlg] | None = None) -> CryptoAlg | None:
    """The entry registered under this exact kernel driver name."""
    algs = read() if algs is None else algs
    return next((a for a in algs if a.driver == driver), None)


def afalg_type_of(alg: CryptoAlg) -> str | None:
    """The AF_ALG socket type that can bind this entry, or None (e.g. "cipher", "kpp")."""
    return next((t for t, kinds in AFALG_TYPES.items() if alg.type in kinds), None)
