"""The embedded admission vectors are exactly what the generator picks from the cited files."""

from __future__ import annotations

import json

from .make_selftest_vectors import OUT, render


def test_embedded_vectors_match_their_sources() -> None:
    for name, text in render().items():
        embedded = (OUT / name).read_text(encoding="utf-8")
        assert json.loads(embedded) == json.loads(text), (
            f"ocfpy/crypto/selftest_vectors/{name} differs from its sources; regenerate with "
            "(cd tests && python -m kat.make_selftest_vectors)")
