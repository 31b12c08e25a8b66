"""`ocfpy demo`: two IKEv2 gateways in two network namespaces, a tunnel, traffic, a report.

As root it builds namespaces <prefix>-a and <prefix>-b joined by a veth pair, starts one
`ocfpy iked` in each (PSK, the proposals given), has a initiate, pings through the tunnel,
sends a TCP stream with a SHA-256 checked on both ends, and reports what was negotiated, which
drivers served the IKE and ESP sessions, the packet counters, the time to establish and the
throughput. Everything it made is removed at the end, also on Ctrl-C or failure.
`--static` skips IKE and installs static keys (a check of the dataplane alone).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ocfpy.cli.common import add_calibration_option
from ocfpy.crypto.errors import OcfError

OUTER = ("10.98.0.1", "10.98.0.2")
INNER_NETS = ("10.198.1.0/24", "10.198.2.0/24")
INNER_HOSTS = ("10.198.1.1", "10.198.2.1")
IDS = ("a.demo.ocfpy", "b.demo.ocfpy")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="two IKEv2 gateways in namespaces: tunnel, ping, TCP transfer, report",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crypto-backend", default="auto", metavar="NAME",
                   help="force the IKE and ESP sessions of both gateways onto one driver: "
                   "auto (none forced; default), openssl, af_alg or a driver name")
    add_calibration_option(p, "both gateways' IKE and ESP sessions")
    p.add_argument("--proposal", action="append", metavar="P",
                   help="IKE proposal, strongSwan syntax (default aes128gcm16-prfsha256-x25519)")
    p.add_argument("--esp-proposal", action="append", metavar="P",
                   help="ESP proposal (default aes128gcm16); e.g. aes256-sha256, "
                        "chacha20poly1305-esn")
    p.add_argument("--dataplane", default="userspace", choices=["userspace", "xfrm", "auto"],
                   help="ESP dataplane of both daemons (default userspace: ESP over TUN)")
    p.add_argument("--encap", action="store_true",
                   help="force UDP encapsulation (RFC 3948, port 4500) as behind a NAT")
    p.add_argument("--megabytes", type=int, default=20, help="TCP transfer size (default 20)")
    p.add_argument("--static", action="store_true",
                   help="no IKE: static keys straight into the dataplane")
    p.add_argument("--prefix", default="ocfdemo",
                   help="name prefix of the namespaces and links (default ocfdemo)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ocfpy.lab.netlab import can_build_lab

    why = can_build_lab()
    if why:
        print(f"ocfpy demo {why}: it creates two network namespaces, a veth pair, two TUN "
              "devices and starts two daemons. Run it as root (e.g. `sudo ocfpy demo`), or "
              "measure the crypto without a network: `ocfpy bench`.", file=sys.stderr)
        return 77  # EX_NOPERM
    if args.calibration:  # refused here, before namespaces and daemons, not by each daemon
        from ocfpy.iked.configfile import ConfigError, calibration_path, load_calibration

        try:
            load_calibration(calibration_path(args.calibration))
        except ConfigError as exc:
            print(f"ocfpy demo: --calibration: {exc}", file=sys.stderr)
            return 2
    # SIGTERM unwinds like Ctrl-C, so the lab's cleanup runs either way (in this process
    # only: helpers forked by pyroute2 inherit the handler and are stopped with SIGTERM).
    owner = os.getpid()

    def _raise_interrupt(*_):
        if os.getpid() == owner:
            raise KeyboardInterrupt
        os._exit(143)

    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        report = _static(args) if args.static else _with_daemons(args)
    except KeyboardInterrupt:
        print("ocfpy demo: interrupted; everything it created was removed", file=sys.stderr)
        return 130
    except DemoError as exc:
        print(f"ocfpy demo failed: {exc}", file=sys.stderr)
        return 1
    _print(report, as_json=args.json)
    return 0 if report.get("ok") else 1


class DemoError(OcfError, RuntimeError):
    pass


# -- with two daemons -------------------------------------------------------------------------
def _config(side: int, args: argparse.Namespace, workdir: Path, psk: str) -> str:
    from ocfpy.iked.configfile import calibration_path
    from ocfpy.lab.iked_toml import config_toml, connection_table, daemon_table, secret_table

    me, peer = side, 1 - side
    calibration = str(calibration_path(args.calibration)) if args.calibration else None
    return config_toml(
        daemon_table(backend=args.crypto_backend, dataplane=args.dataplane, listen=[OUTER[me]],
                     control_socket=str(workdir / f"{'ab'[side]}.sock"),
                     calibration=calibration),
        connection_table("demo", local_addr=OUTER[me], remote_addr=OUTER[peer],
                         local_id=IDS[me], remote_id=IDS[peer],
                         proposals=args.proposal or ["aes128gcm16-prfsha256-x25519"],
                         esp_proposals=args.esp_proposal or ["aes128gcm16"],
                         children={"net": ([INNER_NETS[me]], [INNER_NETS[peer]])},
                         encap=bool(args.encap)),
        secret_table("ike-demo", f"0x{psk}", IDS))


class Gateways:
    """Two `ocfpy iked` daemons in namespaces <prefix>-a and <prefix>-b, up and answering on
    their control sockets; removed on exit. Used by the demo and by the net tests.

    ``options`` are the demo's options (crypto_backend, calibration, proposal, esp_proposal,
    dataplane, encap); ``call(side, command, **params)`` talks to a daemon's control socket.
    """

    def __init__(self, options: argparse.Namespace, prefix: str):
        self.options = options
        self.prefix = prefix
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Gateways:
        try:
            import ocfpy.iked.control  # noqa: F401  (the daemon's control socket)
        except ImportError as exc:
            raise DemoError(f"this ocfpy has no IKE daemon ({exc}); try `ocfpy demo "
                            "--static`") from None
        from ocfpy.lab.iked_runner import IkedRunner
        from ocfpy.lab.netlab import Lab, two_hosts

        self._stack.callback(shutil.rmtree, self.workdir, ignore_errors=True)
        try:
            self.lab = self._stack.enter_context(Lab(self.prefix))
            self.a, self.b, self.link = two_hosts(
                self.lab, outer=(f"{OUTER[0]}/24", f"{OUTER[1]}/24"),
                inner=(f"{INNER_HOSTS[0]}/32", f"{INNER_HOSTS[1]}/32"))
            psk = os.urandom(24).hex()
            self.daemons = {}
            for side, ns in ((0, self.a), (1, self.b)):
                name = "ab"[side]
                daemon = IkedRunner(ns.name, self.workdir, name, verbosity="-v",
                                    error=DemoError, on_start=self.lab.procs.append)
                self._stack.callback(daemon.stop)
                daemon.spawn(_config(side, self.options, self.workdir, psk))
                self.daemons[name] = daemon
            for daemon in self.daemons.values():  # both start at once: wait for them together
                daemon.wait_ready(20)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def control(self, side: str) -> Path:
        return self.daemons[side].control

    def call(self, side: str, cmd: str, **params):
        return self.daemons[side].call(cmd, **params)

    def log_tail(self, side: str, n: int = 2500) -> str:
        return self.daemons[side].log_tail(n)

    def establish(self, timeout: float = 15) -> float:
        """a initiates; returns the seconds until IKE_SA and CHILD_SA are up."""
        from ocfpy.lab.iked_runner import wait_for

        t0 = time.monotonic()
        self.call("a", "initiate", name="demo")
        wait_for(lambda: [s for s in self.call("a", "list")
                          if str(s.get("state", "")).lower() == "established"
                          and s.get("children")],
                 timeout, "the IKE_SA and CHILD_SA", error=DemoError,
                 on_fail=lambda: self.log_tail("a") + self.log_tail("b"))
        return time.monotonic() - t0


def _settled_listings(gw: Gateways, wait: float = 3.0) -> tuple[dict, dict]:
    """Both gateways' SA listings once the traffic has settled: the last segments of the
    transfer (a FIN, an ACK) may still be between a's outbound worker and b's inbound one when
    the transfer returns, and the two listings are read one after the other. Read until two
    rounds agree (or ``wait`` runs out), so that the counters compared are of the same moment."""
    deadline = time.monotonic() + wait
    last = None
    while True:
        now = (gw.call("a", "list")[0], gw.call("b", "list")[0])
        counters = [(sa.get("children") or [{}])[0].get("dataplane") for sa in now]
        if counters == last or time.monotonic() >= deadline:
            return now
        last = counters
        time.sleep(0.2)


def _with_daemons(args: argparse.Namespace) -> dict:
    with Gateways(args, args.prefix) as gw:
        established = gw.establish()
        traffic = _traffic(gw.lab, gw.a, gw.b, args.megabytes)
        sa_a, sa_b = _settled_listings(gw)
        gw.call("a", "terminate", name="demo")
        return _report(established, traffic, sa_a, sa_b)


# -- static keys ------------------------------------------------------------------------------
def _static(args: argparse.Namespace) -> dict:
    from ocfpy.iked.configfile import calibration_path
    from ocfpy.lab.netlab import Lab
    from ocfpy.lab.static_tunnel import StaticTunnel

    esp = (args.esp_proposal or ["aes128gcm16"])[0]
    backend = None if args.crypto_backend == "auto" else args.crypto_backend
    with Lab(args.prefix) as lab:
        t0 = time.monotonic()
        calibration = str(calibration_path(args.calibration)) if args.calibration else None
        with StaticTunnel(lab, esp=esp, encap=args.encap, crypto_backend=backend,
                          calibration=calibration) as tun:
            installed = time.monotonic() - t0
            traffic = _traffic(lab, tun.a, tun.b, args.megabytes,
                               inner=StaticTunnel.INNER)
            ca, cb = tun.counters("a"), tun.counters("b")
        return {
            "ok": traffic["ok"], "mode": "static keys (no IKE)", "esp": esp,
            "encap": args.encap, "setup_seconds": installed,
            "esp_drivers": {"a": ca["sa"]["drivers"], "b": cb["sa"]["drivers"]},
            "counters": {"a": ca["sa"], "b": cb["sa"]}, "traffic": traffic,
        }


# -- traffic and report -----------------------------------------------------------------------
def _traffic(lab, a, b, megabytes: int, inner: tuple[str, str] = INNER_HOSTS) -> dict:
    from ocfpy.lab.netlab import LabError, tcp_transfer

    ping = lab.run(a, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", inner[0], inner[1]],
                   timeout=20)
    rtt = ""
    for line in ping.stdout.splitlines():
        if line.startswith("rtt"):
            rtt = line.split("=")[1].strip()
    result = {"ping_ok": ping.returncode == 0, "ping_rtt_ms": rtt}
    try:
        t = tcp_transfer(lab, a, inner[0], b, inner[1], megabytes * 10**6, timeout=120)
        result.update(tcp_ok=t.ok, tcp_bytes=t.received["bytes"], sha256=t.received["sha256"],
                      sha256_match=t.ok, mbit_per_s=round(t.mbit_per_s, 1))
    except (LabError, subprocess.TimeoutExpired) as exc:
        result.update(tcp_ok=False, tcp_error=str(exc))
    result["ok"] = result["ping_ok"] and result.get("tcp_ok", False)
    return result


def _report(established, traffic, sa_a, sa_b) -> dict:
    child_a = (sa_a.get("children") or [{}])[0]
    child_b = (sa_b.get("children") or [{}])[0]
    return {
        "ok": traffic["ok"],
        "mode": "IKEv2 (two ocfpy iked daemons)",
        "time_to_establish_ms": round(established * 1000, 1),
        "ike": {"algorithms": sa_a.get("algorithms"), "drivers": sa_a.get("drivers"),
                "nat": sa_a.get("nat")},
        "esp": {"encr": child_a.get("encr"), "integ": child_a.get("integ"),
                "esn": child_a.get("esn"), "encap": child_a.get("encap"),
                "spi_in": child_a.get("spi_in"), "spi_out": child_a.get("spi_out")},
        "esp_drivers": {"a": (child_a.get("dataplane") or {}).get("drivers"),
                        "b": (child_b.get("dataplane") or {}).get("drivers")},
        "counters": {"a": child_a.get("dataplane"), "b": child_b.get("dataplane")},
        "traffic": traffic,
    }


def _print(report: dict, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    t = report["traffic"]
    print(f"ocfpy demo: {report['mode']}: {'OK' if report['ok'] else 'FAILED'}")
    if "time_to_establish_ms" in report:
        ike = report["ike"]
        alg = ike.get("algorithms") or {}
        print(f"  IKE_SA + CHILD_SA established in {report['time_to_establish_ms']} ms")
        print("  IKE: " + "-".join(str(alg[k]) for k in ("encr", "integ", "prf", "ke")
                                   if alg.get(k)) + f"  (drivers: {_pairs(ike.get('drivers'))})")
        esp = report["esp"]
        print(f"  ESP: {esp['encr']}{'-' + esp['integ'] if esp.get('integ') else ''}"
              f"{'-esn' if esp.get('esn') else ''}, "
              f"{'UDP 4500' if esp.get('encap') else 'raw ESP'}, SPIs in {esp['spi_in']} "
              f"out {esp['spi_out']}")
    else:
        print(f"  ESP: {report['esp']} (static keys), {'UDP 4500' if report['encap'] else 'raw ESP'}")
    print(f"  ESP sessions served by: a {_pairs(report['esp_drivers']['a'])}; "
          f"b {_pairs(report['esp_drivers']['b'])}")
    print(f"  ping: {'ok' if t['ping_ok'] else 'FAILED'} (rtt min/avg/max/mdev {t['ping_rtt_ms']})")
    if t.get("tcp_ok") is not None and "tcp_bytes" in t:
        print(f"  TCP: {t['tcp_bytes'] / 1e6:.0f} MB, SHA-256 "
              f"{'match' if t['sha256_match'] else 'MISMATCH'}, {t['mbit_per_s']} Mbit/s")
    elif "tcp_error" in t:
        print(f"  TCP: FAILED: {t['tcp_error']}")
    for side, c in (report.get("counters") or {}).items():
        if c:
            print(f"  counters {side}: in {c.get('packets_in')} pkts / {c.get('bytes_in')} B, "
                  f"out {c.get('packets_out')} pkts / {c.get('bytes_out')} B, replay drops "
                  f"{c.get('replay_drops')}, auth failures {c.get('auth_failures')}, "
                  f"malformed {c.get('malformed')}")
    with contextlib.suppress(Exception):
        sys.stdout.flush()


def _pairs(mapping) -> str:
    """{'ke': 'openssl', 'prf': 'openssl'} -> 'ke openssl, prf openssl'."""
    if not isinstance(mapping, dict):
        return str(mapping)
    return ", ".join(f"{k} {v}" for k, v in mapping.items()) or "-"
