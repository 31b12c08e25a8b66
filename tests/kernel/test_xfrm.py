"""The kernel ESP dataplane (XFRM) between two namespaces, on a real kernel (the VM lane).

Two static, mirrored ChildSaSpecs (ocfpy.lab.static_tunnel: the keys IKE would derive, from a shared
seed) are installed with XfrmDataplane in namespaces oxf-a and oxf-b joined by a veth. The
tests prove: ping and a TCP transfer (SHA-256 on both ends) cross kernel ESP; the veth
carries only ESP (a marker in the ping payload never appears there); `ip xfrm state` lists
the SAs with the algorithms we asked for; counters come from the kernel; remove() and close()
leave no state, policy or route; lifetimes raise soft and hard events; a rekeyed CHILD_SA with
the same selectors takes over without a gap; and the kernel talks to the userspace dataplane
(same ESP on the wire, in both encapsulations).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ocfpy.esp.dataplane.base import SaEvent
from ocfpy.lab.netlab import Lab, can_build_lab, tcp_transfer, two_hosts
from ocfpy.lab.static_tunnel import static_spec

OUTER = ("10.99.0.1", "10.99.0.2")
INNER = ("10.199.1.1", "10.199.2.1")
MARKER = "0cf9e5c0ffee0cf9e5c0ffee0cf9e5c0"


@functools.cache
def _no_kernel_esp() -> str | None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "namespace lab unavailable: needs root and iproute2"
    from ocfpy.esp.dataplane.xfrm import XfrmDataplane, XfrmUnavailable

    with Lab("oxfp") as lab:
        ns = lab.namespace("p")
        try:
            XfrmDataplane(netns=ns.name).close()
        except XfrmUnavailable as exc:
            return f"needs kernel ESP: run in the VM lane (scripts/vm-lane.sh): {exc}"
    return None


@pytest.fixture(autouse=True)
def _needs_af_alg():
    """Overrides tests/kernel/conftest.py's AF_ALG check: these tests need XFRM ESP instead."""
    why = _no_kernel_esp()
    if why:
        pytest.skip(why)


def _spec(side: str, seed: str, esp: str, *, encap: bool = False, uid: int = 1, **kw):
    me, peer = (0, 1) if side == "a" else (1, 0)
    return static_spec(side, local=OUTER[me], remote=OUTER[peer],
                       local_ts=[f"{INNER[me]}/32"], remote_ts=[f"{INNER[peer]}/32"],
                       esp=esp, seed=seed, encap=encap, unique_id=uid, **kw)


def _encap_socket(ns: str) -> socket.socket:
    """The socket a daemon would hold on UDP 4500 in that namespace."""
    from pyroute2.netns import create_socket

    sock = create_socket(netns=ns, family=socket.AF_INET, socket_type=socket.SOCK_DGRAM,
                         flags=0)
    sock.bind(("0.0.0.0", 4500))
    return sock


def _ip(lab: Lab, ns, *args: str) -> str:
    return lab.run(ns, ["ip", *args], check=True).stdout


def _policies(lab: Lab, ns) -> str:
    """`ip xfrm policy` without per-socket policies (the IKE bypass on a daemon's socket
    lives and dies with that socket, not with a CHILD_SA)."""
    blocks = _ip(lab, ns, "xfrm", "policy").replace("\n\t", "\t").splitlines()
    return "\n".join(b for b in blocks if "\tsocket " not in b).strip()


def _nothing_left(lab: Lab, ns) -> None:
    assert _ip(lab, ns, "xfrm", "state").strip() == ""
    assert _policies(lab, ns) == ""
    assert INNER[0].rsplit(".", 1)[0] not in _ip(lab, ns, "route")
    assert INNER[1].rsplit(".", 1)[0] not in _ip(lab, ns, "route")


def _ping(lab: Lab, ns, count: int = 3, **kw) -> subprocess.CompletedProcess:
    argv = ["ping", "-c", str(count), "-i", "0.2", "-W", "2", "-I", INNER[0], INNER[1]]
    if "pattern" in kw:
        argv[1:1] = ["-p", kw["pattern"], "-s", "200"]
    return lab.run(ns, argv, timeout=count * 3 + 10)


