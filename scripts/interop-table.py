#!/usr/bin/env python3
"""Render docs/interop.md's results table from the records the VM lane's interop rows wrote.

Each row of tests/kernel/interop writes one JSON record (peer, version, role, row, dataplane,
negotiated IKE and ESP suites, the tunnel rows' TCP transfer, capture and listing checks,
result, reason, date) to results/vm/interop/. This script puts
them, sorted, between the ``<!-- interop-table:begin -->`` and ``<!-- interop-table:end -->``
markers of docs/interop.md; everything else in that file is left as written. A failing or
skipped row is shown as such, with its reason: the table says what the last run measured.

    python3 scripts/interop-table.py [--results results/vm/interop] [--doc docs/interop.md]
    python3 scripts/interop-table.py --check   # exit 1 if the doc's table differs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- interop-table:begin -->", "<!-- interop-table:end -->"
PEER_ORDER = {"libreswan": 0, "openiked": 1, "strongswan": 2}
COLUMNS = ("peer", "version", "role", "dataplane", "row", "peer's configuration",
           "IKE SA (ocfpy)", "CHILD SA (ocfpy)", "TCP through the tunnel",
           "capture between the gateways", "peer's own listing vs ocfpy sa list", "result",
           "date")


def load(results: Path) -> list[dict]:
    records = []
    for path in sorted(results.glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            print(f"interop-table: skipping {path}: {exc}", file=sys.stderr)
    return records


def _cell(text: object) -> str:
    return str(text if text not in (None, "") else "-").replace("|", "\\|").replace("\n", " ")


def render(records: list[dict]) -> str:
    records = sorted(records, key=lambda r: (PEER_ORDER.get(r.get("peer"), 9), r.get("peer"),
                                             str(r.get("row")), str(r.get("role")),
                                             str(r.get("dataplane"))))
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in records:
        result = r.get("result", "?")
        if result != "pass" and r.get("reason"):
            reason = r["reason"]  # the record keeps the whole story; the table its start
            result = f"**{result}**: {reason[:240]}{'...' if len(reason) > 240 else ''}"
        elif r.get("warnings"):
            result = f"{result} ({'; '.join(r['warnings'])})"
        lines.append("| " + " | ".join(_cell(v) for v in (
            r.get("peer"), r.get("version"), r.get("role"), r.get("dataplane"), r.get("row"),
            r.get("peer_conf"), r.get("ike"), r.get("esp"), r.get("transfer"),
            r.get("capture"), r.get("peer_listing"), result, r.get("date"))) + " |")
    if not records:
        lines.append("| (no records: run `bash scripts/vm-lane.sh -k interop`) |" +
                     " |" * (len(COLUMNS) - 1))
    return "\n".join(lines)


def summary(records: list[dict]) -> list[str]:
    """Per peer and dataplane: how many rows passed, failed, were impossible or skipped."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for r in records:
        key = (str(r.get("peer")), str(r.get("dataplane")))
        by = counts.setdefault(key, {})
        by[r.get("result", "?")] = by.get(r.get("result", "?"), 0) + 1
    kinds = ("pass", "fail", "impossible", "skipped")
    lines = ["| peer | dataplane | " + " | ".join(kinds) + " |", "|" + "---|" * (2 + len(kinds))]
    for (peer, dataplane), by in sorted(counts.items(),
                                        key=lambda kv: (PEER_ORDER.get(kv[0][0], 9), kv[0])):
        lines.append(f"| {peer} | {dataplane} | " + " | ".join(str(by.get(k, 0)) for k in kinds)
                     + " |")
    return lines


def splice(doc: str, table: str) -> str:
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"interop-table: the doc lacks the {BEGIN} / {END} markers")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=REPO / "results/vm/interop")
    ap.add_argument("--doc", type=Path, default=REPO / "docs/interop.md")
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    args = ap.parse_args(argv)
    records = load(args.results)
    doc = args.doc.read_text()
    new = splice(doc, "\n".join(summary(records) + [""]) + "\n" + render(records)
                 if records else render(records))
    if args.check:
        return 0 if new == doc else 1
    args.doc.write_text(new)
    print(f"interop-table: {len(records)} rows from {args.results} into {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
