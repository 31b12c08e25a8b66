"""`ocfpy sa list` says why each session's driver serves it (Dispatcher.explain through the
daemon's SA report, then the CLI's drivers column)."""

from __future__ import annotations

from ocfpy.cli.sa import _drivers
from ocfpy.esp.dataplane.base import SaCounters
from ocfpy.esp.dataplane.null import NullDataplane
from ocfpy.iked.daemon import IkeDaemon


class ReportingDataplane(NullDataplane):
    def __init__(self, drivers: dict[str, str]):
        super().__init__()
        self.drivers = drivers

    def counters(self, unique_id: int) -> SaCounters:
        if unique_id not in self.installed:
            raise KeyError(unique_id)
        return SaCounters(drivers=dict(self.drivers))


def _listed(pair, drivers):
    from ocfpy.ike.events import ChildSaEstablished

    daemon = IkeDaemon(pair.i.config, pair.i, ReportingDataplane(drivers),
                       control_path="/nonexistent/iked.sock")
    for event in pair.events["i"]:
        if isinstance(event, ChildSaEstablished):
            daemon._event(event)
    (sa,) = daemon._cmd_list({})
    return sa


def test_ike_and_child_sessions_name_driver_and_reason(initiator_and_responder):
    pair = initiator_and_responder()
    pair.establish()
    sa = _listed(pair, {"in": "openssl", "out": "openssl"})
    # OpenSSL is the only active driver here (no AF_ALG on the host): chosen by kind
    assert set(sa["selection"]) == set(sa["drivers"]) and set(sa["selection"].values()) == {"kind"}
    (child,) = sa["children"]
    assert child["selection"] == {"in": "kind", "out": "kind"}
    assert _drivers(child) == "openssl (kind)"
    assert "encr: openssl (kind)" in _drivers(sa) and "ke: openssl (kind)" in _drivers(sa)

    sa = _listed(pair, {"in": "kernel:rfc4106-gcm-aesni", "out": "openssl"})
    (child,) = sa["children"]
    assert child["selection"] == {"in": "kernel", "out": "kind"}
    assert _drivers(child) == ("in: kernel:rfc4106-gcm-aesni, out: openssl "
                               "(in: kernel, out: kind)")
