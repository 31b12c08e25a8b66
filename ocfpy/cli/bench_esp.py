"""`ocfpy bench esp`: TCP throughput and packet rates through ocfpy's userspace ESP tunnel
against strongSwan's kernel-libipsec in the same run (measurement: ocfpy.bench.esp)."""

from __future__ import annotations

import argparse

from ocfpy.cli.bench_netns import NetnsBench
from ocfpy.cli.common import add_calibration_option


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=5.0, metavar="S",
                   help="seconds per iperf3 run (default 5)")
    p.add_argument("--rounds", type=int, default=3,
                   help="runs of each figure; medians are reported (default 3)")
    p.add_argument("--esp-proposal", default="aes128gcm16", metavar="P",
                   help="ESP proposal (default aes128gcm16)")
    p.add_argument("--crypto-backend", default="openssl", metavar="NAME[,NAME...]",
                   help="force ocfpy's dataplane sessions onto one driver; auto: the "
                   "dispatcher picks; calibrated: ranked by --calibration (default openssl). "
                   "Several, comma-separated (openssl,af_alg): one tunnel each, measured in "
                   "the same runs, compared side by side")
    add_calibration_option(p, "ocfpy's dataplane (with --crypto-backend auto)")
    p.add_argument("--mtu", type=int, default=1400, help="tunnel MTU on both sides (default 1400)")
    p.add_argument("--raw-esp", action="store_true",
                   help="ocfpy sends raw ESP (IP protocol 50); default is ESP in UDP 4500, "
                   "the packets libipsec (which forces NAT-T) sends")
    p.add_argument("--gso", type=int, default=0, metavar="BYTES",
                   help="ocfpy's TUN segmentation offload, super-packets up to BYTES (0: off, "
                   "as the daemon runs)")
    p.add_argument("--udp-gso", action="store_true",
                   help="ocfpy's ESP-in-UDP socket sends runs of packets with UDP segmentation "
                   "offload and reads them coalesced (UDP GRO); off by default, as the daemon "
                   "runs unless `udp_gso = true`")
    p.add_argument("--workers", default="1", metavar="N[,N...]",
                   help="ocfpy's outbound ESP workers on a multi-queue TUN (esp_workers; default "
                   "1). Several, comma-separated (1,2): one tunnel each, measured in the same "
                   "runs, compared side by side")
    p.add_argument("--streams", type=int, default=1, metavar="N",
                   help="parallel TCP streams in the TCP figure (iperf3 -P; default 1)")
    p.add_argument("--no-offload", dest="offload", action="store_false",
                   help="ocfpy without its per-run offloads (TUN TSO/USO and coalescing, UDP "
                   "GSO/GRO: on by default, as the daemon runs unless `esp_offload = false`)")


def _check(args: argparse.Namespace) -> str | None:
    if args.duration <= 0 or args.rounds < 1:
        return "--duration must be positive and --rounds at least 1"
    if not 576 <= args.mtu <= 9000:
        return f"--mtu {args.mtu}: expected 576..9000"
    try:
        workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        workers = []
    if not workers or not all(1 <= w <= 16 for w in workers):
        return f"--workers {args.workers}: expected numbers 1..16, comma-separated"
    if not 1 <= args.streams <= 128:
        return f"--streams {args.streams}: expected 1..128"
    if args.calibration:
        from ocfpy.iked.configfile import ConfigError, calibration_path, load_calibration

        try:
            load_calibration(calibration_path(args.calibration))
        except ConfigError as exc:
            return f"--calibration: {exc}"
    return None


def _measure(args: argparse.Namespace, step) -> object:
    from ocfpy.bench import esp
    from ocfpy.iked.configfile import calibration_path

    return esp.run(seconds=args.duration, runs=args.rounds, esp=args.esp_proposal,
                   crypto_backend=args.crypto_backend, mtu=args.mtu, encap=not args.raw_esp,
                   gso=args.gso, udp_gso=args.udp_gso, offload=args.offload,
                   workers=[int(w) for w in args.workers.split(",") if w.strip()],
                   streams=args.streams, strongswan_too=not args.no_strongswan,
                   workdir=args.workdir, prefix=args.prefix, profile_dir=args.profile,
                   calibration=str(calibration_path(args.calibration))
                   if args.calibration else None, step=step)


