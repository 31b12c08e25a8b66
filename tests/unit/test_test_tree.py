"""The test tree itself: pytest imports test modules by basename where a folder has no
__init__.py (tests/net, tests/unit, tests/kernel), so two test files with one name make the
whole run stop at collection (it did once, in the VM lane)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_name_is_unique() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        seen[path.name].append(str(path.relative_to(TESTS)))
    assert not {name: paths for name, paths in seen.items() if len(paths) > 1}
