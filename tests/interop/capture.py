"""A packet capture on one namespace's interface, read back with scapy.

The verdicts the interop tests draw from the wire (IKE moved to 4500, ESP is UDP-encapsulated,
no inner packet crossed in clear) come from an independent packet parser, not from either
daemon's own counters.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ocfpy.lab.netlab import Namespace


@dataclass
class EspFlow:
    """The ESP packets of one direction (outer source -> outer destination)."""

    packets: int = 0
    bytes: int = 0  # IP total lengths
    spis: set[int] = field(default_factory=set)

    def add(self, ip_len: int, spi: int) -> int:
        self.packets += 1
        self.bytes += ip_len
        self.spis.add(spi)
        return spi


@dataclass
class WireSummary:
    ike_500: int = 0  # UDP to or from port 500
    ike_4500: int = 0  # UDP 4500 with the non-ESP marker (IKE after NAT-T)
    esp_in_udp: int = 0  # UDP 4500, first 4 bytes non-zero: an ESP SPI (RFC 3948)
    keepalive: int = 0  # UDP 4500, the one-byte 0xff NAT keepalive
    esp_raw: int = 0  # IP protocol 50
    clear_inner: int = 0  # packets between the inner addresses, unencrypted
    total: int = 0
    esp_spis: frozenset[int] = frozenset()
    largest_esp_in_udp: int = 0  # IP total length: a UDP GSO run shows as one big datagram
    other: int = 0  # IPv4 packets that are neither IKE (UDP 500/4500) nor ESP (raw or in UDP)
    # ESP (raw or in UDP) per (outer source, outer destination): packets, IP bytes, SPIs seen
    esp_flows: dict[tuple[str, str], EspFlow] = field(default_factory=dict)

    def esp_flow(self, ip) -> EspFlow:  # noqa: ANN001 - scapy's IP layer
        return self.esp_flows.setdefault((ip.src, ip.dst), EspFlow())


class Capture:
    def __init__(self, host: Namespace, path: Path, bpf: str = "udp or esp or icmp or tcp",
                 *, snaplen: int | None = None, buffer_kib: int | None = None,
                 start_timeout: float = 10.0, direction: str | None = None) -> None:
        """``snaplen`` / ``buffer_kib``: tcpdump's -s / -B, for long captures on a slow or
        loaded machine (headers are what the summary reads; a bigger buffer drops less);
        ``start_timeout``: how long tcpdump may take to attach (longer in an emulated guest);
        ``direction``: tcpdump's -Q (``out``: what this host sends; on a host with kernel
        IPsec the inbound side also shows each decrypted packet again, as if it had arrived
        in clear, so egress at both ends of a link is what the wire carried)."""
        if shutil.which("tcpdump") is None:
            raise RuntimeError("tcpdump missing (apt-get install tcpdump)")
        self.host, self.path, self.bpf = host, path, bpf
        self.options = ([f"-s{snaplen}"] if snaplen else []) + \
            ([f"-B{buffer_kib}"] if buffer_kib else []) + \
            (["-Q", direction] if direction else [])
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._err = b""  # tcpdump's closing statistics, for failure messages

    def __enter__(self) -> Capture:
        self.path.unlink(missing_ok=True)
        self._proc = subprocess.Popen(
            self.host.argv("tcpdump", "-U", "--immediate-mode", "-n", *self.options,
                           "-i", self.host.ifname, "-w", str(self.path), self.bpf),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # The file appears before the filter is attached; "listening on" on stderr comes after.
        assert self._proc.stderr is not None
        seen = b""
        deadline = time.monotonic() + self.start_timeout
        while b"listening on" not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or self._proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"tcpdump did not start: {seen.decode(errors='replace')}")
            if select.select([self._proc.stderr], [], [], left)[0]:
                seen += os.read(self._proc.stderr.fileno(), 4096)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            time.sleep(0.2)  # let the last packets reach the file (-U flushes per packet)
            self._proc.terminate()
            try:
                self._err = self._proc.communicate(timeout=5)[1]
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    @property
    def dropped(self) -> int:
        """Packets tcpdump said the kernel dropped (from its closing statistics)."""
        import re

        m = re.search(rb"(\d+) packets? dropped by kernel", self._err)
        return int(m.group(1)) if m else 0

    def summary(self, inner: tuple[str, str]) -> WireSummary:
        from scapy.layers.inet import IP, UDP
        from scapy.utils import rdpcap

        s = WireSummary()
        spis = set()
        for pkt in rdpcap(str(self.path)) if self.path.stat().st_size > 24 else []:
            if IP not in pkt:
                continue
            s.total += 1
            ip = pkt[IP]
            if {ip.src, ip.dst} == set(inner):
                s.clear_inner += 1
            if ip.proto == 50:
                s.esp_raw += 1
                if ip.frag:  # a later fragment of an ESP packet: ESP bytes, no SPI of its own
                    s.esp_flow(ip).bytes += ip.len
                    continue
                esp = bytes(ip.payload)
                spis.add(s.esp_flow(ip).add(ip.len, int.from_bytes(esp[:4], "big")))
                continue
            if UDP not in pkt:
                s.other += 1
                continue
            udp, payload = pkt[UDP], bytes(pkt[UDP].payload)
            ports = {udp.sport, udp.dport}
            if 500 in ports:
                s.ike_500 += 1
            elif 4500 in ports:
                if payload == b"\xff":
                    s.keepalive += 1
                elif payload[:4] == b"\0\0\0\0":
                    s.ike_4500 += 1
                elif len(payload) >= 8:
                    s.esp_in_udp += 1
                    spis.add(s.esp_flow(ip).add(ip.len, int.from_bytes(payload[:4], "big")))
                    s.largest_esp_in_udp = max(s.largest_esp_in_udp, ip.len)
                else:
                    s.other += 1
            else:
                s.other += 1
        s.esp_spis = frozenset(spis)
        return s
