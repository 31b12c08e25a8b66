"""One error root: every exception type ocfpy defines for callers derives from OcfError, so a
program (or the daemon's top level) can catch "anything ocfpy refused" in one clause."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import ocfpy
from ocfpy.crypto.errors import OcfError

# Exceptions that never leave the module that raises them (control flow inside a parser or a
# KAT run); the reason is beside each.
INTERNAL = {
    "ocfpy.crypto.selftest.KatFailure": "caught by the KAT runner, reported as a reason string",
    "ocfpy.ike.codec.buffer.BufferReadError": "turned into DecodeError by the codec",
}


def _modules():
    for info in pkgutil.walk_packages(ocfpy.__path__, "ocfpy."):
        if info.name in {"ocfpy.driver", "ocfpy.errors", "ocfpy.catalogue", "ocfpy.dispatcher"}:
            continue  # 0.1 aliases (they warn); their modules are walked under ocfpy.crypto
        yield importlib.import_module(info.name)


def test_every_public_exception_derives_from_ocferror() -> None:
    strays = []
    for module in _modules():
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__ == module.__name__ and not name.startswith("_")):
                qualified = f"{module.__name__}.{name}"
                if not issubclass(obj, OcfError) and qualified not in INTERNAL:
                    strays.append(qualified)
    assert not strays, f"exceptions outside the OcfError root: {strays}"
