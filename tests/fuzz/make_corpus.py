"""(Re)generate the seed corpus under tests/fuzz/corpus/<target>/ from real exchanges.

    .venv/bin/python -m tests.fuzz.make_corpus

The seeds are what the unit fixtures produce: the four messages of an establishment, the
plaintext inside their SK payloads, a CHILD_SA rekey and an INFORMATIONAL (DPD, DELETE), ESP
packets of each suite, the TOML the lab writes, one control request per command. Each seed is
written in its target's input format (see tests/fuzz/harnesses.py). The files are committed;
rerun this only when a format changes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct

from tests.fuzz import harnesses as h


def _write(target: str, seeds: list[bytes]) -> int:
    d = h.CORPUS / target
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for s in seeds:
        (d / hashlib.sha1(s).hexdigest()[:16]).write_bytes(s)
    return len(seeds)


def _inner(crypto, raw: bytes) -> tuple[int, int, int, int, bytes]:
    """(exchange, flags, message id, first inner type, plaintext chain) of a sealed message."""
    from ocfpy.ike import codec

    msg = codec.decode(raw)
    sk = msg.sk
    plain = crypto.open(raw, sk.offset, sk.body)
    return raw[18], raw[19], msg.message_id, sk.first_inner, plain


def ike_seeds():
    d = h._dispatcher()
    live = h._Live(d, *h._configs())
    pair = live.pair
    # more traffic on the same SA: a CHILD_SA rekey, a DPD, a CHILD_SA delete
    (child,) = pair.i.sa_list()[0]["children"]
    pair.i.rekey_child(child["unique_id"], pair.now)
    pair.run()
    pair.advance(3600)
    pair.i.terminate("home", pair.now)
    pair.run()
    wire = [(side, raw) for side, raw, _, _ in pair.wire]
    init_req, init_resp = wire[0][1], wire[1][1]
    decode = [raw for _, raw in wire]
    sk, responder, initiator = [], [], []
    for side, raw in wire[2:]:
        crypto = live.to_r if side == "i" else live.to_i
        x, flags, mid, first, plain = _inner(crypto, raw)
        sk.append(bytes((0, x, flags, first, 0)) + plain)
        # as an authenticated input of the engine targets (msgid-choice 0 = the next request)
        seed = bytes((1, x, flags, mid if mid > 3 else {2: 0, 3: 1, 0: 2, 1: 3}[mid], first)) + plain
        (responder if side == "i" else initiator).append(seed)
        # and as the raw datagram it was, SPIs patched in
        (responder if side == "i" else initiator).append(bytes((2,)) + raw)
    responder += [bytes((0,)) + init_req, bytes((8,)) + init_req]
    initiator += [bytes((0x10,)) + init_resp, bytes((0x18,)) + init_resp]
    # an INFORMATIONAL request with nothing inside (a DPD) and one with a DELETE of the IKE SA
    responder += [bytes((1, 37, 0x08, 0, 0)), bytes((1, 37, 0x08, 0, 42)) + bytes((0, 0, 0, 8, 1, 0, 0, 0))]
    initiator += [bytes((1, 37, 0x00, 0, 0))]
    return decode, sk, responder, initiator


def esp_seeds():
    from ocfpy.esp import packet

    t = h.EspDecap()
    seeds = []
    ipv4 = bytes.fromhex("4500001c00000000400100000a0100010a020001") + bytes(8)
    for i, (sa, _esn) in enumerate(t.sas):
        for payload, nh in ((ipv4, packet.NEXT_HEADER_IPV4), (b"", packet.NEXT_HEADER_NONE)):
            wire = sa.encapsulate(5, payload, nh)
            seeds.append(bytes((i, 0)) + wire)
            plain = payload + sa.trailer(len(payload), nh)
            seeds.append(bytes((i, 1)) + plain)
    return seeds


def framing_seeds():
    """esp_framing: outbound batches (IPv4, IPv6, empty payloads), inbound runs of real ESP
    packets and of sealed plaintexts with good and broken trailers, near the 64-bit edge."""
    def fields(*chunks: bytes) -> bytes:
        return b"".join(len(c).to_bytes(2, "big") + c for c in chunks)

    ipv4 = bytes.fromhex("4500001c00000000400100000a0100010a020001") + bytes(8)
    ipv6 = bytes.fromhex("6000000000083a40") + bytes(32) + bytes(8)
    t = h.EspFraming()
    seeds = []
    for suite in range(len(t.sas)):
        sa = t.sas[suite]
        for mode, first in ((7 << 5, 1), (0, 5), (4 | (1 << 3), (3 << 32) | 9),
                            ((2 << 5) | (2 << 3), (1 << 64) - 3)):
            seeds.append(bytes((suite, mode)) + first.to_bytes(8, "big")
                         + fields(ipv4, ipv6, b"", b"x" * 61))
        wires = sa.encapsulate_batch(1, [ipv4, ipv6, b""])
        seeds.append(bytes((suite, 1)) + (1).to_bytes(8, "big")
                     + fields(*wires, wires[0][:20], wires[1][:-1]))
        plains = [ipv4 + b"\x01\x02\x02\x04", b"\x00\x00\x03\x04", b"\x01\x09\x02\x04",
                  b"\x45\x00\x00" + bytes(range(1, 256)) + bytes((255, 41))]
        seeds.append(bytes((suite, 3)) + (7).to_bytes(8, "big") + fields(*plains))
        seeds.append(bytes((suite, 3 | 4)) + ((2 << 32) | 7).to_bytes(8, "big")
                     + fields(*plains))
    return seeds


def config_seeds():
    from ocfpy.lab.iked_toml import Raw, config_toml, connection_toml, daemon_toml, secret_toml

    full = config_toml(
        daemon_toml(backend="openssl", dataplane="none", listen=["10.77.0.1"],
                    cookie_threshold=30, half_open_timeout="5s"),
        connection_toml("t", local_addr="10.77.0.1", remote_addr="10.77.0.2",
                        local_id="a.example", remote_id="b.example",
                        proposals=["aes128gcm16-prfsha256-x25519"], esp_proposals=["aes128gcm16"],
                        children={"net": (["10.1.0.0/24"], ["10.2.0.0/24"])}, dpd_delay="30s",
                        keyingtries=1, retransmit=Raw("{ timeout = 0.5, tries = 3, base = 1.4 }")),
        secret_toml("ike-t", "0sc2VjcmV0", ["a.example", "b.example"]))
    return [full.encode(), b"[daemon]\n", b"[connections.x]\nlocal_addrs = [\"%any\"]\n",
            b'[secrets.s]\nids = ["a"]\nsecret = "0x0102"\n']


def control_seeds():
    lines = [{"cmd": "list"}, {"cmd": "initiate", "name": "home", "wait": 5},
             {"cmd": "terminate", "name": "home"}, {"cmd": "why", "name": "home"},
             {"cmd": "stats"}, {"cmd": "drivers"}, {"cmd": "list", "fail": True}]
    return [json.dumps(x).encode() + b"\n" for x in lines] + [b"[]\n", b'"x"\n', b"{\n"]


def _field(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def peer_auth_seeds() -> list[bytes]:
    """PeerAuth inputs: what a peer's IKE_AUTH carries before its AUTH is verified."""
    from ocfpy.ike import auth_sig, certs
    from tests.pki import three_level

    root, inter, ee = three_level()
    dn = ee.cert.subject.public_bytes()
    out = []
    for hashes, creq, ident, ders in [
        (auth_sig.encode_hash_algorithms(), certs.certreq_data([root.cert]),
         bytes([2]) + b"gw.example.org", [ee.der, inter.der]),
        (b"\x00\x02\x00\x09", bytes(40), bytes([9]) + dn, [ee.der]),
        (b"", b"", bytes([1, 10, 0, 0, 1]), [ee.der, inter.der, root.der]),
        (b"\x00", b"\x01" * 21, bytes([9]) + b"\x30\x03\x06\x01\x00", [b"\x30\x00"]),
    ]:
        out.append(_field(hashes) + _field(creq) + _field(ident)
                   + b"".join(_field(d) for d in ders[:-1]) + ders[-1])
    return out


