"""Fixtures of the strongSwan interop lane: namespaces ``oss-moon``/``oss-sun`` joined by
``oss-moon0``/``oss-sun0`` (ocfpy.lab.netlab.moon_and_sun), a charon in each (own strongswan.conf, vici socket and /run, files
under /tmp/oss-*), always torn down. Tests skip with the reason when charon, root or the
vici package is missing."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocfpy.lab.charon import Charon, unavailable_reason
from ocfpy.lab.netlab import HostPair, moon_and_sun

from .ocfpy_peer import Iked
from .peers import Peers

PREFIX = "oss"
PSK = "interop-psk-0123456789"
MOON_ID, SUN_ID = "moon.oss.test", "sun.oss.test"


@pytest.fixture(scope="session")
def charon_ok() -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"strongSwan interop lane unavailable: {reason}")


@pytest.fixture
def workdir(request: pytest.FixtureRequest) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{request.node.name[:40]}-"))
    yield path
    # Keep the logs of a failed test for the engineer; drop the rest.
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.passed or hasattr(rep, "wasxfail"):
        shutil.rmtree(path, ignore_errors=True)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]
    return rep


@pytest.fixture
def pair(charon_ok: None) -> Iterator[HostPair]:
    with moon_and_sun(PREFIX) as p:
        yield p


@pytest.fixture
def moon_charon(pair: HostPair, workdir: Path) -> Iterator[Charon]:
    with Charon(pair.left, workdir / "moon", ike_log=2) as c:
        c.load_psk(PSK, [MOON_ID, SUN_ID])
        yield c


@pytest.fixture
def sun_charon(pair: HostPair, workdir: Path) -> Iterator[Charon]:
    with Charon(pair.right, workdir / "sun", ike_log=2) as c:
        c.load_psk(PSK, [MOON_ID, SUN_ID])
        yield c


@pytest.fixture(scope="session")
def ocfpy_ok(charon_ok: None) -> None:
    from .ocfpy_peer import unavailable_reason as ocfpy_unavailable

    reason = ocfpy_unavailable()
    if reason:
        pytest.skip(f"ocfpy daemon unavailable: {reason}")


@pytest.fixture
def peers(ocfpy_ok: None, pair: HostPair, workdir: Path) -> Iterator[Peers]:
    """ocfpy (not started yet: the test configures it) in oss-moon, charon in oss-sun."""
    iked = Iked(pair.left, workdir / "ocfpy")
    with Charon(pair.right, workdir / "charon", ike_log=2) as charon:
        try:
            yield Peers(pair, iked, charon, workdir)
        finally:
            iked.stop()
