"""Issue 17's transfer rows: two real `ocfpy iked` daemons (keys from IKE), a TCP transfer
with SHA-256 on both ends, each way, through one dataplane mode per row.

One table, two lanes: the rows the host kernel can run (the userspace dataplane: raw ESP and
ESP-in-UDP, offloads on and off, UDP GSO) run in tests/net/test_transfer_modes.py; the rows
that need what only the VM lane's stock kernel has (XFRM ESP; AF_ALG, whose driver is the
asynchronous one the userspace dataplane then submits to) run in
tests/kernel/test_transfer_modes_vm.py. The daemons, configs and namespaces are the IKE
daemon's harness (tests/net/ike_harness.py); the transfer is ocfpy.lab.netlab.tcp_transfer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ocfpy.lab.netlab import tcp_transfer
from tests.net.ike_harness import Pair, config, wait_for

IKE = "aes128gcm16-prfsha256-x25519"
# af_alg has no ECP or Curve25519 (no kernel interface for them): MODP through keyctl
IKE_AF_ALG = "aes128gcm16-prfsha256-modp2048"
INNER_A, INNER_B = "10.177.1.1", "10.177.2.1"  # the harness's inner hosts (lo of each side)


@dataclass(frozen=True)
class Mode:
    id: str
    dataplane: str  # "userspace" or "xfrm"
    encap: bool  # ESP-in-UDP (RFC 3948) rather than IP protocol 50
    offload: bool | None  # userspace per-run offloads (esp_offload); None: not a userspace knob
    esp: str = "aes128gcm16"
    ike: str = IKE
    backend: str = "openssl"  # crypto_backend of both daemons
    lane: str = "host"  # "host" (tests/net) or "vm" (tests/kernel, scripts/vm-lane.sh)
    daemon: dict = field(default_factory=dict)  # further [daemon] keys

    def daemon_options(self) -> dict:
        opts = dict(self.daemon)
        if self.offload is not None:
            opts["esp_offload"] = self.offload
        return opts


MODES = [
    # userspace ESP over TUN: what the host kernel runs (no ESP in its XFRM, no AF_ALG)
    Mode("userspace-raw-offload", "userspace", False, True),
    Mode("userspace-raw-no-offload", "userspace", False, False),
    Mode("userspace-udp-offload", "userspace", True, True),
    Mode("userspace-udp-no-offload", "userspace", True, False),
    Mode("userspace-udp-offload-udp_gso", "userspace", True, True, daemon={"udp_gso": True}),
    # the VM lane: kernel ESP, and the asynchronous driver path (AF_ALG with kernel AIO)
    Mode("xfrm-raw", "xfrm", False, None, lane="vm"),
    Mode("xfrm-udp", "xfrm", True, None, esp="aes256-sha256", lane="vm"),
    Mode("userspace-raw-offload-async-af_alg", "userspace", False, True, ike=IKE_AF_ALG,
         backend="af_alg", lane="vm"),
    Mode("userspace-udp-no-offload-async-af_alg", "userspace", True, False, ike=IKE_AF_ALG,
         backend="af_alg", lane="vm"),
]
HOST_MODES = [m for m in MODES if m.lane == "host"]
VM_MODES = [m for m in MODES if m.lane == "vm"]


@dataclass
class RowResult:
    seconds: dict  # "a->b" / "b->a": transfer time
    mbit_per_s: dict


def run_row(pair: Pair, mode: Mode, nbytes: int, *, start_timeout: float = 20.0,
            establish_timeout: float = 15.0, transfer_timeout: float = 180.0) -> RowResult:
    """Both daemons in ``mode``, a CHILD_SA, then ``nbytes`` of TCP a->b and b->a, each
    checked by SHA-256 on both ends, and both daemons' SA counters checked against it."""
    for side, d in ((0, pair.a), (1, pair.b)):
        d.start(config(side, proposals=[mode.ike], esp=[mode.esp], dataplane=mode.dataplane,
                       backend=mode.backend, encap=mode.encap or None,
                       daemon_options=mode.daemon_options()), timeout=start_timeout)
    got = pair.a.call("initiate", name="t", wait=establish_timeout,
                      timeout=establish_timeout + 10)
    assert got["state"] == "established", got
    wait_for(pair.b.established, 10, "b established", on_fail=pair.logs)
    for d in (pair.a, pair.b):
        child = d.sas()[0]["children"][0]
        assert child["encap"] is mode.encap, child
        assert child["dataplane"]["name"] == mode.dataplane, child

    seconds, rate = {}, {}
    for name, (src, src_ip, dst, dst_ip), port in (
            ("a->b", (pair.a.ns, INNER_A, pair.b.ns, INNER_B), 5401),
            ("b->a", (pair.b.ns, INNER_B, pair.a.ns, INNER_A), 5402)):
        t0 = time.monotonic()
        t = tcp_transfer(pair.lab, src, src_ip, dst, dst_ip, nbytes, port=port,
                         timeout=transfer_timeout)
        seconds[name] = round(time.monotonic() - t0, 2)
        assert t.ok, (name, t.sent, t.received, pair.logs())
        assert t.received["bytes"] == nbytes
        rate[name] = round(t.mbit_per_s, 1)

    # What the SAs carried: at least every byte each way (plus headers), nothing dropped as
    # forged, replayed or malformed. Read until both listings agree (the last ACKs may still
    # be between the two dataplanes when the transfer returns).
    def settled():
        now = [d.sas()[0]["children"][0]["dataplane"] for d in (pair.a, pair.b)]
        time.sleep(0.3)
        again = [d.sas()[0]["children"][0]["dataplane"] for d in (pair.a, pair.b)]
        return again if [c["packets_in"] for c in now] == [c["packets_in"] for c in again] \
            else None

    ca, cb = wait_for(settled, 10, "the SA counters to settle", on_fail=pair.logs)
    for c in (ca, cb):
        assert c["bytes_in"] > nbytes and c["bytes_out"] > nbytes, c
        assert c["packets_in"] > nbytes // 1500, c  # MTU-sized ESP, never one per super-packet
        assert c["auth_failures"] == 0 and c["replay_drops"] == 0, c
        assert c.get("malformed", 0) == 0, c
    assert ca["packets_out"] == cb["packets_in"] and cb["packets_out"] == ca["packets_in"], \
        (ca, cb)
    if mode.backend != "openssl":  # the forced driver serves the SA, both directions
        drivers = pair.a.sas()[0]["children"][0]["dataplane"].get("drivers", {})
        assert all(mode.backend in v for v in drivers.values()) and drivers, drivers
    return RowResult(seconds, rate)
