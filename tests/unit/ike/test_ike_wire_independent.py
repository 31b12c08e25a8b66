"""Our wire format and NAT-D hashes checked by implementations that are not ours: scapy's IKEv2
dissector and hashlib. (Two ocfpy engines agreeing cannot catch a symmetric mistake.)"""

from __future__ import annotations

import hashlib
import ipaddress

import pytest

from .conftest import I_ADDR, R_ADDR, Pair, make_config

scapy_ikev2 = pytest.importorskip("scapy.contrib.ikev2", reason="scapy is a test dependency")


@pytest.fixture(scope="module")
def wire(dispatcher):
    i = make_config(I_ADDR, R_ADDR, "moon.example.org", "sun.example.org",
                    ike=["aes256-sha256-modp2048"], esp=["aes256-sha256"])
    r = make_config(R_ADDR, I_ADDR, "sun.example.org", "moon.example.org",
                    ike=["aes256-sha256-modp2048"], esp=["aes256-sha256"],
                    local_ts=["10.2.0.0/16"], remote_ts=["10.1.0.0/16"])
    pair = Pair(i, r, dispatcher)
    pair.establish()
    return pair.wire


def _layers(pkt):
    out = []
    p = pkt.payload
    while p is not None and p.__class__.__name__ != "NoPayload":
        out.append(p)
        p = p.payload
    return out


def test_scapy_reads_our_ike_sa_init(wire):
    IKEv2 = scapy_ikev2.IKEv2  # noqa: N806
    req = IKEv2(wire[0][1])
    assert req.exch_type == 34 and req.resp_SPI == bytes(8) and req.length == len(wire[0][1])
    names = [type(x).__name__ for x in _layers(req)]
    assert names[:3] == ["IKEv2_SA", "IKEv2_KE", "IKEv2_Nonce"]
    ke = req[scapy_ikev2.IKEv2_KE]
    assert ke.group == 14 and len(ke.ke) == 256
    trans = req[scapy_ikev2.IKEv2_SA].prop.trans
    got = []
    while trans is not None and type(trans).__name__ == "IKEv2_Transform":
        got.append((trans.transform_type, trans.transform_id, trans.key_length))
        trans = trans.payload
    assert (1, 12, 256) in got and (3, 12, None) in got and (2, 5, None) in got \
        and (4, 14, None) in got
    resp = IKEv2(wire[1][1])
    assert resp.flags == 0x20 and resp.init_SPI == req.init_SPI and resp.resp_SPI != bytes(8)


def test_scapy_reads_our_encrypted_header(wire):
    auth = scapy_ikev2.IKEv2(wire[2][1])
    assert auth.exch_type == 35 and auth.next_payload == 46 and auth.id == 1
    sk = auth[scapy_ikev2.IKEv2_Encrypted]
    assert sk.length == len(wire[2][1]) - 28
    # IV (16) + whole AES blocks + 16-byte HMAC-SHA-256-128 ICV
    assert (sk.length - 4 - 16 - 16) % 16 == 0


def test_nat_detection_hashes_match_rfc_7296_2_23(wire):
    from ocfpy.ike import codec
    from ocfpy.ike.constants import NotifyType

    req = codec.decode(wire[0][1])
    src = req.notify(NotifyType.NAT_DETECTION_SOURCE_IP).data
    dst = req.notify(NotifyType.NAT_DETECTION_DESTINATION_IP).data

    def natd(ip: str, port: int) -> bytes:
        return hashlib.sha1(req.spi_i + bytes(8) + ipaddress.ip_address(ip).packed
                            + port.to_bytes(2, "big")).digest()

    assert src == natd(I_ADDR, 500) and dst == natd(R_ADDR, 500)
