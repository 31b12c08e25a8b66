"""`ocfpy sa`: talk to a running `ocfpy iked` over its control socket.

    ocfpy sa list [--json]            IKE and CHILD SAs: algorithms, drivers, times, traffic
    ocfpy sa list-conns [--json]      the connections the daemon has loaded
    ocfpy sa initiate NAME [--child C] [--wait S]
    ocfpy sa terminate NAME|ID [--child C]
    ocfpy sa rekey NAME|ID --ike | --child [C]
    ocfpy sa why NAME                 the last negotiation failure, in plain words
    ocfpy sa stats [--json]
    ocfpy sa reload                   re-read the daemon's config file (as SIGHUP does)
    ocfpy sa monitor [--json]         stream the daemon's events as they happen
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

DEFAULT_CONTROL = "/run/ocfpy/iked.sock"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sa", help="list, start, stop and explain SAs of a running daemon",
                              description="Control a running `ocfpy iked` through its control "
                              "socket.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--control", metavar="PATH", default=DEFAULT_CONTROL,
                        help=f"the daemon's control socket (default {DEFAULT_CONTROL})")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--timeout", type=float, default=10.0, metavar="S",
                        help="seconds to wait for the daemon (default 10)")
    sub = p.add_subparsers(dest="sa_command", metavar="ACTION", required=True)
    sub.add_parser("list", parents=[common], help="IKE and CHILD SAs: algorithms, drivers, "
                   "established time, rekey-in, traffic")
    sub.add_parser("list-conns", parents=[common],
                   help="the connections the daemon has loaded (after defaults and reloads)")
    ini = sub.add_parser("initiate", parents=[common], help="bring a connection up")
    ini.add_argument("name")
    ini.add_argument("--child", help="which child to start (default: all of the connection's)")
    ini.add_argument("--wait", type=float, default=5.0, metavar="S",
                     help="wait up to S seconds for the result (0: do not wait; default 5)")
    term = sub.add_parser("terminate", parents=[common],
                          help="delete an IKE SA (by name or id), or one CHILD_SA")
    term.add_argument("name", help="connection name or IKE SA id")
    term.add_argument("--child", metavar="C",
                      help="delete only this CHILD_SA: a child name of the connection, or a "
                      "CHILD_SA's unique id")
    rek = sub.add_parser("rekey", parents=[common], help="rekey an IKE SA or its CHILD_SAs now")
    rek.add_argument("name", help="connection name or IKE SA id")
    which = rek.add_mutually_exclusive_group(required=True)
    which.add_argument("--ike", action="store_true", help="rekey the IKE SA(s)")
    which.add_argument("--child", nargs="?", const="", metavar="C",
                       help="rekey the CHILD_SAs (only child C, by name or unique id, if given)")
    why = sub.add_parser("why", parents=[common], help="explain the last negotiation failure")
    why.add_argument("name")
    sub.add_parser("stats", parents=[common], help="daemon and engine counters")
    sub.add_parser("drivers", parents=[common], help="the crypto drivers the daemon uses")
    sub.add_parser("reload", parents=[common], help="re-read the daemon's config file: add, "
                   "remove and replace connections without touching the others "
                   "(docs/operations.md)")
    mon = sub.add_parser("monitor", parents=[common], help="stream the daemon's events: SAs "
                         "up/down, rekeys, DPD, failures, reloads, drivers")
    mon.add_argument("--count", type=int, metavar="N",
                     help="exit after N events (default: until interrupted or the daemon stops)")
    p.set_defaults(func=run)


def _monitor(args: argparse.Namespace, client) -> int:
    """Exit 0 on Ctrl-C, after --count events, or when the daemon says it stops; 1 when the
    stream ends any other way (the daemon died)."""
    seen = 0
    last = None
    try:
        for event in client.events():
            last = event.get("event")
            if args.json:
                print(json.dumps(event, default=str), flush=True)
            else:
                print(_event_line(event), flush=True)
            seen += 1
            if args.count is not None and seen >= args.count:
                return 0
    except KeyboardInterrupt:
        return 0
    if last == "shutdown":
        return 0
    print("ocfpy sa monitor: the daemon closed the event stream", file=sys.stderr)
    return 1


def _event_line(event: dict[str, Any]) -> str:
    """One line per event: time, kind, the SA in charon's notation, then the rest."""
    import time as _time

    e = dict(event)
    stamp = _time.strftime("%H:%M:%S", _time.localtime(e.pop("time", 0) or 0))
    kind = e.pop("event", "?")
    name = e.pop("name", None)
    who = ""
    if "unique_id" in e:
        who = f"{name or '?'}{{{e.pop('unique_id')}}}"
        e.pop("ike_id", None)
    elif "ike_id" in e:
        who = f"{name or '?'}[{e.pop('ike_id')}]"
    elif name:
        who = str(name)
    text = e.pop("explanation", None)
    rest = " ".join(f"{k}={v}" for k, v in e.items() if v not in (None, [], ""))
    return " ".join(part for part in (stamp, f"{kind:12}", who, rest, text) if part)


