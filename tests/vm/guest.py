"""Where am I? Used by conftests to tell the VM lane's guest from the host."""

from __future__ import annotations

import os
from pathlib import Path

HOST_SKIP_REASON = "needs AF_ALG: run in the VM lane (scripts/vm-lane.sh)"


def in_vm_lane() -> bool:
    """True inside the guest that tests/vm/run.py booted.

    virtme-ng puts ``virtme_*`` parameters on the guest kernel command line; the runner also
    exports OCFPY_VM_LANE. Both must hold: an environment variable alone can leak into a
    host shell, and a command line alone can be another virtme user's guest.
    """
    try:
        cmdline = Path("/proc/cmdline").read_text()
    except OSError:
        return False
    return "virtme" in cmdline and os.environ.get("OCFPY_VM_LANE") == "1"


def results_dir() -> Path | None:
    """The read-write results directory shared with the host, inside the guest."""
    value = os.environ.get("OCFPY_VM_RESULTS")
    return Path(value) if value and in_vm_lane() else None
