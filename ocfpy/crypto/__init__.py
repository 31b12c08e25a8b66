"""The framework: the algorithm catalogue, the driver contract, admission, the dispatcher and
its sessions. It imports no plugin, no driver and nothing of IKE or ESP (docs/architecture.md).

The names a driver author or a consumer needs are importable from here::

    from ocfpy.crypto import Driver, DriverKind, Offer, AeadContext, Dispatcher, Unsupported

Submodules hold the rest: ``catalogue`` (transforms by strongSwan keyword), ``driver`` (the
contract and the context types), ``errors``, ``registry`` (stevedore over ``ocfpy.drivers``,
admission), ``selftest`` (the known-answer tests), ``dispatcher`` and ``session``,
``calibration``, ``stats``, ``modp``, and ``devices`` (accelerator discovery and hot-plug).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # the driver contract
    "Driver": "driver", "DriverKind": "driver", "Offer": "driver", "DeviceInfo": "driver",
    "Context": "driver", "AeadContext": "driver", "CipherContext": "driver",
    "MacContext": "driver", "PrfContext": "driver", "KeyExchangeContext": "driver",
    "HashContext": "driver",
    # the vocabulary
    "Transform": "catalogue", "TransformType": "catalogue", "Primitive": "catalogue",
    # errors
    "OcfError": "errors", "UnknownAlgorithm": "errors", "Reason": "errors",
    "Unsupported": "errors", "DriverUnavailable": "errors", "DriverFailure": "errors",
    "BackendUnavailable": "errors", "AuthenticationError": "errors",
    "InvalidPublicValue": "errors", "InvalidKey": "errors", "InvalidInput": "errors",
    # consumers
    "Dispatcher": "dispatcher", "Registry": "registry", "DriverStatus": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): a plugin importing ocfpy.crypto.driver does not pull in the
    # registry, stevedore and the dispatcher with it.
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'ocfpy.crypto' has no attribute {name!r}") from None
    return getattr(importlib.import_module(f"ocfpy.crypto.{module}"), name)
