"""pytest plugin for the VM lane: write the exit status next to the JUnit XML when the session
ends, before the interpreter shuts down.

A process can fail to exit in the guest (closing a transform of a vanished virtio-crypto
device waits forever in the kernel, docs/devices.md); the host then still learns how the run
ended from ``<junitxml>.status`` and stops the VM (tests/vm/run.py).
"""

from __future__ import annotations

from pathlib import Path


def pytest_sessionfinish(session, exitstatus) -> None:
    xml = session.config.getoption("xmlpath", None)
    if xml:
        Path(f"{xml}.status").write_text(f"{int(exitstatus)}\n")
