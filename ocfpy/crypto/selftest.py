"""Known-answer tests a driver must pass, per algorithm, before it is admitted.

(strongSwan's crypto_test.on_add.) ``run(driver, keywords)`` returns ``{keyword: reason}`` for
every algorithm that failed; the registry quarantines those. Every catalogue algorithm has at
least one vector in ``ocfpy/crypto/selftest_vectors/*.json``, taken from a published source that each
vector names (NIST CAVP, RFCs, Wycheproof); the MODP groups, which have no published KAT, use a
fixed private pair whose g^xy was computed with Python's own ``pow`` (independent of OpenSSL).

The checks run through ``driver.new_context`` and go both ways: seal and open, encrypt and
decrypt, compute and verify, and a tampered input must be refused (a tag, an ICV, a peer value).
An algorithm without a vector fails: nothing is admitted untested.

``check_vector`` is the one place that knows how to run a vector; tests/kat reuses it through
dispatcher sessions, so the admission test and the KAT suite cannot drift apart.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from importlib import resources
from typing import Any

from .catalogue import Primitive, Transform
from .catalogue import get as get_transform
from .driver import Driver
from .errors import AuthenticationError, InvalidInput, InvalidPublicValue

log = logging.getLogger(__name__)

VECTOR_FILES = ("aead.json", "cipher.json", "integ.json", "prf.json", "ke.json", "hash.json")

# Something with the operations of a context or a session (seal/open, encrypt/decrypt, ...).
Opener = Callable[[Transform, "bytes | None"], Any]


class KatFailure(AssertionError):
    """A known-answer test gave the wrong answer (the message says which and how)."""


@functools.cache
def vectors() -> dict[str, list[dict[str, Any]]]:
    """keyword -> the embedded vectors for it (loaded once per process)."""
    out: dict[str, list[dict[str, Any]]] = {}
    folder = resources.files("ocfpy.crypto") / "selftest_vectors"
    for name in VECTOR_FILES:
        data = json.loads((folder / name).read_text(encoding="utf-8"))
        for vector in data["vectors"]:
            out.setdefault(vector["keyword"], []).append(vector)
    return out


def run(driver: Driver, keywords: list[str]) -> dict[str, str]:
    """Run the embedded KATs for each keyword on this driver; return {keyword: reason}."""
    failures: dict[str, str] = {}
    try:
        table = vectors()
    except (OSError, ValueError, KeyError) as exc:  # a broken install must not admit anything
        reason = f"known-answer vectors unreadable: {_describe(exc)}"
        return {keyword: reason for keyword in keywords}
    for keyword in keywords:
        transform = get_transform(keyword)
        if transform.primitive is Primitive.SIGNATURE:  # keys, not keying material
            from .selftest_signatures import run_scheme

            reason = run_scheme(driver, transform)  # type: ignore[arg-type]
            if reason:
                failures[keyword] = reason
                log.warning("driver %s failed the %s known-answer test: %s",
                            driver.name, keyword, reason)
            continue
        cases = table.get(transform.keyword)
        if not cases:
            failures[keyword] = "no known-answer vector for this algorithm"
            continue
        for vector in cases:
            opened: list = []

            def tracked(t: Transform, key: bytes | None, _opened=opened):
                ctx = driver.new_context(t, key)
                _opened.append(ctx)
                return ctx
            try:
                check_vector(tracked, transform, vector)
            except Exception as exc:  # a context that raises is a failure, with its text
                failures[keyword] = f"{vector.get('source', '?')}: {_describe(exc)}"
                log.warning("driver %s failed the %s known-answer test: %s",
                            driver.name, keyword, failures[keyword])
                break
            finally:
                _close_all(opened)
    return failures


def _close_all(contexts: list) -> None:
    """Contexts hold driver resources (kernel sockets, device handles): release them."""
    for ctx in contexts:
        try:
            ctx.close()
        except Exception:  # a driver that cannot close is not admitted or refused for it
            log.debug("closing a self-test context failed", exc_info=True)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KatFailure):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _x(vector: dict[str, Any], name: str) -> bytes:
    return bytes.fromhex(vector[name])


def _flip(data: bytes) -> bytes:
    """The same bytes with the last bit inverted (a tampered tag, ICV or ciphertext)."""
    if not data:
        return b"\x01"
    return data[:-1] + bytes([data[-1] ^ 1])


def _expect(what: str, got: bytes, want: bytes) -> None:
    if got != want:
        raise KatFailure(f"{what}: got {got.hex()[:64]}, expected {want.hex()[:64]}")


def check_vector(open_: Opener, transform: Transform, vector: dict[str, Any]) -> None:
    """Run one vector through whatever ``open_(transform, key)`` returns; raise on mismatch.

    ``vector["result"]`` is "valid" (the default) or "invalid": an invalid AEAD input must be
    refused with AuthenticationError (or InvalidInput), an invalid peer value with
    InvalidPublicValue, an invalid ICV with AuthenticationError.
    """
    _CHECKS[transform.primitive](open_, transform, vector)


def _valid(vector: dict[str, Any]) -> bool:
    return vector.get("result", "valid") == "valid"


def _check_aead(open_: Opener, transform: Transform, v: dict[str, Any]) -> None:
    ctx = open_(transform, _x(v, "key"))
    iv, aad, ct = _x(v, "iv"), _x(v, "aad"), _x(v, "ciphertext")
    if not _valid(v):
        try:
            out = ctx.open(iv, ct, aad)
        except (AuthenticationError, InvalidInput):
            return
        raise KatFailure(f"invalid ciphertext accepted (gave {out.hex()[:32]})")
    pt = _x(v, "plaintext")
    _expect("seal", ctx.seal(iv, pt, aad), ct)
    _expect("open", ctx.open(iv, ct, aad), pt)
    for what, args in (("tag", (iv, _flip(ct), aad)), ("AAD", (iv, ct, _flip(aad)))):
        try:
            ctx.open(*args)
        except AuthenticationError:
            continue
        raise KatFailure(f"open accepted a tampered {what}")


def _check_cipher(open_: Opener, transform: Transform, v: dict[str, Any]) -> None:
    ctx = open_(transform, _x(v, "key"))
    iv, pt, ct = _x(v, "iv"), _x(v, "plaintext"), _x(v, "ciphertext")
    _expect("encrypt", ctx.encrypt(iv, pt), ct)
    _expect("decrypt", ctx.decrypt(iv, ct), pt)


def _check_integ(open_: Opener, transform: Transform, v: dict[str, Any]) -> None:
    ctx = open_(transform, _x(v, "key"))
    data, icv = _x(v, "data"), _x(v, "icv")
    if _valid(v):
        _expect("compute", ctx.compute(data), icv)
        ctx.verify(data, icv)
        icv = _flip(icv)
    try:
        ctx.verify(data, icv)
    except AuthenticationError:
        return
    raise KatFailure("verify accepted a wrong ICV")


def _check_prf(open_: Opener, transform: Transform, v: dict[str, Any]) -> None:
    ctx = open_(transform, _x(v, "key"))
    want = _x(v, "output")
    if "seed" in v:  # prf+ (RFC 7296 section 2.13): sessions only, not raw contexts
        _expect("prf+", ctx.prf_plus(_x(v, "seed"), len(want)), want)
    else:
        _expect("prf", ctx.prf(_x(v, "data")), want)


def _check_ke(open_: Opener, transform: Transform, v: dict[str, Any]) -> None:
    ctx = open_(transform, _x(v, "private"))
    if "public" in v:
        _expect("public value", ctx.public_value(), _x(v, "public"))
    peer = _x(v, "peer")
    if _valid(v):
        _expect("shared secret", ctx.shared_secret(peer), _x(v, "shared"))
        return
    try:
        out = ctx.shared_secret(peer)
    except InvalidPublicValue:
        return
    raise KatFailure(f"invalid peer value accepted (gave {out.hex()[:32]})")


def _check_hash(open_: Opener, transform: Transform, v: dict[str, Any]) -> None:
    _expect("digest", open_(transform, None).digest(_x(v, "data")), _x(v, "digest"))


_CHECKS: dict[Primitive, Callable[[Opener, Transform, dict[str, Any]], None]] = {
    Primitive.AEAD: _check_aead,
    Primitive.CIPHER: _check_cipher,
    Primitive.INTEG: _check_integ,
    Primitive.PRF: _check_prf,
    Primitive.KE: _check_ke,
    Primitive.HASH: _check_hash,
}
