"""scripts/interop-table.py: docs/interop.md's interop table is rendered from the VM lane's
row records, failing and impossible rows included with their reasons."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("interop_table", REPO / "scripts/interop-table.py")
T = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(T)

DOC = "# Title\n\ntext before\n\n<!-- interop-table:begin -->\nold | table\n" \
      "<!-- interop-table:end -->\n\ntext after\n"


def _records(tmp_path: Path) -> Path:
    rows = [
        {"peer": "strongswan", "version": "5.9.8", "role": "peer initiates", "dataplane": "xfrm",
         "row": "zero-config", "peer_conf": "(defaults)", "ike": "aes128-sha256-prfsha256-x25519",
         "esp": "aes128gcm16", "result": "pass", "warnings": [], "date": "2026-12-02",
         "transfer": "1000 kB each way, SHA-256 equal", "capture": "only ESP: 700 out under c0",
         "peer_listing": "swanctl --list-sas: IKE SPIs equal"},
        {"peer": "libreswan", "version": "4.10", "role": "ocfpy initiates", "dataplane": "xfrm",
         "row": "Curve448", "result": "impossible", "reason": "no DH32 | in 4.10",
         "date": "2026-12-02"},
        {"peer": "openiked", "version": "7.2", "role": "ocfpy initiates", "dataplane": "xfrm",
         "row": "ESP SHA1", "ike": "x", "esp": "aes256-sha1", "result": "pass",
         "warnings": ["weak transform sha1 warned in ocfpy's log"], "date": "2026-12-02"},
        {"peer": "libreswan", "version": "4.10", "role": "peer initiates", "dataplane": "xfrm",
         "row": "AES-GCM", "result": "fail", "reason": "ping lost", "date": "2026-12-02"},
    ]
    d = tmp_path / "interop"
    d.mkdir()
    for i, r in enumerate(rows):
        (d / f"{i}.json").write_text(json.dumps(r))
    (d / "broken.json").write_text("{")  # a torn record is skipped, not fatal
    return d


def test_render_orders_by_peer_and_shows_reasons(tmp_path):
    table = T.render(T.load(_records(tmp_path)))
    lines = table.splitlines()
    assert lines[0].startswith("| peer | version | role |") and len(lines) == 2 + 4
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["libreswan", "libreswan",
                                                            "openiked", "strongswan"]
    assert "**impossible**: no DH32 \\| in 4.10" in table  # a | inside a cell is escaped
    assert "**fail**: ping lost" in table
    assert "pass (weak transform sha1 warned in ocfpy's log)" in table
    # the tunnel rows' per-check columns; rows without them show "-"
    assert "TCP through the tunnel | capture between the gateways |" in lines[0]
    zero = next(ln for ln in lines if "strongswan" in ln)
    assert "| 1000 kB each way, SHA-256 equal | only ESP: 700 out under c0 | " \
           "swanctl --list-sas: IKE SPIs equal | pass |" in zero
    assert "| - | - | - | **impossible**" in table


def test_splice_replaces_only_the_table_and_check_mode(tmp_path):
    doc = tmp_path / "interop.md"
    doc.write_text(DOC)
    results = _records(tmp_path)
    assert T.main(["--results", str(results), "--doc", str(doc), "--check"]) == 1
    assert T.main(["--results", str(results), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert "old | table" not in text and text.startswith("# Title\n\ntext before\n")
    assert text.endswith("<!-- interop-table:end -->\n\ntext after\n")
    assert T.main(["--results", str(results), "--doc", str(doc), "--check"]) == 0


def test_no_records_says_how_to_make_them(tmp_path):
    assert "scripts/vm-lane.sh -k interop" in T.render([])


def test_summary_counts_results_per_peer_and_dataplane(tmp_path):
    lines = T.summary(T.load(_records(tmp_path)))
    assert lines[0] == "| peer | dataplane | pass | fail | impossible | skipped |"
    assert lines[2:] == ["| libreswan | xfrm | 0 | 1 | 1 | 0 |",
                         "| openiked | xfrm | 1 | 0 | 0 | 0 |",
                         "| strongswan | xfrm | 1 | 0 | 0 | 0 |"]