def fragment_seeds() -> list[bytes]:
    """Fragments inputs: in order, reordered with a duplicate, re-fragmented, bad numbers."""
    def rec(mid, n, t, first, chunk):
        return struct.pack("!BHHBH", mid, n, t, first, len(chunk)) + chunk

    return [
        rec(1, 1, 3, 35, b"a" * 100) + rec(1, 2, 3, 0, b"b" * 100) + rec(1, 3, 3, 0, b"c" * 10),
        rec(1, 2, 2, 0, b"x" * 50) + rec(1, 1, 2, 35, b"y" * 50) + rec(1, 1, 2, 35, b"y" * 50),
        rec(1, 1, 2, 35, b"a" * 300) + rec(1, 1, 4, 35, b"a" * 100) + rec(1, 2, 1, 0, b""),
        rec(2, 0, 0, 0, b"") + rec(2, 1, 65535, 35, b"z") + rec(3, 9, 3, 0, b"q"),
    ]


def offload_seeds() -> list[bytes]:
    """Offload inputs: TUN frames (a TCP and a UDP super-packet, a plain one), decrypted
    packets (a run of three, an odd one), built-run templates, UDP_GRO reads."""
    import sys

    from scapy.layers.inet import IP, TCP, UDP

    from ocfpy.esp.gso import ones_complement_sum

    def frame(pkt: bytes, gso_type: int, size: int, where: int) -> bytes:
        raw = bytearray(pkt)
        seg_len = len(raw) - 20
        pseudo = bytes(raw[12:20]) + struct.pack("!BBH", 0, raw[9], seg_len)
        raw[20 + where:22 + where] = ones_complement_sum(pseudo).to_bytes(2, "big")
        return struct.pack("<BBHHHH", 1, gso_type, 0, size, 20, where) + bytes(raw)

    ip = IP(src="10.0.0.1", dst="10.0.0.2", flags="DF")
    tcp_super = bytes(ip / TCP(sport=1, dport=2, flags="PA", seq=7) / (b"t" * 3000))
    udp_super = bytes(ip / UDP(sport=1, dport=2) / (b"u" * 2500))
    segs = [bytes(ip / TCP(sport=1, dport=2, flags="A", seq=7 + i * 500) / (b"s" * 500))
            for i in range(3)]
    recs = b"".join(struct.pack("!H", len(p)) + p for p in [*segs, b"\x45" * 30])
    gro = (500).to_bytes(4, sys.byteorder) + bytes(8) + b"e" * 1492 + bytes(8) + b"f" * 100
    return [
        b"\x00" + frame(tcp_super, 1, 1000, 16),
        b"\x00" + frame(udp_super, 5, 700, 6),
        b"\x00" + bytes(10) + segs[0],
        b"\x01" + recs,
        b"\x05" + recs,
        b"\x02" + bytes([0x10, 100, 0, 0] * 4 + [0x18, 50, 0, 0] + [0x10, 100, 1, 0] * 3),
        b"\x02" + bytes([0x10, 170, 2, 0] * 5 + [0x10, 170, 2, 255] * 2),
        b"\x03" + gro,
        b"\x03" + (0).to_bytes(4, sys.byteorder) + b"\xff",
    ]


def main() -> None:
    decode, sk, responder, initiator = ike_seeds()
    counts = {
        "ike_decode": _write("ike_decode", decode),
        "ike_sk": _write("ike_sk", sk),
        "ike_responder": _write("ike_responder", responder),
        "ike_initiator": _write("ike_initiator", initiator),
        "esp_decap": _write("esp_decap", esp_seeds()),
        "esp_framing": _write("esp_framing", framing_seeds()),
        "config_load": _write("config_load", config_seeds()),
        "control_line": _write("control_line", control_seeds()),
        "peer_auth": _write("peer_auth", peer_auth_seeds()),
        "fragments": _write("fragments", fragment_seeds()),
        "offload": _write("offload", offload_seeds()),
    }
    for k, v in counts.items():
        print(f"{k}: {v} seeds")


if __name__ == "__main__":
    main()