def run(args: argparse.Namespace) -> int:
    from ocfpy.iked.control import ControlClient, ControlError

    timeout = args.timeout
    if args.sa_command == "monitor":
        try:
            with ControlClient(args.control, timeout=timeout) as client:
                return _monitor(args, client)
        except ControlError as exc:
            print(f"ocfpy sa monitor: {exc}", file=sys.stderr)
            return 1
    if args.sa_command == "initiate":
        timeout = max(timeout, args.wait + 2)
    try:
        with ControlClient(args.control, timeout=timeout) as client:
            if args.sa_command == "list":
                result = client.call("list")
                return _out(args, result, _print_list)
            if args.sa_command == "initiate":
                result = client.call("initiate", name=args.name, child=args.child,
                                     wait=args.wait or None)
                return _out(args, result, lambda r: print(
                    f"{args.name}: IKE_SA #{r.get('ike_id')} {r.get('state')}"))
            if args.sa_command == "terminate":
                result = client.call("terminate", name=args.name, child=args.child)
                what = f"{args.name} child {args.child}" if args.child else args.name
                return _out(args, result, lambda r: print(f"{what}: deleting"))
            if args.sa_command == "rekey":
                kind = "ike" if args.ike else "child"
                result = client.call("rekey", name=args.name, kind=kind,
                                     child=args.child or None)
                return _out(args, result, lambda r: print(
                    f"{args.name}: rekeying {'IKE SA' if kind == 'ike' else 'CHILD_SA'} "
                    + ", ".join(f"#{i}" for i in r.get("ids", []))))
            if args.sa_command == "list-conns":
                return _out(args, client.call("list-conns"), _print_conns)
            if args.sa_command == "why":
                result = client.call("why", name=args.name)
                return _out(args, result, lambda r: print(
                    r or f"{args.name}: no negotiation failure recorded"))
            if args.sa_command == "stats":
                return _out(args, client.call("stats"), _print_stats)
            if args.sa_command == "drivers":
                return _out(args, client.call("drivers"), _print_drivers)
            if args.sa_command == "reload":
                return _out(args, client.call("reload"), _print_reload)
    except ControlError as exc:
        print(f"ocfpy sa {args.sa_command}: {exc}", file=sys.stderr)
        return 1
    return 2


def _out(args: argparse.Namespace, result: Any, human) -> int:
    if args.json:
        json.dump(result, sys.stdout, indent=2, default=str)
        print()
    else:
        human(result)
    return 0


def _algorithms(d: dict[str, Any]) -> str:
    """encr-integ-prf-ke of an IKE SA (its "algorithms"), or encr-integ-esn of a CHILD_SA."""
    algs = d.get("algorithms") or d
    words = [str(algs[k]) for k in ("encr", "integ", "prf", "ke") if algs.get(k)]
    if "esn" in d:
        words.append("esn" if d["esn"] else "noesn")
    text = "-".join(words)
    if d.get("weak"):  # a transform RFC 8247 / 8221 rate weak that the peer forced
        text += f"\nWEAK: {', '.join(d['weak'])}"
    return text


def _drivers(d: dict[str, Any]) -> str:
    """Each driver with why the daemon's dispatcher chose it (calibrated, forced, kind,
    priority, fallback, migrated; docs/configuration.md)."""
    drivers = d.get("drivers") or {}
    why = d.get("selection") or {}
    if isinstance(drivers, dict) and drivers:
        return ", ".join(f"{k}: {v}" + (f" ({why[k]})" if why.get(k) else "")
                         for k, v in drivers.items())
    reasons = set(why.values()) if isinstance(why, dict) else set()
    driver = str(d.get("driver") or "")
    if driver and len(reasons) == 1 and None not in reasons:
        return f"{driver} ({reasons.pop()})"
    if driver and reasons:
        return f"{driver} (" + ", ".join(f"{k}: {v}" for k, v in why.items()) + ")"
    return driver


def _endpoint(side: dict[str, Any] | None, auth: str | None = None,
              cert: str | None = None) -> str:
    """Address, identity, and how that side authenticated (with the peer's certificate)."""
    side = side or {}
    text = f"{side.get('addr', '')}:{side.get('port', '')}\n{side.get('id') or ''}"
    if auth:
        text += f"\nauth: {auth}"
    if cert:
        text += f"\ncert: {cert}"
    return text


