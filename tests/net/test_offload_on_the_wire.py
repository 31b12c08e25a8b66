"""Issue 17: offloaded super-packets produce exactly the segments and checksums the kernel
would, read off the wire and decrypted by an independent implementation (scapy's ESP).

The same TCP transfer (known bytes: tcp_transfer's seeded stream) runs twice through a static
tunnel (ocfpy.lab.static_tunnel: the keys are known to the test from the seed, as a daemon's
are not), once with the per-run offloads (TUN TSO/USO, segmentation in ocfpy, UDP GSO runs on
the ESP-in-UDP socket, GRO-like coalescing on the way in) and once without (the kernel cuts
every segment before the TUN). Each time the outer link is captured on the receiving side,
every ESP packet of the a->b SA is decrypted with scapy, and the inner segments must:
- carry exactly the bytes the source sent at their sequence numbers (every captured byte
  compared; most of the stream captured);
- have valid IPv4 header and TCP checksums, and be at most the tunnel MTU (1400) long, in ESP
  packets no larger than the link MTU (a UDP GSO run is cut back into its datagrams first,
  as the receiving socket would: by trial decryption, the ICV tells the right length);
- be cut at the same segment size in both runs (the MSS), with IPv4 IDs counting up as often
  as the kernel's own segmentation makes them, and ESP sequence numbers strictly increasing.
The run with offloads must also show that they ran: super-packets (larger than the MTU) on
a's TUN, and with ESP-in-UDP, UDP GSO runs on the wire; the run without shows neither.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest

from ocfpy.lab.netlab import Lab, can_build_lab, tcp_transfer, transfer_stream
from ocfpy.lab.static_tunnel import SPI_A_TO_B, StaticTunnel, static_spec

pytestmark = pytest.mark.net

why = can_build_lab()
if why:
    pytest.skip(f"namespace lab unavailable: {why}", allow_module_level=True)
pytest.importorskip("scapy.layers.ipsec")

from tests.interop.capture import Capture  # noqa: E402

SIZE = 10 * 10**6
SEED = "issue-17-offload-capture"
MTU = 1400  # the static tunnel's TUN MTU
LINK_MTU = 1500  # the veth's
ESP = "aes128gcm16"


def _ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@dataclasses.dataclass
class Wire:
    """What one capture held, decrypted: the a->b inner TCP segments in wire order."""

    segments: list[tuple[int, int, int, bytes]] = dataclasses.field(default_factory=list)
    # (ESP sequence number, IPv4 ID, TCP sequence number, TCP payload)
    isn: int | None = None
    mss_option: int | None = None
    timestamps: bool = False
    bad_ip_csum: int = 0
    bad_tcp_csum: int = 0
    largest_inner: int = 0
    largest_esp_datagram: int = 0  # outer IP length of one ESP packet (after cutting runs)
    gso_runs: int = 0  # capture records that held several ESP datagrams (UDP GSO)
    esp_packets: int = 0


def _esp_blobs(path: Path, encap: bool, wire: Wire, decrypt) -> list[bytes]:
    """Every ESP packet of the a->b SA, in capture order; a UDP GSO run (one record, several
    equal-sized datagrams, the last maybe shorter) is cut at the length that decrypts."""
    from scapy.layers.inet import IP, UDP
    from scapy.utils import PcapReader

    out, seg_len = [], 0
    for pkt in PcapReader(str(path)):
        if IP not in pkt:
            continue
        ip = pkt[IP]
        if encap:
            if UDP not in ip or ip[UDP].dport != 4500:
                continue
            blob = bytes(ip[UDP].payload)
            overhead = 28  # outer IPv4 + UDP per datagram
        else:
            if ip.proto != 50:
                continue
            blob = bytes(ip.payload)
            overhead = 20
        if len(blob) < 8 or int.from_bytes(blob[:4], "big") != SPI_A_TO_B:
            continue
        if len(blob) + overhead > LINK_MTU:  # a run: find its datagram size once, then cut
            wire.gso_runs += 1
            if not (seg_len and decrypt(blob[:seg_len]) is not None):
                seg_len = next((n for n in range(LINK_MTU - overhead, 16, -4)
                                if decrypt(blob[:n]) is not None), 0)
                assert seg_len, f"no datagram length decrypts in a run of {len(blob)} bytes"
            pieces = [blob[i:i + seg_len] for i in range(0, len(blob), seg_len)]
        else:
            pieces = [blob]
        for p in pieces:
            wire.largest_esp_datagram = max(wire.largest_esp_datagram, len(p) + overhead)
            out.append(p)
    return out


def _read_wire(path: Path, encap: bool, key: bytes, inner: tuple[str, str]) -> Wire:
    from scapy.layers.inet import IP
    from scapy.layers.ipsec import ESP as ScapyESP
    from scapy.layers.ipsec import SecurityAssociation

    sa = SecurityAssociation(ScapyESP, spi=SPI_A_TO_B, crypt_algo="AES-GCM", crypt_key=key,
                             tunnel_header=IP(src=StaticTunnel.OUTER[0],
                                              dst=StaticTunnel.OUTER[1]))

    def decrypt(esp: bytes) -> bytes | None:
        packet = IP(src=StaticTunnel.OUTER[0], dst=StaticTunnel.OUTER[1], proto=50) / \
            ScapyESP(esp)
        try:
            return bytes(sa.decrypt(IP(bytes(packet))))
        except Exception:  # scapy: IPSecIntegrityError, or garbage from a wrong length
            return None

    wire = Wire()
    for esp in _esp_blobs(path, encap, wire, decrypt):
        plain = decrypt(esp)
        assert plain is not None, f"ESP packet of {len(esp)} bytes does not decrypt"
        wire.esp_packets += 1
        esp_seq = int.from_bytes(esp[4:8], "big")
        ihl = (plain[0] & 0x0F) * 4
        total, ip_id, proto = struct.unpack_from("!H H", plain, 2) + (plain[9],)
        assert total == len(plain), (total, len(plain))  # no padding left behind
        wire.largest_inner = max(wire.largest_inner, total)
        if _ones_sum(plain[:ihl]) != 0xFFFF:
            wire.bad_ip_csum += 1
        src, dst = plain[12:16], plain[16:20]
        if proto != 6 or [".".join(map(str, src)), ".".join(map(str, dst))] != list(inner):
            continue
        tcp = plain[ihl:]
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
        if _ones_sum(pseudo + tcp) != 0xFFFF:
            wire.bad_tcp_csum += 1
        seq = int.from_bytes(tcp[4:8], "big")
        flags, doff = tcp[13], (tcp[12] >> 4) * 4
        if flags & 0x02:  # SYN: the ISN, and the options that fix the MSS
            wire.isn = seq
            opts, i = tcp[20:doff], 0
            while i < len(opts) and opts[i] != 0:
                if opts[i] == 1:
                    i += 1
                    continue
                kind, length = opts[i], opts[i + 1]
                if kind == 2:
                    wire.mss_option = int.from_bytes(opts[i + 2:i + 4], "big")
                wire.timestamps |= kind == 8
                i += max(length, 2)
            continue
        wire.segments.append((esp_seq, ip_id, seq, tcp[doff:]))
    return wire


def _check_stream(wire: Wire, stream: bytes) -> float:
    """Every captured payload byte equals the source's byte at its offset; returns the
    fraction of the stream the capture held."""
    assert wire.isn is not None, "the SYN was not captured"
    covered = bytearray(len(stream))
    for _esp_seq, _id, seq, payload in wire.segments:
        if not payload:
            continue
        off = (seq - wire.isn - 1) % (1 << 32)
        assert stream[off:off + len(payload)] == payload, \
            f"{len(payload)} bytes at stream offset {off} differ from what was sent"
        covered[off:off + len(payload)] = b"\1" * len(payload)
    return covered.count(1) / len(stream)


def _step_one(wire: Wire) -> float:
    ids = [s[1] for s in wire.segments]
    steps = [(b - a) % 65536 for a, b in zip(ids, ids[1:], strict=False)]
    return sum(s == 1 for s in steps) / max(len(steps), 1)


def _run(tmp_path: Path, encap: bool, offload: bool) -> tuple[Wire, int]:
    with Lab("oocw") as lab, StaticTunnel(lab, esp=ESP, encap=encap, offload=offload,
                                          tun="oocw0", mtu=MTU) as tun:
        outer = tmp_path / f"outer-{offload}.pcap"
        tun_cap = tmp_path / f"tun-{offload}.pcap"
        bpf = "udp port 4500" if encap else "ip proto 50"
        a_tun = dataclasses.replace(tun.a, ifname=tun.tun)
        # the TUN capture needs only lengths: the outer one every byte
        with Capture(tun.b, outer, bpf=bpf, buffer_kib=131072), \
                Capture(a_tun, tun_cap, bpf="tcp", snaplen=64, buffer_kib=16384):
            t = tcp_transfer(lab, tun.a, tun.INNER[0], tun.b, tun.INNER[1], SIZE, seed=SEED,
                             port=5403)
        assert t.ok, (t.sent, t.received, tun.log("a")[-2000:], tun.log("b")[-2000:])
        spec = static_spec("a", local=tun.OUTER[0], remote=tun.OUTER[1],
                           local_ts=[f"{tun.INNER[0]}/32"], remote_ts=[f"{tun.INNER[1]}/32"],
                           esp=ESP, seed=tun.seed, encap=encap)
        assert spec.outbound.spi == SPI_A_TO_B
        wire = _read_wire(outer, encap, spec.outbound.encryption_key, tun.INNER)
    from scapy.utils import PcapReader

    # the original length of each record (the snapshot keeps 64 bytes of it)
    largest_on_tun = max((p.wirelen or len(p) for p in PcapReader(str(tun_cap))), default=0)
    return wire, largest_on_tun


@pytest.mark.skipif(__import__("shutil").which("tcpdump") is None, reason="tcpdump missing")
@pytest.mark.parametrize("encap", [False, True], ids=["raw-esp", "esp-in-udp"])
def test_offloaded_segments_equal_the_plain_path_on_the_wire(tmp_path, encap,
                                                             record_property):
    stream = transfer_stream(SIZE, SEED)
    runs = {offload: _run(tmp_path, encap, offload) for offload in (True, False)}
    mss = {}
    for offload, (wire, largest_on_tun) in runs.items():
        label = "offload" if offload else "plain"
        coverage = _check_stream(wire, stream)
        record_property(f"{label} coverage", round(coverage, 4))
        record_property(f"{label} esp packets", wire.esp_packets)
        record_property(f"{label} gso runs", wire.gso_runs)
        # tcpdump drops records when both cores are busy; what it kept must be most of it
        assert coverage > 0.8, f"{label}: only {coverage:.1%} of the stream was captured"
        assert wire.bad_ip_csum == 0 and wire.bad_tcp_csum == 0, (label, wire.bad_ip_csum,
                                                                 wire.bad_tcp_csum)
        assert wire.largest_inner <= MTU, (label, wire.largest_inner)
        assert wire.largest_esp_datagram <= LINK_MTU, (label, wire.largest_esp_datagram)
        seqs = [s[0] for s in wire.segments]
        assert all(x < y for x, y in zip(seqs, seqs[1:], strict=False)), \
            f"{label}: ESP sequence numbers not strictly increasing on the wire"
        # the segment size: what the SYN's MSS leaves after the timestamp option
        expected = wire.mss_option - (12 if wire.timestamps else 0)
        mss[offload] = max(len(s[3]) for s in wire.segments)
        assert mss[offload] == expected, (label, mss[offload], wire.mss_option)
        full = sum(len(s[3]) == expected for s in wire.segments)
        record_property(f"{label} full-size segments", round(full / len(wire.segments), 3))
        record_property(f"{label} IPv4 ID +1 steps", round(_step_one(wire), 3))
        if offload:  # the offload path ran: super-packets through a's TUN, UDP GSO runs
            assert largest_on_tun > MTU, f"no super-packet on the TUN ({largest_on_tun})"
            assert wire.gso_runs > 0 if encap else wire.gso_runs == 0, wire.gso_runs
        else:
            assert largest_on_tun <= MTU and wire.gso_runs == 0, (largest_on_tun,
                                                                  wire.gso_runs)
    assert mss[True] == mss[False]
    # IPv4 IDs: the kernel counts one per segment (tcp_gso_segment); so must ocfpy's cut
    assert _step_one(runs[True][0]) >= _step_one(runs[False][0]) - 0.02, \
        (_step_one(runs[True][0]), _step_one(runs[False][0]))