class Capture:
    """What one host sends on its veth (-Q out). The receiving side's capture would also
    show the decrypted inner packets, which the kernel re-injects on the same device: that
    is not the wire (measured; /work/shared/lanes.md says the same)."""

    def __init__(self, lab: Lab, ns, ifname: str, path: Path):
        if shutil.which("tcpdump") is None:
            pytest.skip("tcpdump is not installed (apt-get install tcpdump)")
        self.lab, self.path = lab, path
        self.proc = lab.popen(ns, ["tcpdump", "-i", ifname, "-Q", "out", "-U", "-n", "-w",
                                   str(path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not path.exists() or path.stat().st_size == 0:  # the pcap header: listening
            assert time.monotonic() < deadline, "tcpdump did not start"
            time.sleep(0.1)
        time.sleep(0.3)

    def stop(self) -> bytes:
        time.sleep(0.3)
        self.lab.stop(self.proc)
        return self.path.read_bytes()

    def count(self, expr: str) -> int:
        out = subprocess.run(["tcpdump", "-r", str(self.path), "-n", expr], capture_output=True,
                             text=True, timeout=60)
        return len(out.stdout.splitlines())


@pytest.fixture
def lab():
    with Lab("oxf") as lab:
        a, b, link = two_hosts(lab, outer=(f"{OUTER[0]}/24", f"{OUTER[1]}/24"),
                               inner=(f"{INNER[0]}/32", f"{INNER[1]}/32"))
        lab.a, lab.b, lab.link = a, b, link
        yield lab


CASES = [  # (ESP proposal, UDP encapsulation, what `ip xfrm state` must show)
    ("aes128gcm16", False, ["aead rfc4106(gcm(aes))", "128"]),
    ("aes256-sha256", True, ["enc cbc(aes)", "auth-trunc hmac(sha256)", "128",
                             "encap type espinudp sport 4500 dport 4500"]),
    ("chacha20poly1305-esn", False, ["aead rfc7539esp(chacha20,poly1305)", "flag esn"]),
]


@pytest.mark.parametrize("esp,encap,shown", CASES, ids=[c[0] + ("-udp" if c[1] else "") for c in CASES])
def test_ping_tcp_only_esp_on_the_wire_and_clean_removal(lab, tmp_path, esp, encap, shown):
    from ocfpy.esp.dataplane.xfrm import XfrmDataplane

    seed = "kernel-" + esp
    socks = [_encap_socket(ns.name) for ns in (lab.a, lab.b)] if encap else []
    with XfrmDataplane(netns=lab.a.name) as dpa, XfrmDataplane(netns=lab.b.name) as dpb:
        for dp, sock in zip((dpa, dpb), socks, strict=False):
            assert dp.attach_udp_encap(sock, lambda *a: None) is False
        dpa.install(_spec("a", seed, esp, encap=encap))
        dpb.install(_spec("b", seed, esp, encap=encap))

        state = _ip(lab, lab.a, "xfrm", "state")
        for text in shown:
            assert text in state, state
        assert "spi 0xa0b00001" in state and "spi 0xb0a00001" in state
        assert state.count("mode tunnel") == 2
        policy = _ip(lab, lab.a, "xfrm", "policy")
        assert {"dir out", "dir in", "dir fwd"} <= {ln.strip().split(" priority")[0]
                                                    for ln in policy.splitlines()}, policy

        wire = {side: Capture(lab, ns, ifname, tmp_path / f"{side}.pcap")
                for side, ns, ifname in (("a", lab.a, lab.link.a), ("b", lab.b, lab.link.b))}
        ping = _ping(lab, lab.a, 5, pattern=MARKER)
        assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout + ping.stderr
        transfer = tcp_transfer(lab, lab.a, INNER[0], lab.b, INNER[1], 4 * 10**6, timeout=120)
        raw = {side: cap.stop() for side, cap in wire.items()}
        assert transfer.ok, (transfer.sent, transfer.received)
        esp_filter = "udp port 4500" if encap else "ip proto 50"
        for side, cap in wire.items():  # echo request (a) and reply (b) both carry the marker
            assert bytes.fromhex(MARKER) not in raw[side], f"plaintext ping payload from {side}"
            assert cap.count(f"not ({esp_filter}) and not arp and not ip6") == 0, side
            assert cap.count(f"host {INNER[0]} or host {INNER[1]}") == 0, side
        assert wire["a"].count(esp_filter) > 4 * 10**6 // 1500
        assert wire["b"].count(esp_filter) >= 5  # replies and ACKs

        ca, cb = dpa.counters(1), dpb.counters(1)
        assert cb.packets_in >= 5 + 4 * 10**6 // 1500 and cb.bytes_in > 4 * 10**6
        assert ca.packets_out >= cb.packets_in and ca.packets_in >= 5
        assert cb.replay_drops == 0 and cb.auth_failures == 0
        assert cb.drivers["in"].startswith("kernel:")
        print(f"{esp}{' udp' if encap else ''}: 4 MB at {transfer.mbit_per_s:.0f} Mbit/s, "
              f"drivers {cb.drivers}")

        dpa.remove(1)
        dpa.remove(1)  # idempotent
        _nothing_left(lab, lab.a)
        assert _ip(lab, lab.b, "xfrm", "state").count("proto esp spi") == 2  # b untouched
    _nothing_left(lab, lab.b)  # close() took b's out
    for sock in socks:
        sock.close()
    assert _ip(lab, lab.b, "xfrm", "policy").strip() == ""  # the bypass went with the socket


def test_rekeyed_child_sa_takes_over_the_shared_policies(lab):
    from ocfpy.esp.dataplane.xfrm import XfrmDataplane

    with XfrmDataplane(netns=lab.a.name) as dpa, XfrmDataplane(netns=lab.b.name) as dpb:
        dpa.install(_spec("a", "old", "aes128gcm16", uid=1))
        dpb.install(_spec("b", "old", "aes128gcm16", uid=1))
        assert _ping(lab, lab.a, 2).returncode == 0
        # the new CHILD_SA: other keys and SPIs, same selectors (make before break)
        new_a, new_b = (_spec(s, "new", "aes128gcm16", uid=2) for s in "ab")
        for spec in (new_a, new_b):
            for keys in (spec.inbound, spec.outbound):
                object.__setattr__(keys, "spi", keys.spi + 1)
        dpa.install(new_a)
        dpb.install(new_b)
        dpa.remove(1)
        dpb.remove(1)
        assert _ping(lab, lab.a, 3).returncode == 0
        assert dpb.counters(2).packets_in >= 3
        state = _ip(lab, lab.a, "xfrm", "state")
        assert "spi 0xa0b00002" in state and "spi 0xa0b00001" not in state
        assert _ip(lab, lab.a, "xfrm", "policy").count("dir ") == 3  # one set, not two
    _nothing_left(lab, lab.a)


def test_make_before_break_keeps_the_reqid_and_switches_in_one_step(lab):
    """Issue 18 on the kernel: a rekey's CHILD_SA goes in with only its inbound state, under
    the old one's reqid (the policies stay as they are and pass both SAs' packets); the
    switch adds its outbound state, and the kernel sends on it from then on."""
    from ocfpy.esp.dataplane.xfrm import XfrmDataplane

    with XfrmDataplane(netns=lab.a.name) as dpa, XfrmDataplane(netns=lab.b.name) as dpb:
        dpa.install(_spec("a", "old", "aes128gcm16", uid=1))
        dpb.install(_spec("b", "old", "aes128gcm16", uid=1))
        policies = _policies(lab, lab.a)
        new_a, new_b = (_spec(s, "new", "aes128gcm16", uid=2) for s in "ab")
        for spec in (new_a, new_b):
            for keys in (spec.inbound, spec.outbound):
                object.__setattr__(keys, "spi", keys.spi + 1)
        dpa.install(new_a, outbound=False, replaces=1)
        dpb.install(new_b, outbound=False, replaces=1)
        state = _ip(lab, lab.a, "xfrm", "state")
        assert state.count("proto esp spi") == 3  # old in + out, new in only
        assert _policies(lab, lab.a) == policies  # the same reqid: nothing to update
        assert _ping(lab, lab.a, 2).returncode == 0  # still the old SA, both ways
        assert dpb.counters(2).packets_in == 0
        dpa.activate(2)  # a switches; b still sends on the old SA: both pass
        assert _ping(lab, lab.a, 2).returncode == 0
        assert dpb.counters(2).packets_in >= 2 and dpa.counters(1).packets_in >= 2
        dpb.activate(2)
        dpa.remove(1)
        dpb.remove(1)
        assert _ping(lab, lab.a, 3).returncode == 0
        assert dpa.counters(2).packets_in >= 3
    _nothing_left(lab, lab.a)


def test_soft_and_hard_lifetime_events(lab):
    from ocfpy.esp.dataplane.xfrm import XfrmDataplane

    events: list[SaEvent] = []
    got_hard = threading.Event()

    def on_event(ev: SaEvent) -> None:
        events.append(ev)
        if ev.kind == "hard":
            got_hard.set()

    with XfrmDataplane(netns=lab.a.name) as dpa, XfrmDataplane(netns=lab.b.name) as dpb:
        dpa.set_event_handler(on_event)
        dpa.install(_spec("a", "life", "aes128gcm16", uid=7, lifetime_packets=10))
        dpb.install(_spec("b", "life", "aes128gcm16", uid=7))
        _ping(lab, lab.a, 12)
        assert got_hard.wait(10), events
        kinds = [e.kind for e in events if e.unique_id == 7]
        assert kinds.index("soft") < kinds.index("hard"), events
        assert "after" in events[0].reason
        deadline = time.monotonic() + 5
        while dpa.installed() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dpa.installed() == []  # the hard expiry took the whole CHILD_SA out
        _nothing_left(lab, lab.a)


def test_kernel_and_userspace_dataplanes_interoperate(lab, tmp_path):
    """Side a: the kernel (XFRM); side b: ocfpy's userspace ESP (python -m ocfpy.lab.static_tunnel)."""
    if not os.path.exists("/dev/net/tun"):  # the VM lane's devtmpfs has it once tun is loaded
        subprocess.run(["modprobe", "tun"], capture_output=True, timeout=30)
    why = can_build_lab()
    if why:
        pytest.skip(f"the userspace peer cannot run: {why}")
    from ocfpy.esp.dataplane.xfrm import XfrmDataplane

    for esp, encap in (("aes128gcm16", False), ("aes256-sha256", True)):
        seed = f"mixed-{esp}"
        log_path = tmp_path / f"b-{esp}.log"
        ready = tmp_path / f"b-{esp}.ready"
        argv = [sys.executable, "-m", "ocfpy.lab.static_tunnel", "--side", "b", "--local", OUTER[1],
                "--remote", OUTER[0], "--local-ts", f"{INNER[1]}/32", "--remote-ts",
                f"{INNER[0]}/32", "--esp", esp, "--seed", seed, "--tun", "oxf-tun0",
                "--ready", str(ready)] + (["--encap"] if encap else [])
        with open(log_path, "w") as log_file:
            peer = lab.popen(lab.b, argv, stdout=log_file, stderr=log_file)
        sock = _encap_socket(lab.a.name) if encap else None
        try:
            # generous: in the VM lane a fresh interpreter spends 20-35 s importing pyroute2
            # (hundreds of modules over 9p under TCG; 0.2 s on the host), measured
            deadline = time.monotonic() + 240
            while not ready.exists():
                assert peer.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            with XfrmDataplane(netns=lab.a.name) as dpa:
                if sock is not None:
                    dpa.attach_udp_encap(sock, lambda *a: None)
                dpa.install(_spec("a", seed, esp, encap=encap))
                ping = _ping(lab, lab.a, 3)
                assert ping.returncode == 0, ping.stdout + log_path.read_text()
                transfer = tcp_transfer(lab, lab.a, INNER[0], lab.b, INNER[1], 2 * 10**6,
                                        port=5002, timeout=120)
                assert transfer.ok, (transfer.sent, transfer.received)
                c = dpa.counters(1)
                assert c.packets_out > 2 * 10**6 // 1500 and c.packets_in >= 3
                assert c.auth_failures == 0
        finally:
            lab.stop(peer)
            if sock is not None:
                sock.close()
        _nothing_left(lab, lab.a)


def test_ipv6_outer_and_inner(lab):
    from ocfpy.esp.dataplane.xfrm import XfrmDataplane

    lab.configure_link(lab.a, lab.link.a, "fd99::1/64")
    lab.configure_link(lab.b, lab.link.b, "fd99::2/64")
    lab.address(lab.a, "fd99:1::1/128")
    lab.address(lab.b, "fd99:2::1/128")
    specs = [static_spec(s, local=lo, remote=re, local_ts=[lt], remote_ts=[rt], esp="aes256gcm16",
                         seed="v6")
             for s, lo, re, lt, rt in (("a", "fd99::1", "fd99::2", "fd99:1::1/128", "fd99:2::1/128"),
                                       ("b", "fd99::2", "fd99::1", "fd99:2::1/128", "fd99:1::1/128"))]
    with XfrmDataplane(netns=lab.a.name) as dpa, XfrmDataplane(netns=lab.b.name) as dpb:
        if 6 not in dpa.families:
            pytest.skip("this kernel has no IPv6 ESP (CONFIG_INET6_ESP)")
        dpa.install(specs[0])
        dpb.install(specs[1])
        ping = lab.run(lab.a, ["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "-I", "fd99:1::1",
                               "fd99:2::1"], timeout=30)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert dpb.counters(1).packets_in >= 3
    assert _ip(lab, lab.a, "xfrm", "state").strip() == ""


def test_counters_json_shape_for_sa_list(lab):
    """`ocfpy sa list` shows vars(SaCounters): every field must be JSON-able."""
    from ocfpy.esp.dataplane.xfrm import XfrmDataplane

    with XfrmDataplane(netns=lab.a.name) as dpa:
        dpa.install(_spec("a", "json", "aes128gcm16"))
        json.dumps(vars(dpa.counters(1)))
        with pytest.raises(KeyError):
            dpa.counters(99)

