"""Detected crypto accelerators served through their Linux kernel drivers.

``detect`` is the ``ocfpy.drivers`` entry point: it asks ocfpy.crypto.devices.discovery which known
accelerators are present and usable, and returns one HARDWARE driver for each, reaching that
device's kernel implementations by exact driver name through a pluggable transport (AF_ALG
today). See docs/devices.md.
"""

from .driver import CONTEXTS, KernelAccelDriver, detect
from .transport import AfAlgTransport, Transport

__all__ = ["CONTEXTS", "AfAlgTransport", "KernelAccelDriver", "Transport", "detect"]
