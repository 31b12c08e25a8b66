"""The strongSwan benchmark functions run end to end (small sizes) and report sane figures."""

from __future__ import annotations

import pytest

from ocfpy.bench import strongswan

pytestmark = pytest.mark.interop


def test_ike_establishment_rate_small(charon_ok: None) -> None:
    r = strongswan.ike_establishment_rate(20, sequential=2, timeout=30)
    assert r.established == 20, r.notes
    assert not r.notes
    assert r.rate_per_s > 0 and r.sequential_ms > 0
    assert r.strongswan.startswith("strongSwan 5.")


def test_esp_throughput_small(charon_ok: None) -> None:
    r = strongswan.esp_throughput(seconds=1)
    assert r.encapsulated
    assert not r.notes, r.notes  # includes the proof that traffic crossed the SA
    assert r.tcp_mbit_s > 1 and r.udp64_pps > 100 and r.ping_ms > 0
