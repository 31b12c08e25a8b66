"""`ocfpy algorithms`: the catalogue (strongSwan keywords, IKEv2 IDs, sizes)."""

from __future__ import annotations

import argparse

from ocfpy.cli.common import console, print_json
from ocfpy.crypto import catalogue


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("algorithms", help="list the algorithm catalogue",
                       description="Every algorithm ocfpy knows, by strongSwan proposal keyword, "
                       "with its IKEv2 transform type and ID and its sizes in bytes.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = []
    for t in catalogue.all_transforms():
        rows.append({
            "keyword": t.keyword, "primitive": t.primitive.value,
            "type": t.transform_type.name if t.transform_type else None,
            "id": t.transform_id, "key_bits": t.key_bits, "key": t.key_size, "salt": t.salt_size,
            "iv": t.iv_size, "block": t.block_size, "icv": t.icv_size, "output": t.output_size,
            "description": t.description, "rfc": t.rfc,
        })
    if args.json:
        print_json(rows)
        return 0
    from rich.table import Table

    table = Table(title="ocfpy algorithm catalogue (sizes in bytes)")
    for col in ("keyword", "type", "id", "key", "salt", "iv", "icv", "description", "rfc"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["keyword"], r["type"] or "-", str(r["id"] if r["id"] is not None else "-"),
                      str(r["key"]), str(r["salt"]), str(r["iv"]), str(r["icv"]),
                      r["description"], r["rfc"])
    console().print(table)
    return 0
