"""Static CHILD_SAs without IKE: one side of a tunnel with keys derived from a shared seed.

For tests, benchmarks and `ocfpy demo --static` only: real deployments get their keys from
IKE. Both sides derive the same key material from the seed, mirrored (side a's outbound SA is
side b's inbound SA), so two processes started with the same seed can talk.

    python -m ocfpy.lab.static_tunnel --side a --local 10.99.0.1 --remote 10.99.0.2 \\
        --local-ts 10.199.1.1/32 --remote-ts 10.199.2.1/32 --esp aes128gcm16 --seed S

Runs until SIGTERM or SIGINT; SIGUSR1 (and exit) writes the counters as JSON to --counters.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import logging
import signal
import sys
import time
from pathlib import Path

from ocfpy.crypto.catalogue import Primitive
from ocfpy.crypto.catalogue import get as get_transform
from ocfpy.esp.spec import ChildSaSpec, SaKeys, TrafficSelector, UdpEncap

log = logging.getLogger(__name__)

SPI_A_TO_B = 0xA0B00001  # chosen by b (b's inbound)
SPI_B_TO_A = 0xB0A00001


def _keys(seed: str, direction: str, encryption: str, integrity: str | None, spi: int) -> SaKeys:
    encr = get_transform(encryption)
    ekey = hashlib.shake_256(f"{seed}/{direction}/encr".encode()).digest(encr.keymat_size)
    ikey = b""
    if integrity:
        ikey = hashlib.shake_256(f"{seed}/{direction}/integ".encode()).digest(
            get_transform(integrity).key_size)
    return SaKeys(spi, ekey, ikey)


def parse_esp(proposal: str) -> tuple[str, str | None, bool]:
    """'aes128gcm16', 'aes256-sha256', 'aes128gcm16-esn' -> (encryption, integrity, esn)."""
    parts = proposal.lower().split("-")
    esn = "esn" in parts
    parts = [p for p in parts if p not in ("esn", "noesn")]
    if not parts:
        raise ValueError(f"ESP proposal {proposal!r}: no encryption algorithm")
    encr = get_transform(parts[0])
    integ = parts[1] if len(parts) > 1 else None
    if encr.primitive is Primitive.CIPHER and integ is None:
        integ = "sha256"
    if integ is not None:
        get_transform(integ)
    return encr.keyword, integ, esn


def static_spec(side: str, *, local: str, remote: str, local_ts: list[str],
                remote_ts: list[str], esp: str = "aes128gcm16", seed: str,
                encap: bool = False, unique_id: int = 1, replay_window: int = 128,
                lifetime_bytes: int = 0, lifetime_packets: int = 0,
                crypto_backend: str | None = None) -> ChildSaSpec:
    encryption, integrity, esn = parse_esp(esp)
    a2b = _keys(seed, "a2b", encryption, integrity, SPI_A_TO_B)
    b2a = _keys(seed, "b2a", encryption, integrity, SPI_B_TO_A)
    inbound, outbound = (b2a, a2b) if side == "a" else (a2b, b2a)
    return ChildSaSpec(
        name=f"static-{side}", unique_id=unique_id, local=ipaddress.ip_address(local),
        remote=ipaddress.ip_address(remote), inbound=inbound, outbound=outbound,
        encryption=encryption, integrity=integrity, esn=esn,
        local_ts=[TrafficSelector.from_network(t) for t in local_ts],
        remote_ts=[TrafficSelector.from_network(t) for t in remote_ts],
        encap=UdpEncap() if encap else None, replay_window=replay_window,
        lifetime_bytes=lifetime_bytes, lifetime_packets=lifetime_packets,
        crypto_backend=crypto_backend)


class StaticTunnel:
    """Two namespaces (<prefix>-a, <prefix>-b) joined by a veth pair, each running this module
    as a static-key ESP gateway, for tests, the benchmark and `ocfpy demo --static`.

    Inner hosts: 10.199.1.1 (a) and 10.199.2.1 (b); outer: 10.99.0.1 and 10.99.0.2.
    """

    OUTER = ("10.99.0.1", "10.99.0.2")
    INNER = ("10.199.1.1", "10.199.2.1")

    def __init__(self, lab, *, esp: str = "aes128gcm16", encap: bool = False,
                 seed: str | None = None, mtu: int = 1400, tun: str = "ocfpy0",
                 crypto_backend: str | None = None, calibration: str | None = None,
                 workdir: Path | None = None,
                 verbose: bool = False, gso: int = 0, udp_gso: bool = False,
                 offload: bool = True, workers: int = 1,
                 outer: tuple[str, str] | None = None, inner: tuple[str, str] | None = None):
        import os
        import tempfile

        self.OUTER = outer or self.OUTER  # instance values shadow the IPv4 defaults
        self.INNER = inner or self.INNER

        self.lab = lab
        self.esp = esp
        self.encap = encap
        self.seed = seed or os.urandom(16).hex()
        self.mtu = mtu
        self.tun = tun
        self.crypto_backend = crypto_backend
        self.calibration = calibration
        self.verbose = verbose
        self.gso = gso
        self.udp_gso = udp_gso
        self.offload = offload
        self.workers = workers
        self._own_dir = workdir is None
        self.dir = workdir or Path(tempfile.mkdtemp(prefix=f"{lab.prefix}-static-"))
        self.procs: dict[str, object] = {}
        self.drivers: dict[str, dict] = {}

    def __enter__(self) -> StaticTunnel:
        from ocfpy.lab.netlab import two_hosts

        self.a, self.b, self.link = two_hosts(
            self.lab, outer=(self._net(self.OUTER[0], 24, 64), self._net(self.OUTER[1], 24, 64)),
            inner=(self._host(self.INNER[0]), self._host(self.INNER[1])))
        self.ns = {"a": self.a, "b": self.b}
        for side, (me, peer) in (("a", (0, 1)), ("b", (1, 0))):
            argv = [sys.executable, "-m", "ocfpy.lab.static_tunnel", "--side", side,
                    "--local", self.OUTER[me], "--remote", self.OUTER[peer],
                    "--local-ts", self._host(self.INNER[me]),
                    "--remote-ts", self._host(self.INNER[peer]),
                    "--esp", self.esp, "--seed", self.seed, "--tun", self.tun,
                    "--mtu", str(self.mtu), "--counters", str(self.dir / f"{side}.json"),
                    "--ready", str(self.dir / f"{side}.ready")]
            argv += ["--encap"] if self.encap else []
            argv += ["--crypto-backend", self.crypto_backend] if self.crypto_backend else []
            argv += ["--calibration", self.calibration] if self.calibration else []
            argv += ["-v"] if self.verbose else []
            argv += ["--gso", str(self.gso)] if self.gso else []
            argv += ["--udp-gso"] if self.udp_gso else []
            argv += [] if self.offload else ["--no-offload"]
            argv += ["--workers", str(self.workers)] if self.workers != 1 else []
            with open(self.dir / f"{side}.log", "w") as log_file:  # the child keeps a copy
                self.procs[side] = self.lab.popen(self.ns[side], argv, stdout=log_file,
                                                  stderr=log_file)
        deadline = time.monotonic() + 30
        for side in "ab":
            ready = self.dir / f"{side}.ready"
            while not ready.exists():
                if self.procs[side].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"static ESP gateway {side} did not come up: "
                                       f"{self.log(side)[-2000:]}")
                time.sleep(0.05)
            self.drivers[side] = json.loads(ready.read_text())
        return self

    def __exit__(self, *exc) -> None:
        import shutil

        for proc in self.procs.values():
            self.lab.stop(proc)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def _net(addr: str, v4: int, v6: int) -> str:
        return f"{addr}/{v6 if ':' in addr else v4}"

    @classmethod
    def _host(cls, addr: str) -> str:
        return cls._net(addr, 32, 128)

    def log(self, side: str) -> str:
        path = self.dir / f"{side}.log"
        return path.read_text() if path.exists() else ""

    def counters(self, side: str) -> dict:
        """Ask the gateway for fresh counters (SIGUSR1) and read them."""
        path = self.dir / f"{side}.json"
        before = path.stat().st_mtime_ns if path.exists() else 0
        import os

        os.kill(self.procs[side].pid, signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if path.exists() and path.stat().st_mtime_ns != before:
                return json.loads(path.read_text())
            time.sleep(0.02)
        raise RuntimeError(f"gateway {side} wrote no counters: {self.log(side)[-1000:]}")

    def ping(self, count: int = 3, *, pattern: str | None = None, size: int = 56):
        argv = ["ping", "-c", str(count), "-i", "0.2", "-W", "2", "-s", str(size),
                "-I", self.INNER[0], self.INNER[1]]
        if ":" in self.INNER[1]:
            argv.insert(1, "-6")
        if pattern:
            argv[1:1] = ["-p", pattern]
        return self.lab.run(self.a, argv, timeout=count * 2 + 10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ocfpy.lab.static_tunnel", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", choices=["a", "b"], required=True)
    p.add_argument("--local", required=True)
    p.add_argument("--remote", required=True)
    p.add_argument("--local-ts", action="append", required=True)
    p.add_argument("--remote-ts", action="append", required=True)
    p.add_argument("--esp", default="aes128gcm16")
    p.add_argument("--seed", required=True)
    p.add_argument("--encap", action="store_true", help="UDP-encapsulate (RFC 3948, port 4500)")
    p.add_argument("--tun", default="ocfpy0")
    p.add_argument("--mtu", type=int, default=1400)
    p.add_argument("--gso", type=int, default=0, metavar="BYTES",
                   help="TCP segmentation offload on the TUN, super-packets up to BYTES")
    p.add_argument("--udp-gso", action="store_true",
                   help="UDP segmentation offload and GRO on the ESP-in-UDP socket")
    p.add_argument("--no-offload", dest="offload", action="store_false",
                   help="no per-run offloads (TUN TSO/USO and coalescing, UDP GSO/GRO)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="ESP worker processes per direction (multi-queue TUN; esp_workers)")
    p.add_argument("--crypto-backend", default=None, metavar="NAME",
                   help="force the SA's sessions onto one driver (default: the dispatcher picks)")
    p.add_argument("--calibration", metavar="PATH",
                   help="rank drivers of one kind by this `ocfpy bench crypto --save` file")
    p.add_argument("--replay-window", type=int, default=128)
    p.add_argument("--counters", type=Path, help="write counters here on SIGUSR1 and at exit")
    p.add_argument("--ready", type=Path, help="touch this file once the SA is installed")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format=f"%(asctime)s {args.side} %(levelname)s %(name)s: %(message)s")

    from ocfpy.crypto.dispatcher import Dispatcher
    from ocfpy.esp.dataplane.userspace import UserspaceDataplane
    from ocfpy.iked.configfile import ConfigError, calibration_path, load_calibration

    try:
        calibration = (load_calibration(calibration_path(args.calibration))
                       if args.calibration else None)
    except ConfigError as exc:
        p.error(f"--calibration: {exc}")
    dispatcher = Dispatcher(backend=args.crypto_backend, calibration=calibration)
    spec = static_spec(args.side, local=args.local, remote=args.remote,
                       local_ts=args.local_ts, remote_ts=args.remote_ts, esp=args.esp,
                       seed=args.seed, encap=args.encap, replay_window=args.replay_window,
                       crypto_backend=args.crypto_backend)
    stop = False

    def dump(*_):
        if args.counters:
            c = dp.counters(spec.unique_id)
            data = {"sa": vars(c), "dataplane": dp.stats(), "time": time.time(),
                    "lanes": [vars(x) for x in dp.lane_counters(spec.unique_id)],
                    "esp": args.esp, "encap": args.encap}
            tmp = args.counters.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(args.counters)

    def terminate(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    with UserspaceDataplane(dispatcher, tun_name=args.tun, mtu=args.mtu,
                            gso_max=args.gso, udp_gso=args.udp_gso,
                            offload=args.offload, workers=args.workers) as dp:
        dp.install(spec)
        signal.signal(signal.SIGUSR1, dump)
        dump()
        if args.ready:  # written whole, then renamed: the parent polls for the name
            partial = args.ready.with_name(args.ready.name + ".partial")
            partial.write_text(json.dumps(dp.counters(spec.unique_id).drivers))
            partial.replace(args.ready)
        while not stop:
            signal.pause() if hasattr(signal, "pause") else time.sleep(1)
        dump()
    return 0


if __name__ == "__main__":
    sys.exit(main())
