#!/bin/sh
# The kernel VM lane: boots a stock Debian kernel once under QEMU (TCG) and runs every
# `kernel` / `virtio` marked test inside it. Results: results/vm/junit.xml, pytest.log.
# System packages (root): scripts/vm-lane-install.sh (or scripts/setup.sh --lanes vm).
# virtme-ng is installed on first use into .vm/vng (PyPI; OCFPY_VM_NO_INSTALL=1 prevents it).
# Usage: scripts/vm-lane.sh [--bench] [--results DIR] [--junitxml FILE] [pytest args...]
# Exit: the guest pytest's exit code; 77 = skipped (prerequisite missing, reason printed).
cd "$(dirname "$0")/.." || exit 1
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
if [ ! -x .vm/vng/bin/vng ] && [ -z "${OCFPY_VNG:-}" ] && ! command -v vng >/dev/null 2>&1 \
   && [ -z "${OCFPY_VM_NO_INSTALL:-}" ]; then
    echo "vm-lane: installing virtme-ng 1.42 into .vm/vng" >&2
    { python3 -m venv .vm/vng && timeout 300 .vm/vng/bin/pip install -q virtme-ng==1.42; } \
        || { echo "vm-lane: could not install virtme-ng (the lane will skip)" >&2; rm -rf .vm/vng; }
fi
# The guest sees this tree read-only (9p) and runs with PYTHONDONTWRITEBYTECODE: without
# bytecode compiled here it compiles every ocfpy and test module on each import, under TCG and
# over 9p, in every process (each `ocfpy iked` the tests start imports the whole package).
"$PY" -m compileall -q ocfpy tests >/dev/null 2>&1 || true
exec "$PY" tests/vm/run.py "$@"
