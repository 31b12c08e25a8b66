"""The daemon's side of the engine API: events dispatched by type to the dataplane, and the
SA report's CHILD_SA driver taken from the dataplane that installed it (the engine claims none)."""

from __future__ import annotations

from ocfpy.esp.dataplane.base import SaCounters
from ocfpy.esp.dataplane.null import NullDataplane
from ocfpy.ike.events import ChildSaClosed, ChildSaEstablished
from ocfpy.iked.daemon import IkeDaemon


class ReportingDataplane(NullDataplane):
    """NullDataplane plus the per-direction driver names a kernel dataplane reports (the real
    XFRM and userspace dataplanes need root; tests/net and tests/kernel run those)."""

    def __init__(self, drivers: dict[str, str]):
        super().__init__()
        self.drivers = drivers

    def counters(self, unique_id: int) -> SaCounters:
        if unique_id not in self.installed:
            raise KeyError(unique_id)
        return SaCounters(drivers=dict(self.drivers))


def _daemon(pair, dataplane) -> IkeDaemon:
    daemon = IkeDaemon(pair.i.config, pair.i, dataplane, control_path="/nonexistent/iked.sock")
    for event in pair.events["i"]:
        daemon._event(event)
    return daemon


def test_events_reach_the_dataplane_by_type(initiator_and_responder):
    pair = initiator_and_responder()
    pair.establish()
    dataplane = NullDataplane()
    daemon = _daemon(pair, dataplane)
    (spec,) = [e.spec for e in pair.of_type("i", ChildSaEstablished)]
    assert list(dataplane.installed) == [spec.unique_id]
    assert daemon.stats["event_ChildSaEstablished"] == 1
    daemon._event(ChildSaClosed(1, spec.unique_id, "test"))
    assert dataplane.installed == {}


def test_child_driver_is_the_dataplanes(initiator_and_responder):
    pair = initiator_and_responder()
    pair.establish()
    (sa,) = _daemon(pair, NullDataplane())._cmd_list({})
    (child,) = sa["children"]
    assert child["dataplane"]["name"] == "none"
    assert child["driver"] is None  # nothing carries the traffic: no driver is claimed

    kernel = {"in": "kernel:rfc4106-gcm-aesni", "out": "kernel:rfc4106-gcm-aesni"}
    (sa,) = _daemon(pair, ReportingDataplane(kernel))._cmd_list({})
    assert sa["children"][0]["driver"] == "kernel:rfc4106-gcm-aesni"

    split = {"in": "openssl", "out": "kernel:gcm-aes-generic"}
    (sa,) = _daemon(pair, ReportingDataplane(split))._cmd_list({})
    assert sa["children"][0]["driver"] == "in: openssl, out: kernel:gcm-aes-generic"


def test_a_child_the_dataplane_does_not_hold_has_no_driver(initiator_and_responder):
    pair = initiator_and_responder()
    pair.establish()
    daemon = IkeDaemon(pair.i.config, pair.i, ReportingDataplane({"in": "x", "out": "x"}),
                       control_path="/nonexistent/iked.sock")  # the install event never came
    (sa,) = daemon._cmd_list({})
    assert sa["children"][0]["driver"] is None and "dataplane" not in sa["children"][0]
