"""Traffic selectors to XFRM selectors: exact coverage, never broader than IKE negotiated."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocfpy.esp.dataplane.select import DataplaneUnavailable, choose_dataplane
from ocfpy.esp.dataplane.xfrm_selectors import MAX_SELECTORS, port_blocks, priority, selectors
from ocfpy.esp.spec import TrafficSelector


@settings(deadline=None)  # the machine is shared: time is not what this test is about
@given(st.integers(0, 65535), st.integers(0, 65535))
def test_port_blocks_cover_the_range_exactly(a, b):
    start, end = min(a, b), max(a, b)
    intervals = []
    for port, mask in port_blocks(start, end):
        size = 65536 if (port, mask) == (0, 0) else (~mask & 0xFFFF) + 1
        assert port & (size - 1) == 0  # aligned: the kernel compares port & mask
        intervals.append((port, port + size - 1))
    intervals.sort()
    assert intervals[0][0] == start and intervals[-1][1] == end
    for (_, prev_end), (next_start, _) in zip(intervals, intervals[1:], strict=False):
        assert next_start == prev_end + 1  # contiguous, no overlap, no gap


def test_port_blocks_examples():
    assert port_blocks(0, 65535) == [(0, 0)]
    assert port_blocks(80, 80) == [(80, 0xFFFF)]
    assert port_blocks(1024, 2047) == [(1024, 0xFC00)]
    assert port_blocks(1, 3) == [(1, 0xFFFF), (2, 0xFFFE)]


def _ts(net: str, proto: int = 0, ports: tuple[int, int] = (0, 65535)) -> TrafficSelector:
    return TrafficSelector.from_network(net, proto, ports)


def test_address_range_becomes_its_cidr_blocks():
    odd = TrafficSelector(ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.6"))
    sels = selectors([_ts("192.168.1.0/24")], [odd])
    assert sorted((str(s.dst), s.dst_prefix) for s in sels) == [
        ("10.0.0.1", 32), ("10.0.0.2", 31), ("10.0.0.4", 31), ("10.0.0.6", 32)]
    assert all(s.src_prefix == 24 and s.family == socket.AF_INET for s in sels)


def test_mismatched_versions_and_protocols_pair_up_only_where_they_agree():
    sels = selectors([_ts("10.0.0.0/8"), _ts("fd00::/64")],
                     [_ts("10.1.0.0/16", 6), _ts("fd01::/64", 17)])
    assert {(s.family, s.proto) for s in sels} == {(socket.AF_INET, 6), (socket.AF_INET6, 17)}
    assert selectors([_ts("10.0.0.0/8", 6)], [_ts("10.1.0.0/16", 17)]) == []


def test_icmp_type_and_code_go_to_the_port_fields():
    echo = _ts("10.0.0.0/8", 1, (8 << 8, 8 << 8))  # echo request, code 0
    (sel,) = selectors([echo], [_ts("10.1.0.0/16")])
    assert (sel.proto, sel.sport, sel.sport_mask, sel.dport, sel.dport_mask) == (1, 8, 0xFFFF, 0, 0xFFFF)


def test_too_many_selectors_is_an_error():
    many = [TrafficSelector(ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.254"),
                            6, 1, 65534)]
    with pytest.raises(ValueError, match=f"at most {MAX_SELECTORS}"):
        selectors(many, many)


def test_more_specific_policies_get_a_lower_priority_value():
    host = selectors([_ts("10.0.0.1/32")], [_ts("10.1.0.1/32")])[0]
    net = selectors([_ts("10.0.0.0/8")], [_ts("10.1.0.0/16")])[0]
    port = selectors([_ts("10.0.0.0/8", 6, (80, 80))], [_ts("10.1.0.0/16", 6)])[0]
    assert priority(host) < priority(port) < priority(net)


def test_selection_refuses_unknown_names():
    with pytest.raises(DataplaneUnavailable, match="unknown dataplane 'kernel'.*auto, xfrm"):
        choose_dataplane("kernel")


def test_none_must_be_named_and_is_the_null_dataplane():
    pytest.importorskip("ocfpy.esp.dataplane.null", reason="no null dataplane (ike-daemon)")
    assert choose_dataplane("none").name == "none"
