"""QMP from inside the VM lane's guest: drive QEMU (e.g. hot-unplug the virtio-crypto device).

tests/vm/run.py relays QEMU's QMP monitor to a virtio serial port named ``ocfpy.qmp``.
One QMP session lives for the whole boot, so each call sends ``qmp_capabilities`` (harmless
when already negotiated) and reads replies until the one carrying its own ``id``; events
seen on the way are returned too.

    from tests.vm.qmp import qmp
    reply, events = qmp("device_del", id="crypto0")
"""

from __future__ import annotations

import itertools
import json
import os
import select
import time
from pathlib import Path

PORT_NAME = os.environ.get("OCFPY_VM_QMP_PORT", "ocfpy.qmp")
_ids = itertools.count(1)


class QmpError(RuntimeError):
    pass


def port_path(name: str = PORT_NAME) -> Path | None:
    """The guest device node of the named virtio serial port (udev symlink or sysfs)."""
    link = Path("/dev/virtio-ports") / name
    if link.exists():
        return link
    for port in Path("/sys/class/virtio-ports").glob("vport*"):
        try:
            if (port / "name").read_text().strip() == name:
                return Path("/dev") / port.name
        except OSError:
            continue
    return None


def qmp(command: str, timeout: float = 20.0, **arguments) -> tuple[dict, list[dict]]:
    """Run one QMP command; returns (reply, events). Raises QmpError on an error reply."""
    path = port_path()
    if path is None:
        raise QmpError(f"no virtio serial port {PORT_NAME!r}: not in the VM lane?")
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        events: list[dict] = []
        cap_id, cmd_id = f"cap-{next(_ids)}", f"cmd-{next(_ids)}"
        msg = {"execute": "qmp_capabilities", "id": cap_id}
        os.write(fd, json.dumps(msg).encode() + b"\r\n")
        call = {"execute": command, "id": cmd_id}
        if arguments:
            call["arguments"] = arguments
        os.write(fd, json.dumps(call).encode() + b"\r\n")
        buf = b""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QmpError(f"no reply to {command} within {timeout} s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            buf += os.read(fd, 65536)
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.strip():
                    continue
                obj = json.loads(line)
                if "event" in obj:
                    events.append(obj)
                elif obj.get("id") == cmd_id:
                    if "error" in obj:
                        raise QmpError(f"{command}: {obj['error']}")
                    return obj, events
    finally:
        os.close(fd)


def wait_event(name: str, timeout: float = 20.0) -> dict | None:
    """Wait for one QMP event (e.g. DEVICE_DELETED) by polling with a harmless command."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, events = qmp("query-status", timeout=max(1.0, deadline - time.monotonic()))
        for e in events:
            if e.get("event") == name:
                return e
        time.sleep(0.2)
    return None
