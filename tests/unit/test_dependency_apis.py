"""The third-party names ocfpy imports inside functions (lazily), checked here because the unit
tier does not otherwise reach them: scripts/test-floors.sh runs this against the lowest
versions pyproject allows, so a floor that lacks one fails there (pyroute2 0.7-0.8 have no
pyroute2.netns.create_socket, which the XFRM channel uses to open a socket in a namespace)."""

from __future__ import annotations

import socket


def test_pyroute2():
    from pyroute2 import IPRoute, NetNS, netns  # noqa: F401  (esp.tun, dataplanes, lab)
    from pyroute2.netns import create_socket  # esp/dataplane/xfrm_netlink.py

    # called as xfrm_netlink calls it; without a namespace it is a plain socket, no helper
    s = create_socket(netns=None, family=socket.AF_NETLINK, socket_type=socket.SOCK_RAW,
                      proto=0, flags=0)
    assert s.family == socket.AF_NETLINK
    s.close()
    for name in ("create", "remove", "listnetns"):  # lab/netlab.py
        assert callable(getattr(netns, name))


def test_pyudev():
    import pyudev  # crypto/devices/discovery.py, hotplug.py

    assert callable(pyudev.Monitor.from_netlink)
    for name in ("Context", "Device", "Monitor"):
        assert hasattr(pyudev, name)


def test_rich():
    from rich.console import Console  # noqa: F401
    from rich.progress import Progress  # noqa: F401
    from rich.table import Table

    Table("a", "b").add_row("1", "2")


def test_cryptography():
    from cryptography.hazmat.primitives.asymmetric import dh  # noqa: F401
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.utils import CryptographyDeprecationWarning  # noqa: F401

    assert AESGCM(bytes(16)).encrypt(bytes(12), b"x", None)


def test_stevedore():
    from stevedore import ExtensionManager

    ExtensionManager("ocfpy.drivers", invoke_on_load=False)
