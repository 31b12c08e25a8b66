"""`ocfpy devices`: crypto accelerators on this machine, bound or not, what each offers, and why
the unusable ones are not used. ``--watch`` then prints hot-plug events as they happen."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from ocfpy.cli.common import console, deprecated_alias, fail, print_json
from ocfpy.crypto.devices import discovery


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "devices", help="list crypto accelerators (QAT, CCP, virtio-crypto, ...) and their state",
        description="Find known crypto accelerators (PCI and platform devices, via udev), the "
        "kernel driver bound to each, and the algorithms that driver registered in "
        "/proc/crypto; say which catalogue algorithms each can serve, or why it cannot.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--watch", action="store_true",
                   help="after the list, print hot-plug events (add/bind/unbind/remove) until "
                   "interrupted or --stop-after S seconds")
    p.add_argument("--stop-after", type=float, default=None, metavar="S",
                   help="with --watch, stop after S seconds")
    p.add_argument("--from", dest="records", metavar="FILE",
                   help="read recorded devices (and /proc/crypto) from FILE instead of this "
                   "machine (a file written by --record)")
    p.add_argument("--record", metavar="FILE",
                   help="write this machine's known devices and /proc/crypto to FILE (for bug "
                   "reports and test fixtures), then list them")
    p.add_argument("--known", action="store_true", help="print the table of known accelerators")
    # The old spelling, hidden: across ocfpy's commands no option is called --seconds now.
    deprecated_alias(p, "--seconds", "--stop-after")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.known:
        return _known(args)
    if args.record:
        data = discovery.record_system()
        with open(args.record, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
    if args.records:
        try:
            records, algorithms = discovery.load_records(args.records)
        except (OSError, ValueError) as exc:
            fail(f"{args.records}: {exc}")
            return 2
        devices = discovery.discover(records, algorithms or [])
    else:
        devices = discovery.discover()
    if args.json and not args.watch:
        print_json([d.as_dict() for d in devices])
        return 0
    if args.json:
        for d in devices:
            _json_line({"event": "present", **d.as_dict()})
    else:
        _table(devices)
    if args.watch:
        return _watch(args)
    return 0


def _table(devices: list[discovery.FoundDevice]) -> None:
    if not devices:
        print("no known crypto accelerator found "
              f"({sum(len(f.ids) for f in discovery.KNOWN)} PCI/platform IDs checked; "
              "`ocfpy devices --known` lists them)")
        return
    from rich.table import Table

    table = Table(title="crypto accelerators", show_lines=True)
    for col in ("device", "address", "kernel driver", "registered algorithms", "ocfpy can use"):
        table.add_column(col, overflow="fold")
    for d in devices:
        regs = "\n".join(f"{a.name}: {a.driver} ({a.priority}"
                         + (f", selftest {a.selftest}" if a.selftest != "passed" else "") + ")"
                         for a in d.algorithms if not a.internal) or "-"
        use = (f"[green]{' '.join(sorted(d.usable, key=discovery._keyword_order))}[/]"
               if d.is_usable else f"[red]no[/]: {d.reason}")
        table.add_row(f"{d.family.name}\n{d.device_id}", d.address, d.kernel_driver or "-",
                      regs, use)
    console().print(table)


def _known(args: argparse.Namespace) -> int:
    rows = discovery.table_as_dicts()
    if args.json:
        print_json(rows)
        return 0
    from rich.table import Table

    table = Table(title="known crypto accelerators", show_lines=False)
    for col in ("family", "bus", "IDs", "kernel driver", "module", "algorithms named"):
        table.add_column(col, overflow="fold")
    for f in discovery.KNOWN:
        table.add_row(f.name, f.bus, " ".join(f.ids), " ".join(f.kernel_drivers) or "-",
                      f.module or "-", f.crypto_driver)
    console().print(table)
    return 0


def _json_line(data: dict) -> None:
    sys.stdout.write(json.dumps(data, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def _watch(args: argparse.Namespace) -> int:
    from ocfpy.crypto.devices.hotplug import HotplugEvent, HotplugMonitor

    monitor = HotplugMonitor()
    done = threading.Event()

    def show(event: HotplugEvent) -> None:
        found = None
        if event.record is not None and event.action == "bind":
            found = discovery.examine(event.record, discovery.read_proc_crypto())
        if args.json:
            _json_line({"event": event.action, "sys_path": event.sys_path,
                        "subsystem": event.subsystem, "driver": event.driver,
                        "device": found.as_dict() if found else None, "time": event.when})
        else:
            stamp = time.strftime("%H:%M:%S", time.localtime(event.when))
            line = f"{stamp} {event.describe()}"
            if found is not None:
                line += f"\n         {found.summary()}"
            print(line, flush=True)

    monitor.subscribe(show)
    if monitor.error:
        fail(monitor.error, 1)
    if not args.json:
        print(f"watching {monitor.source} events on {', '.join(monitor.subsystems)} "
              "(Ctrl-C to stop)", flush=True)
    try:
        done.wait(args.stop_after)
    finally:
        monitor.stop()
    return 0
