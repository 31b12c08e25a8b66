#!/usr/bin/env bash
# The unit tier against the LOWEST versions pyproject.toml allows (issue 16, item 9).
# pip has no --resolution lowest-direct, so every "name>=X" of [project] dependencies (and of
# the metrics extra) becomes "name==X" in a constraints file, and a fresh venv installs ocfpy
# with its test extra under it. A floor that is too low fails here, not on a user's machine.
#   bash scripts/test-floors.sh [pytest args...]      (default: tests/unit tests/kat)
# FLOORS_VENV=/path keeps the venv elsewhere (default /tmp/ocfpy-floors-venv; rebuilt each run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${FLOORS_VENV:-/tmp/ocfpy-floors-venv}
CONSTRAINTS=$(mktemp /tmp/ocfpy-floors.XXXXXX.txt)
trap 'rm -f "$CONSTRAINTS"' EXIT

"$PY" - "$CONSTRAINTS" <<'PY'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = project["dependencies"] + project["optional-dependencies"].get("metrics", [])
lines = []
for req in reqs:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*>=\s*([^,;\s]+)", req)
    if not m:
        sys.exit(f"test-floors: {req!r} has no >= floor: give every dependency one")
    lines.append(f"{m.group(1)}=={m.group(2)}")
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
print("test-floors: constraints: " + ", ".join(lines))
PY

rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
"$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" -e '.[test]'
# The editable install above re-pointed ocfpy at this tree for that venv only; test drivers
# come from .testdrivers/ (scripts/setup.sh), which tests/conftest.py puts on sys.path.
[ -d .testdrivers ] || "$VENV/bin/python" -m pip install -q --no-deps --target .testdrivers \
    tests/fixtures/ocfpy-testdrivers
"$VENV/bin/python" -m pip list 2>/dev/null | grep -iE '^(cryptography|pyroute2|stevedore|pyudev|rich|prometheus.client) '
# Every module must import under the floors (the unit tier does not import all of them).
"$VENV/bin/python" - <<'PY'
import importlib, pkgutil, sys
import ocfpy
bad = []
for m in pkgutil.walk_packages(ocfpy.__path__, "ocfpy."):
    try:
        importlib.import_module(m.name)
    except Exception as exc:
        bad.append(f"{m.name}: {type(exc).__name__}: {exc}")
if bad:
    sys.exit("test-floors: modules that do not import:\n  " + "\n  ".join(bad))
print("test-floors: every ocfpy module imports")
PY
if [ $# -eq 0 ]; then set -- tests/unit tests/kat; fi
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
