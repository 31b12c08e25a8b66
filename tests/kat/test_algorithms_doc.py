"""docs/algorithms.md is the catalogue, row for row."""

from __future__ import annotations

import re

from ocfpy.crypto.catalogue import all_transforms
from ocfpy.crypto.catalogue import get as get_transform

from .make_algorithms_doc import DOC, render


def test_doc_is_generated_from_the_catalogue() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/algorithms.md is stale: regenerate with (cd tests && python -m kat.make_algorithms_doc)")


def test_doc_lists_every_keyword_once_with_its_ike_id() -> None:
    text = DOC.read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z0-9]+)` \| ([^|]+) \|", text, flags=re.M)
    keywords = [k for k, _ in rows if get_transform(k).keyword == k]
    assert sorted(keywords) == sorted(t.keyword for t in all_transforms())
    for keyword, ike in rows:
        t = get_transform(keyword)
        if t.keyword != keyword:
            continue  # an alias row
        if t.ike_id is None:
            assert ike.strip() == "-"
        else:
            assert ike.startswith(f"{t.ike_id[0].name} {t.ike_id[1]}"), (keyword, ike)
