"""The chain builder remembers verified (certificate, issuer) signatures as strongSwan's
cert_cache does, and nothing else: a failed verification is not remembered, the memory is
bounded, and every other check still runs on each validation."""

from __future__ import annotations

import datetime as dt

from ocfpy.ike import certs
from ocfpy.lab import pki


def test_verified_signatures_are_remembered_and_bounded(monkeypatch):
    now = dt.datetime.now(dt.UTC)
    root = pki.issue("cache root", ca=True, now=now)
    other = pki.issue("cache root", ca=True, now=now)  # same name, another key
    ee = pki.issue("gw.example.org", root, now=now)
    monkeypatch.setattr(certs, "_VERIFIED", certs.OrderedDict())
    assert certs._issued_by(ee.cert, root.cert) and certs._issued_by(ee.cert, root.cert)
    assert len(certs._VERIFIED) == 1
    # a forged issuer (same name, other key) fails every time and leaves nothing behind
    assert not certs._issued_by(ee.cert, other.cert)
    assert not certs._issued_by(ee.cert, other.cert)
    assert len(certs._VERIFIED) == 1
    monkeypatch.setattr(certs, "_VERIFIED_MAX", 3)
    for i in range(5):
        e = pki.issue(f"gw{i}.example.org", root, now=now)
        assert certs._issued_by(e.cert, root.cert)
    assert len(certs._VERIFIED) == 3


def test_a_remembered_signature_does_not_skip_the_other_checks():
    """The second validation of the same certificate, now expired, still fails on time."""
    now = dt.datetime.now(dt.UTC)
    root = pki.issue("cache root 2", ca=True, now=now)
    ee = pki.issue("gw.example.org", root, now=now)
    ok = certs.validate_chain(ee.cert, [], [root.cert], now=now)
    assert ok, ok.reason
    later = certs.validate_chain(ee.cert, [], [root.cert], now=now + 400 * pki.DAY)
    assert not later and "expired on" in later.reason
