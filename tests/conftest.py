"""Shared pytest configuration: lane markers skip with a reason where the lane cannot run."""

from __future__ import annotations

import os
import shutil

import pytest


def _is_root() -> bool:
    return os.geteuid() == 0


def pytest_collection_modifyitems(config, items):
    root = _is_root()
    charon = shutil.which("charon") or os.path.exists("/usr/lib/ipsec/charon")
    for item in items:
        if "net" in item.keywords and not root:
            item.add_marker(pytest.mark.skip(reason="net lane: needs root for network namespaces"))
        if "interop" in item.keywords and not (root and charon):
            why = "needs root" if not root else "strongSwan (charon) is not installed: run scripts/setup.sh as root"
            item.add_marker(pytest.mark.skip(reason=f"interop lane: {why}"))
