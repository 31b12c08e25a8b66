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
    # Fixed since (issue 13): finding 7, ike_responder/finding7-reversed-ts, a reversed
    # traffic selector that raised while building TS_UNACCEPTABLE; it now replays clean.
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


# Issue 13's rule at the engine, without root: raw datagrams an outsider writes with nothing
# but the live SA's SPIs (mode byte 2: the harness writes the SPIs over bytes 0..15). With the
# strict oracle (FUZZ_STRICT_UNAUTH) the engine targets fail if such a message is answered or
# changes `sa list`. Before issue 13's fix the engine answered each of them (findings 1 and 2).
def _forged() -> list:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "net"))
    from attacker import ike_sa_init_request, informational_no_sk, short_sk

    spi = bytes(8)
    rows = [  # findings 1 (the first three) and 2
        ("no-sk", informational_no_sk(spi, spi, 2, initiator=True)),
        ("short-sk", short_sk(spi, spi, 2, initiator=True)),
        ("plaintext-before-sk", short_sk(spi, spi, 2, initiator=True, plaintext_first=True)),
        ("ike-sa-init-live-spis", ike_sa_init_request(spi, spi, message_id=2)),
    ]
    return [pytest.param(raw, id=name) for name, raw in rows]


@pytest.mark.parametrize("side", ["ike_responder", "ike_initiator"])
@pytest.mark.parametrize("raw", _forged())
def test_unauthenticated_message_changes_nothing(side, raw):
    target = TARGETS[side]()
    target.strict = True
    # initiator side: the forger claims to be the responder (I flag clear), whose first
    # request has message ID 0 (the responder side's next expected one is 2)
    if side == "ike_initiator":
        raw = raw[:19] + bytes((raw[19] & ~0x08,)) + bytes(4) + raw[24:]
    target(bytes((2,)) + raw)
