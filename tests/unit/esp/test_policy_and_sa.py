"""SPD lookups, the inbound selector check, RFC 3948 demux, lifetimes and sequence exhaustion."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from ocfpy.esp.sad import Expiry, Lifetime, build_outbound
from ocfpy.esp.spd import InboundCheck, PolicyTable, flow
from ocfpy.esp.spec import TrafficSelector
from ocfpy.esp.udpencap import Kind, classify
from ocfpy.lab.static_tunnel import parse_esp, static_spec


def ts(net: str, proto: int = 0, ports: tuple[int, int] = (0, 65535)) -> TrafficSelector:
    return TrafficSelector.from_network(net, proto, ports)


def test_flow_parses_v4_v6_and_ports():
    p = bytes(IP(src="10.1.0.1", dst="10.2.0.1") / TCP(sport=1234, dport=80))
    assert flow(p)[2:] == (6, 1234, 80)
    p6 = bytes(IPv6(src="fd00::1", dst="fd01::1") / UDP(sport=53, dport=5353))
    assert flow(p6)[2:] == (17, 53, 5353)
    assert flow(b"") is None and flow(b"\x45" + b"\x00" * 10) is None and flow(b"\x10" * 40) is None
    frag = bytes(IP(src="10.1.0.1", dst="10.2.0.1", frag=100, proto=6) / (b"x" * 20))
    assert flow(frag)[2:] == (6, 0, 0)  # no ports in a non-first fragment


def test_policy_lookup_newest_wins_and_cache_is_invalidated():
    spd: PolicyTable[str] = PolicyTable()
    pkt = bytes(IP(src="10.1.0.5", dst="10.2.3.4") / ICMP())
    assert spd.lookup(pkt) is None
    spd.add(1, [ts("10.1.0.0/16")], [ts("10.2.0.0/16")], "old")
    assert spd.lookup(pkt) == "old"
    spd.add(2, [ts("10.1.0.0/16")], [ts("10.2.0.0/16")], "rekeyed")
    assert spd.lookup(pkt) == "rekeyed"
    spd.remove(2)
    assert spd.lookup(pkt) == "old"
    other = bytes(IP(src="10.1.0.5", dst="10.3.0.1") / ICMP())
    assert spd.lookup(other) is None
    spd.remove(1)
    assert spd.lookup(pkt) is None


def test_policy_with_ports():
    spd: PolicyTable[str] = PolicyTable()
    spd.add(1, [ts("10.1.0.0/16")], [ts("10.2.0.0/16", 6, (443, 443))], "https")
    web = bytes(IP(src="10.1.0.5", dst="10.2.0.9") / TCP(sport=40000, dport=443))
    ssh = bytes(IP(src="10.1.0.5", dst="10.2.0.9") / TCP(sport=40000, dport=22))
    dns = bytes(IP(src="10.1.0.5", dst="10.2.0.9") / UDP(sport=40000, dport=443))
    assert spd.lookup(web) == "https"
    assert spd.lookup(ssh) is None and spd.lookup(dns) is None


def test_inbound_check_is_the_mirror_image():
    check = InboundCheck([ts("10.1.0.0/16")], [ts("10.2.0.0/16")])
    assert check.allows(bytes(IP(src="10.2.0.1", dst="10.1.0.1") / ICMP()))
    assert not check.allows(bytes(IP(src="10.1.0.1", dst="10.2.0.1") / ICMP()))
    assert not check.allows(bytes(IP(src="10.9.0.1", dst="10.1.0.1") / ICMP()))
    assert not check.allows(b"\x45")


@pytest.mark.parametrize("data,kind", [
    (b"\xff", Kind.KEEPALIVE),
    (b"\x00\x00\x00\x00" + b"i" * 28, Kind.IKE),
    (b"\x00\x00\x00\x00", Kind.MALFORMED),
    (b"\x01\x02\x03", Kind.MALFORMED),
    (b"\x00\x00\x10\x01" + b"\x00" * 30, Kind.ESP),
])
def test_rfc3948_demux(data, kind):
    assert classify(data) is kind


def test_lifetime_soft_then_hard_once():
    life = Lifetime(hard_packets=10)
    seen = [life.consume(1, 100) for _ in range(12)]
    kinds = [s[0] for s in seen if s]
    assert kinds[0] is Expiry.SOFT and seen.index(next(s for s in seen if s)) == 8
    assert seen[9][0] is Expiry.HARD
    assert Lifetime().consume(10**9, 10**12) is None  # unlimited
    by_bytes = Lifetime(hard_bytes=1000)
    assert by_bytes.consume(1, 899) is None
    assert by_bytes.consume(1, 1)[0] is Expiry.SOFT  # 900 bytes: 90%
    assert by_bytes.consume(1, 50) is None  # soft is reported once
    kind, reason = by_bytes.consume(1, 50)
    assert kind is Expiry.HARD and "bytes" in reason


def test_sequence_numbers_never_cycle(dispatcher):
    spec = static_spec("a", local="192.0.2.1", remote="192.0.2.2", local_ts=["10.1.0.0/16"],
                       remote_ts=["10.2.0.0/16"], seed="x")
    sa = build_outbound(spec, dispatcher, 1)
    sa.seqs.cells[sa.seqs.index] = 0xFFFFFFFF - 3
    assert sa.take_seqs(10) == (0xFFFFFFFF - 3, 3)
    assert sa.seq == 0xFFFFFFFF
    assert sa.take_seqs(1) == (0xFFFFFFFF, 0)
    esn_spec = static_spec("a", local="192.0.2.1", remote="192.0.2.2",
                           local_ts=["10.1.0.0/16"], remote_ts=["10.2.0.0/16"], seed="x",
                           esp="aes128gcm16-esn")
    esn = build_outbound(esn_spec, dispatcher, 1)
    esn.seqs.cells[esn.seqs.index] = 0xFFFFFFFF
    assert esn.take_seqs(5) == (0xFFFFFFFF, 5)  # ESN goes on past 2^32


def test_parse_esp_proposals():
    assert parse_esp("aes128gcm16") == ("aes128gcm16", None, False)
    assert parse_esp("aes256-sha256-esn") == ("aes256", "sha256", True)
    assert parse_esp("aes256") == ("aes256", "sha256", False)
    assert parse_esp("chacha20poly1305-noesn") == ("chacha20poly1305", None, False)
