"""Every input a fuzzer ever crashed a target with, replayed through the same harness.

tests/fuzz/regressions/<target>/<name> holds the inputs (the files libFuzzer left in
results/fuzz/). A finding whose fix is someone else's is listed in KNOWN with the issue it
belongs to: its test is xfail(strict=True), so it fails CI as an XPASS the day the fix lands
until the entry here is removed. The seed corpus is replayed too: a seed that trips its own
harness would make every fuzz run start from a crash.
"""

from __future__ import annotations

import pytest

from tests.fuzz.harnesses import CORPUS, REGRESSIONS, TARGETS

pytestmark = pytest.mark.fuzz

# "target/file name" -> why it still fails (the issue and what the fix must do)
KNOWN: dict[str, str] = {
    # An authenticated CREATE_CHILD_SA whose TSi has start 10.1.255.255 > end 10.1.0.0:
    # child_create.process_r formats the selectors for TS_UNACCEPTABLE, TrafficSelector.__str__
    # -> networks() -> ipaddress.summarize_address_range raises ValueError; the engine counts an
    # internal error and the request gets no answer.
    "ike_responder/finding7-reversed-ts":
        "issue 13 finding 7: a reversed traffic selector raises while building TS_UNACCEPTABLE",
}

_targets: dict[str, object] = {}


def _target(name: str):
    if name not in _targets:
        _targets[name] = TARGETS[name]()
    return _targets[name]


def _inputs(root):
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("*/*") if p.is_file() and p.parent.name in TARGETS)


def _params(root, known: dict[str, str]):
    out = []
    for p in _inputs(root):
        key = f"{p.parent.name}/{p.name}"
        marks = [pytest.mark.xfail(strict=True, reason=known[key])] if key in known else []
        out.append(pytest.param(p, id=key, marks=marks))
    return out


@pytest.mark.parametrize("path", _params(REGRESSIONS, KNOWN))
def test_regression(path):
    _target(path.parent.name)(path.read_bytes())


def test_every_known_finding_has_its_input():
    present = {f"{p.parent.name}/{p.name}" for p in _inputs(REGRESSIONS)}
    assert set(KNOWN) <= present, sorted(set(KNOWN) - present)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_seed_corpus_replays_clean(target):
    seeds = sorted((CORPUS / target).glob("*"))
    assert seeds, f"no seed corpus for {target} under {CORPUS / target}"
    run = _target(target)
    for p in seeds:
        run(p.read_bytes())
