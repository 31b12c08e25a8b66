"""Known-answer tests for signature schemes, run at admission like every other algorithm's
(ocfpy.crypto.selftest hands SIGNATURE schemes here).

The vectors (``selftest_vectors/signature.json``, written by tests/kat/make_signature_vectors.py)
are RFC 8032's Ed25519/Ed448 tests (sign, byte for byte), Wycheproof verify cases (valid ones
must verify, invalid ones must be refused with InvalidSignature) and sign cases with published
keys (deterministic schemes compared byte for byte; ECDSA and RSA-PSS checked by verifying).
Every valid signature is also checked against a tampered message, which must be refused.

A driver gets the keys as ``KeyBytes`` (sign) and ``PublicKey`` (verify). A driver whose keys
live only in a token refuses both with ``Reason.KEY_STORE``; nothing can be tested for it here,
and its signatures are checked when a key is opened instead (the dispatcher's pairwise
consistency test in ``open_signer``, which verifies with an admitted verifier). A driver that
takes neither key kind is admitted for the scheme on that condition; one that takes a kind and
then answers wrongly is quarantined for the scheme, like any other KAT failure.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from .driver import Driver
from .errors import InvalidSignature, Reason, Unsupported
from .selftest import KatFailure
from .signatures import KeyBytes, PublicKey, SignatureScheme

VECTOR_FILE = "signature.json"


@functools.cache
def vectors() -> dict[str, list[dict[str, Any]]]:
    folder = resources.files("ocfpy.crypto") / "selftest_vectors"
    data = json.loads((folder / VECTOR_FILE).read_text(encoding="utf-8"))
    out: dict[str, list[dict[str, Any]]] = {}
    for vector in data["vectors"]:
        out.setdefault(vector["keyword"], []).append(vector)
    return out


def _tampered(message: bytes) -> bytes:
    return message[:-1] + bytes([message[-1] ^ 1]) if message else b"\x00"


def _open(driver: Driver, scheme: SignatureScheme, key) -> Any | None:
    """A context, or None when the driver cannot take this kind of key (Reason.KEY_STORE)."""
    try:
        return driver.new_context(scheme, key)
    except Unsupported as exc:
        if exc.reason is Reason.KEY_STORE:
            return None
        raise


def _verify_must_fail(ctx, message: bytes, signature: bytes, what: str) -> None:
    try:
        ctx.verify(message, signature)
    except InvalidSignature:
        return
    raise KatFailure(f"verify accepted {what}")


def check_vector(driver: Driver, scheme: SignatureScheme, v: dict[str, Any]) -> tuple[bool, bool]:
    """Run one vector; return (sign ran, verify ran). Raise on a wrong answer."""
    message = bytes.fromhex(v["message"])
    public = PublicKey(bytes.fromhex(v["public"]))
    signed = verified = False
    contexts = []
    try:
        verifier = _open(driver, scheme, public)
        if verifier is not None:
            contexts.append(verifier)
        signature = bytes.fromhex(v["signature"]) if "signature" in v else None
        if "private" in v:
            signer = _open(driver, scheme, KeyBytes(bytes.fromhex(v["private"])))
            if signer is not None:
                contexts.append(signer)
                got = signer.sign(message)
                signed = True
                if v.get("deterministic") and got != signature:
                    raise KatFailure(
                        f"sign: got {got.hex()[:48]}, expected {signature.hex()[:48]}")  # type: ignore[union-attr]
                if signer.public_key() != public.spki:
                    raise KatFailure("sign: public_key() is not the key's SPKI")
                if not v.get("deterministic"):
                    # Randomised (ECDSA, PSS): checked with the reference implementation, so a
                    # driver that signs and verifies consistently wrong cannot pass, and by
                    # the driver's own verifier below.
                    _reference_verify(scheme, public.spki, message, got)
                    signature = got
        if verifier is not None and signature is not None:
            verified = True
            if v.get("result", "valid") == "valid":
                verifier.verify(message, signature)
                _verify_must_fail(verifier, _tampered(message), signature, "a tampered message")
            else:
                _verify_must_fail(verifier, message, signature, f"an invalid signature ({v['source']})")
    finally:
        for ctx in contexts:
            try:
                ctx.close()
            except Exception:  # noqa: BLE001 - closing is best effort in a self-test
                pass
    return signed, verified


def _reference_verify(scheme: SignatureScheme, spki: bytes, message: bytes, sig: bytes) -> None:
    """The reference check for randomised signatures (cryptography is the framework's own
    dependency; it is used here as the yardstick, not as a driver)."""
    from cryptography.exceptions import InvalidSignature as Bad
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    key = serialization.load_der_public_key(spki)
    try:
        if scheme.family == "eddsa":
            key.verify(sig, message)  # type: ignore[call-arg]
            return
        algorithm = getattr(hashes, scheme.digest.upper())()  # type: ignore[union-attr]
        if scheme.family == "ecdsa":
            if scheme.encoding == "raw":
                n = len(sig) // 2
                sig = encode_dss_signature(int.from_bytes(sig[:n], "big"),
                                           int.from_bytes(sig[n:], "big"))
            key.verify(sig, message, ec.ECDSA(algorithm))  # type: ignore[call-arg]
        elif scheme.family == "rsa-pss":
            key.verify(sig, message, padding.PSS(padding.MGF1(algorithm),  # type: ignore[call-arg]
                                                 algorithm.digest_size), algorithm)
        else:
            key.verify(sig, message, padding.PKCS1v15(), algorithm)  # type: ignore[call-arg]
    except (Bad, ValueError):
        raise KatFailure("sign: the signature does not verify") from None


def run_scheme(driver: Driver, scheme: SignatureScheme) -> str | None:
    """None if the driver passes (or takes no test key at all, see the module text), else
    the reason it fails."""
    cases = vectors().get(scheme.keyword)
    if not cases:
        return "no known-answer vector for this algorithm"
    for v in cases:
        try:
            check_vector(driver, scheme, v)
        except Exception as exc:  # a context that raises is a failure, with its text
            text = str(exc) if isinstance(exc, KatFailure) else (
                f"{type(exc).__name__}: {exc}")
            return f"{v.get('source', '?')}: {text}"
    return None
