"""`ocfpy bench esp`: TCP throughput and packet rates through ocfpy's userspace ESP tunnel
against strongSwan's kernel-libipsec in the same run (measurement: ocfpy.bench.esp)."""

from __future__ import annotations

import argparse

from ocfpy.cli.common import console, fail, print_json

SETUP_HINT = "install the lanes' packages with `bash scripts/setup.sh`"


def register(bsub: argparse._SubParsersAction) -> None:
    p = bsub.add_parser(
        "esp", help="ESP tunnel throughput and packet rates vs strongSwan kernel-libipsec",
        description="One iperf3 TCP stream and the 64-byte and MTU-sized UDP packet rates "
        "through ocfpy's userspace ESP tunnel and through strongSwan's kernel-libipsec "
        "tunnel, interleaved run by run, medians and ratios. Needs root and iperf3. Targets: "
        "TCP >= 2.5x libipsec's, 64-byte rate >= 2x (docs/benchmarking.md).",
    )
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per iperf3 run (default 5)")
    p.add_argument("--runs", type=int, default=3, help="runs; medians are reported (default 3)")
    p.add_argument("--esp", default="aes128gcm16", help="ESP proposal (default aes128gcm16)")
    p.add_argument("--crypto-backend", default="openssl", metavar="DRIVER",
                   help="crypto driver for ocfpy's dataplane (default openssl)")
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
    p.add_argument("--no-strongswan", action="store_true",
                   help="ocfpy only (no strongSwan needed; no ratios)")
    p.add_argument("--profile", metavar="DIR",
                   help="cProfile ocfpy's ESP workers into DIR and print their top entries")
    p.add_argument("--workdir", metavar="DIR", help="keep charon's configs and logs here")
    p.add_argument("--prefix", default="obn",
                   help="name prefix of the namespaces, links and temp folders (default obn; "
                   "at most 5 characters, letters and digits)")
    p.add_argument("--json", action="store_true", help="print JSON results")
    p.set_defaults(func=run_esp)


def preflight(args: argparse.Namespace) -> str | None:
    import os
    import shutil

    if not (args.prefix.isalnum() and args.prefix.isascii() and 1 <= len(args.prefix) <= 5):
        return f"--prefix {args.prefix!r}: 1 to 5 letters or digits (interface names are short)"
    if os.geteuid() != 0:
        return "`ocfpy bench esp` needs root (network namespaces, TUN devices): run it with sudo"
    if args.seconds <= 0 or args.runs < 1:
        return "--seconds must be positive and --runs at least 1"
    if not 576 <= args.mtu <= 9000:
        return f"--mtu {args.mtu}: expected 576..9000"
    if shutil.which("iperf3") is None:
        return f"iperf3 is missing: {SETUP_HINT} (lane net), or apt-get install iperf3"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing: this kernel or container has no TUN support"
    if not args.no_strongswan:
        from ocfpy.lab.charon import unavailable_reason

        why = unavailable_reason()
        if why:
            return (f"strongSwan's charon cannot run: {why}; {SETUP_HINT} (lane interop), "
                    "or pass --no-strongswan for ocfpy's figures alone")
    return None


def run_esp(args: argparse.Namespace) -> int:
    why = preflight(args)
    if why:
        fail(why)
    from rich.progress import Progress

    from ocfpy.bench import esp
    from ocfpy.cli.bench import _machine

    con = console()
    steps = 1 + args.runs + (0 if args.no_strongswan else 1 + args.runs)
    with Progress(console=con, transient=True, disable=args.json) as progress:
        task = progress.add_task("starting", total=steps)

        def step(label: str) -> None:
            progress.update(task, advance=1, description=label)
        try:
            report = esp.run(seconds=args.seconds, runs=args.runs, esp=args.esp,
                             crypto_backend=args.crypto_backend, mtu=args.mtu,
                             encap=not args.raw_esp, gso=args.gso, udp_gso=args.udp_gso,
                             strongswan_too=not args.no_strongswan, workdir=args.workdir,
                             prefix=args.prefix,
                             profile_dir=args.profile, step=step)
        except (esp.EspBenchError, RuntimeError) as exc:
            fail(f"bench esp: {exc}", 1)
            raise  # unreachable
    result = report.as_dict()
    result["machine"] = _machine()
    if args.json:
        print_json(result)
        return 0
    _print(con, report)
    return 0


def _print(con, report) -> None:
    from rich.table import Table

    wire = "ESP in UDP 4500" if report.encap else "raw ESP"
    t = Table(title=f"ocfpy bench esp: {report.esp}, MTU {report.mtu}, median of {report.runs} "
              f"x {report.seconds:g} s")
    for col in ("tunnel", "TCP Mbit/s", "64 B pkt/s", f"{report.mtu} B pkt/s"):
        t.add_column(col, justify="left" if col == "tunnel" else "right")
    rows = [(f"ocfpy userspace ({wire}, {report.crypto_backend}"
             f"{', GSO' if report.gso else ''}{', UDP GSO/GRO' if report.udp_gso else ''})",
             report.ocfpy["median"])]
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