def _errors() -> tuple[type[Exception], ...]:
    from ocfpy.bench.esp import EspBenchError

    return (EspBenchError, RuntimeError)


BENCH = NetnsBench(
    name="esp", help="ESP tunnel throughput and packet rates vs strongSwan kernel-libipsec",
    description="One iperf3 TCP stream and the 64-byte and MTU-sized UDP packet rates "
    "through ocfpy's userspace ESP tunnel and through strongSwan's kernel-libipsec "
    "tunnel, interleaved run by run, medians and ratios. Needs root and iperf3. Targets: "
    "TCP >= 3x libipsec's, 64-byte rate >= 2x, MTU-sized rate >= 1.5x (docs/benchmarking.md).",
    add_options=_options, check=_check,
    steps=lambda a: (1 + a.rounds) * len(a.crypto_backend.split(","))
    * len(a.workers.split(","))
    + (0 if a.no_strongswan else 1 + a.rounds),
    measure=_measure, show=lambda con, report: _print(con, report), errors=_errors,
    tools=("iperf3",), needs_tun=True,
    deprecated={"--seconds": "--duration", "--runs": "--rounds", "--esp": "--esp-proposal"},
)


def _print(con, report) -> None:
    from rich.table import Table

    wire = "ESP in UDP 4500" if report.encap else "raw ESP"
    t = Table(title=f"ocfpy bench esp: {report.esp}, MTU {report.mtu}, median of {report.runs} "
              f"x {report.seconds:g} s")
    tcp = "TCP Mbit/s" + (f" ({report.streams} streams)" if report.streams > 1 else "")
    for col in ("tunnel", tcp, "64 B pkt/s", f"{report.mtu} B pkt/s"):
        t.add_column(col, justify="left" if col == "tunnel" else "right")
    first = next(iter(report.backends), report.crypto_backend)  # "<backend>[, N workers]"
    rows = [(f"ocfpy userspace ({wire}, {first}"
             f"{', GSO' if report.gso else ''}{', UDP GSO/GRO' if report.udp_gso else ''}"
             f"{'' if report.offload else ', no offloads'})",
             report.ocfpy["median"])]
    for backend, b in list(report.backends.items())[1:]:  # the first is the row above
        # what the gateways reported serving their SAs: {"a": {"in": .., "out": ..}, "b": ..}
        drivers = ", ".join(sorted({str(d) for side in b["drivers"].values()
                                    if isinstance(side, dict) for d in side.values()}))
        rows.append((f"ocfpy userspace ({wire}, {backend}"
                     + (f": {drivers}" if drivers else "") + ")", b["median"]))
    if report.libipsec:
        rows.append((f"{report.libipsec['strongswan']} kernel-libipsec", report.libipsec["median"]))
    for label, m in rows:
        t.add_row(label, f"{m['tcp_mbit_s']:,.0f}", f"{m['udp64_pps']:,.0f}",
                  f"{m['udp_mtu_pps']:,.0f}")
    if report.ratios:
        r = report.ratios
        t.add_row("ratio ocfpy / libipsec", f"{r.get('tcp_mbit_s', 0):.2f}x",
                  f"{r.get('udp64_pps', 0):.2f}x", f"{r.get('udp_mtu_pps', 0):.2f}x")
    con.print(t)
    for name, met in report.targets.items():
        con.print(f"target {name}: {'met' if met else 'MISSED'}")
    for name, why in report.skipped.items():
        con.print(f"skipped {name}: {why}")
    for note in report.notes:
        con.print(f"note: {note}")
    for name, rows in report.profile.items():
        con.print(f"{name}, top functions by own time (poll waits left out):")
        for row in rows[:8]:
            con.print(f"  {row['share']:6.1%}  {row['tottime_s']:8.3f} s  {row['calls']:>9}  "
                      f"{row['function']}")
    con.print(f"load average: {' '.join(report.load_average)}")