def _print_list(sas: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not sas:
        console.print("no SAs")
        return
    table = Table(title="IKE and CHILD SAs", show_lines=True)
    for col in ("SA", "state", "local", "remote", "SPIs", "algorithms", "drivers", "time"):
        table.add_column(col, overflow="fold")
    for sa in sas:
        role = "initiator" if sa.get("initiator") else "responder"
        table.add_row(
            f"{sa.get('name')} #{sa.get('id')}", f"{sa.get('state', '')}\n{role}",
            _endpoint(sa.get("local"), (sa.get("auth") or {}).get("local")),
            _endpoint(sa.get("remote"), (sa.get("auth") or {}).get("remote"),
                      (sa.get("auth") or {}).get("peer_cert")),
            f"{sa.get('spi_i', '')}_i\n{sa.get('spi_r', '')}_r", _algorithms(sa), _drivers(sa),
            _times(sa),
        )
        for child in sa.get("children", []):
            counters = child.get("dataplane") or {}
            traffic = ""
            if counters:
                traffic = (f"\n{counters.get('name', '')}: in {counters.get('packets_in', 0)} pkt"
                           f"/{counters.get('bytes_in', 0)} B, out "
                           f"{counters.get('packets_out', 0)} pkt/{counters.get('bytes_out', 0)} B")
            table.add_row(
                f"  └ {child.get('name')} #{child.get('unique_id', '')}",
                f"{child.get('mode', '')}" + (" udp-encap" if child.get("encap") else ""),
                ", ".join(child.get("local_ts", [])), ", ".join(child.get("remote_ts", [])),
                f"{child.get('spi_in', '')}_i\n{child.get('spi_out', '')}_o",
                _algorithms(child) + traffic, _drivers(child), _times(child),
            )
    console.print(table)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _times(d: dict[str, Any]) -> str:
    """up for, rekey in, expires in (or never: no time-based hard lifetime)."""
    lines = [f"up {_duration(d.get('established_s'))}"]
    if d.get("rekey_in_s") is not None:
        lines.append(f"rekey in {_duration(d['rekey_in_s'])}")
    lines.append(f"expires in {_duration(d['expires_in_s'])}" if d.get("expires_in_s")
                 is not None else "expires: never")
    return "\n".join(lines)


def _print_conns(conns: list[dict[str, Any]]) -> None:
    if not conns:
        print("no connections loaded")
    for c in conns:
        print(f"{c['name']}: {', '.join(c['local_addrs']) or '%any'}[{c['local_port']}] "
              f"<-> {', '.join(c['remote_addrs']) or '%any'}[{c['remote_port']}], "
              f"{c['ike_sas_up']} IKE SA(s) up")
        print(f"  ids: {c.get('local_id') or '(address)'} <-> {c.get('remote_id') or '(any)'}")
        print(f"  proposals: {', '.join(c['proposals'])}")
        print(f"  rekey {_duration(c['rekey_time'])}, dpd {_duration(c['dpd_delay'])}, "
              f"keyingtries {c['keyingtries'] or 'forever'}")
        for ch in c["children"]:
            print(f"  child {ch['name']}: {', '.join(ch['local_ts'])} <-> "
                  f"{', '.join(ch['remote_ts'])} {ch['mode']}; {', '.join(ch['esp_proposals'])}"
                  f"; start {ch['start_action']}, dpd {ch['dpd_action']}, close "
                  f"{ch['close_action']}")
            trap = ch.get("trap")
            if trap:  # swanctl --list-pols' "TRAP" line
                dp = trap.get("dataplane") or {}
                counts = ", ".join(f"{k} {v}" for k, v in sorted(dp.items()))
                print(f"    TRAP ({trap['installed_by']}): {', '.join(trap['local_ts'])} === "
                      f"{', '.join(trap['remote_ts'])}; acquires {trap['acquires']}"
                      + (f"; {counts}" if counts else ""))


def _print_stats(stats: dict[str, Any]) -> None:
    for section, values in stats.items():
        if isinstance(values, dict):
            print(f"{section}:")
            for k, v in sorted(values.items()):
                print(f"  {k:28} {v}")
        else:
            print(f"{section}: {values}")


def _print_reload(result: dict[str, list[str]]) -> None:
    for outcome in ("added", "removed", "changed", "unchanged"):
        names = result.get(outcome) or []
        print(f"{outcome:9} {', '.join(names) if names else '-'}")
    if result.get("restart_needed"):
        print("not reloaded (they take effect at the next start): "
              + ", ".join(result["restart_needed"]))


def _print_drivers(drivers: list[dict[str, Any]]) -> None:
    for d in drivers:
        print(f"{d['name']:12} {d['status']:12} {d.get('kind') or '-':12} "
              f"{len(d.get('algorithms', []))} algorithms, {d.get('sessions', 0)} sessions"
              + (f"  ({d['reason']})" if d.get("reason") else ""))
