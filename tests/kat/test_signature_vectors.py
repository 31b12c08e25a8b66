"""The embedded signature KATs are exactly what the generator picks from the cited sources,
and every embedded vector passes through the OpenSSL driver at admission."""

from __future__ import annotations

import json

from .make_signature_vectors import OUT, document


def test_embedded_signature_vectors_match_their_sources() -> None:
    embedded = json.loads(OUT.read_text(encoding="utf-8"))
    assert embedded == json.loads(json.dumps(document())), (
        "ocfpy/crypto/selftest_vectors/signature.json differs from its sources; regenerate with "
        ".venv/bin/python -m tests.kat.make_signature_vectors")


def test_every_scheme_has_sign_and_verify_vectors() -> None:
    from ocfpy.crypto.signatures import all_schemes

    vectors = json.loads(OUT.read_text(encoding="utf-8"))["vectors"]
    for scheme in all_schemes():
        mine = [v for v in vectors if v["keyword"] == scheme.keyword]
        assert any("private" in v for v in mine), f"{scheme}: no sign vector"
        assert any("signature" in v for v in mine), f"{scheme}: no verify vector"
        if scheme.keyword != "rsa-sha1":  # Wycheproof has no RSA-2048/SHA-1 verify file
            assert any(v.get("result") == "invalid" for v in mine), f"{scheme}: no invalid case"
