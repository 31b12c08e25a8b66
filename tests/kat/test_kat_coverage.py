"""Every catalogue algorithm has known answers: in the KAT suite and in the admission self-test."""

from __future__ import annotations

from collections import Counter

from ocfpy.crypto import selftest
from ocfpy.crypto.catalogue import crypto_transforms

from .cases import LOADERS, all_cases
from .sources import MissingVectors


def test_every_algorithm_has_published_kats() -> None:
    try:
        counts = Counter(case.keyword for case in all_cases())
    except MissingVectors as exc:  # the vector packages are test dependencies: say so loudly
        raise AssertionError(f"vector packages missing: {exc}") from None
    missing = [t.keyword for t in crypto_transforms() if counts[t.keyword] == 0]
    assert not missing, f"no KAT for {missing}"
    # Beyond one case each: the families the brief names are all there.
    for keyword, at_least in (("aes128gcm8", 100), ("aes256gcm12", 100), ("aes192gcm16", 100),
                              ("chacha20poly1305", 100), ("x25519", 100), ("x448", 100),
                              ("ecp256", 100), ("ecp384", 100), ("ecp521", 100),
                              ("prfsha256", 10), ("aes128ctr", 3), ("aesxcbc", 7)):
        assert counts[keyword] >= at_least, (keyword, counts[keyword])


def test_every_algorithm_has_selftest_vectors_and_invalid_inputs_are_covered() -> None:
    table = selftest.vectors()
    missing = [t.keyword for t in crypto_transforms() if not table.get(t.keyword)]
    assert not missing, f"no self-test vector for {missing}"
    assert set(table) <= {t.keyword for t in crypto_transforms()}, "a vector for no algorithm"
    for t in crypto_transforms():
        if t.primitive.value == "ke":  # every group must see a peer value it has to refuse
            assert any(v.get("result") == "invalid" for v in table[t.keyword]), t.keyword


def test_every_loader_names_its_source_in_every_vector() -> None:
    for file_id, load in LOADERS.items():
        for case in load():
            assert case.vector["source"].startswith(file_id), (file_id, case.case)
