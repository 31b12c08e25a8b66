#!/bin/sh
# The kernel VM lane: boots a stock Debian kernel once under QEMU (TCG) and runs every
# `kernel` / `virtio` marked test inside it. Results: results/vm/junit.xml, pytest.log.
# Install the prerequisites once with scripts/vm-lane-install.sh (root).
# Usage: scripts/vm-lane.sh [--results DIR] [-- extra pytest args]
# Exit: pytest's exit code from the guest; 77 = skipped (prerequisite missing, reason printed).
cd "$(dirname "$0")/.." || exit 1
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
exec "$PY" tests/vm/run.py "$@"
