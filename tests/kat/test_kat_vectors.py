"""The KAT runner: every driver x every transform x every vector file, through dispatcher
sessions and through the driver's raw contexts.

Drivers come from OCFPY_KAT_DRIVERS (comma list of driver names), or else every driver the
entry points make active here. The same file runs inside the kernel VM for af_alg
(``OCFPY_KAT_DRIVERS=af_alg pytest tests/kat``). A driver that does not offer a transform is
skipped for it with that reason; nothing here knows any driver by name.
"""

from __future__ import annotations

import os
from collections import defaultdict
from functools import cache

import pytest

from ocfpy.crypto.catalogue import get as get_transform
from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.crypto.registry import DriverStatus, Registry
from ocfpy.crypto.selftest import check_vector

from .cases import LOADERS, KatCase
from .sources import MissingVectors

ENV = "OCFPY_KAT_DRIVERS"

# The VM lane (tests/vm/run.py) boots a kernel with AF_ALG, sets OCFPY_VM_LANE=1 and
# OCFPY_KAT_DRIVERS, and selects tests with -m "kernel or virtio": there, this runner is
# kernel-lane work and carries the marker; on the host it is plain unit-lane work.
LANE_MARKS = [pytest.mark.kernel] if os.environ.get("OCFPY_VM_LANE") == "1" else []


@cache
def registry() -> Registry:
    return Registry.load()


def driver_names() -> list[str]:
    wanted = os.environ.get(ENV, "").strip()
    if wanted:
        return [name.strip() for name in wanted.split(",") if name.strip()]
    return [r.name for r in registry().active()]


@cache
def cases_by_file() -> dict[str, dict[str, list[KatCase]]]:
    """file id -> keyword -> cases; a file whose package is missing maps to {}."""
    out: dict[str, dict[str, list[KatCase]]] = {}
    for file_id, load in LOADERS.items():
        grouped: dict[str, list[KatCase]] = defaultdict(list)
        try:
            for case in load():
                grouped[case.keyword].append(case)
        except MissingVectors:
            pass
        out[file_id] = dict(grouped)
    return out


def _params() -> list:
    params = []
    names = driver_names()
    if not names:  # never an empty (silently skipped) parameter set
        params.append(pytest.param("(none)", "-", "-", id="no-active-driver", marks=LANE_MARKS))
    for driver in names:
        for file_id, by_keyword in cases_by_file().items():
            if not by_keyword:
                params.append(pytest.param(driver, "-", file_id, id=f"{driver}-{file_id}",
                                           marks=LANE_MARKS))
            for keyword in sorted(by_keyword):
                params.append(pytest.param(driver, keyword, file_id,
                                           id=f"{driver}-{keyword}-{file_id}", marks=LANE_MARKS))
    return params


@pytest.mark.parametrize(("driver", "keyword", "file_id"), _params())
def test_known_answers(driver: str, keyword: str, file_id: str) -> None:
    if driver == "(none)":
        pytest.fail("no driver is active here: " + "; ".join(
            f"{r.name}: {r.status.value} ({r.reason})" for r in registry().records()))
    if keyword == "-":
        try:
            list(LOADERS[file_id]())
        except MissingVectors as exc:
            pytest.skip(str(exc))
        pytest.fail(f"{file_id} yields no case for any catalogue transform")
    record = registry().get(driver)
    if record is None:
        pytest.skip(f"driver {driver!r} is not registered here ({ENV} names it)")
    if record.status is not DriverStatus.ACTIVE:
        pytest.skip(f"driver {driver!r} is {record.status.value}: {record.reason}")
    transform = get_transform(keyword)
    if keyword in record.quarantined:
        pytest.fail(f"{driver} offers {keyword} but failed its self-test: "
                    f"{record.quarantined[keyword]}")
    if not record.serves(transform):
        pytest.skip(f"driver {driver!r} does not offer {keyword}")
    dispatcher = Dispatcher(registry(), backend=driver)

    def open_session(t, key):
        return dispatcher.open(t, key=key)

    # Both layers: the session (which may call a one-shot context's C function itself) and
    # the driver's raw context (what admission tests and what a migration lands on).
    openers = {"session": open_session, "context": record.driver.new_context}
    failures = []
    cases = cases_by_file()[file_id][keyword]
    for case in cases:
        for layer, opener in openers.items():
            if layer == "context" and "seed" in case.vector:
                continue  # prf+ lives in PrfSession, contexts only have prf()
            try:
                check_vector(opener, transform, case.vector)
            except Exception as exc:
                failures.append(f"{case.case} [{layer}]: {type(exc).__name__}: {exc}")
    assert not failures, (f"{len(failures)} checks of {len(cases)} cases failed on {driver}:\n"
                          + "\n".join(failures[:10]))
