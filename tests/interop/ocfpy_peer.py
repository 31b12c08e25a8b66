"""ocfpy's daemon as the peer of charon: the real `ocfpy iked` command in one namespace.

It runs exactly as an operator would start it (`ip netns exec oss-moon .venv/bin/ocfpy iked
--config F --foreground --control S --log-file L`), with its own TOML config, control socket
and log under the test's /tmp/oss-* folder, and is reached only through that control socket
(what `ocfpy sa` does) and the `ocfpy sa` command itself.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ocfpy.lab.iked_runner import IkedRunner, wait_for
from ocfpy.lab.iked_toml import config_toml, connection_table, daemon_table, secret_table
from ocfpy.lab.netlab import Namespace

__all__ = ["Iked", "iked_config", "unavailable_reason", "userspace_dataplane_reason", "wait_for"]

OCFPY = str(Path(sys.executable).with_name("ocfpy"))


def unavailable_reason() -> str | None:
    """Why ocfpy's IKE daemon cannot run yet (a module not merged), or None."""
    for module, what in (("ocfpy.ike.engine", "the sans-I/O IKE engine (branch ike-core)"),
                         ("ocfpy.iked.daemon", "the IKE daemon (branch ike-daemon)"),
                         ("ocfpy.iked.control", "the daemon's control socket (branch ike-daemon)"),
                         ("ocfpy.cli.iked", "the `ocfpy iked` command (branch ike-daemon)")):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return f"{module} is missing: {what} is not merged into this tree yet"
    return None


def userspace_dataplane_reason() -> str | None:
    try:
        found = importlib.util.find_spec("ocfpy.esp.dataplane.userspace") is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        return "ocfpy.esp.dataplane.userspace is missing (branch esp not merged): establish only"
    return None


def iked_config(*, me: Namespace, peer: Namespace, local_id: str, remote_id: str, psk: str,
                proposals: Iterable[str], esp_proposals: Iterable[str], dataplane: str,
                local_ts: Iterable[str] | None = None, remote_ts: Iterable[str] | None = None,
                control: Path, name: str = "t", child: str = "net",
                extra_children: dict[str, tuple[list[str], list[str]]] | None = None,
                dpd_delay: str = "0s", backend: str = "openssl",
                daemon: dict | None = None) -> str:
    """The TOML config (docs/configuration.md) of one connection with one child to ``peer``.

    A proposal list of ["default"] leaves the key out: ocfpy's defaults apply."""
    proposals, esp_proposals = list(proposals), list(esp_proposals)
    children = {child: (list(local_ts or [me.inner_net]), list(remote_ts or [peer.inner_net])),
                **(extra_children or {})}
    return config_toml(
        daemon_table(backend=backend, dataplane=dataplane, listen=[me.outer],
                     control_socket=str(control), **(daemon or {})),
        connection_table(name, local_addr=me.outer, remote_addr=peer.outer, local_id=local_id,
                         remote_id=remote_id,
                         proposals=None if proposals == ["default"] else proposals,
                         esp_proposals=None if esp_proposals == ["default"] else esp_proposals,
                         children=children, dpd_delay=dpd_delay, keyingtries=1,
                         retransmit={"timeout": "1s", "tries": 2, "base": 1.5}),
        secret_table(f"ike-{name}", psk, [local_id, remote_id]))


class Iked(IkedRunner):
    """ocfpy's daemon in ``host``'s namespace (ocfpy.lab.iked_runner), reached over its socket."""

    def __init__(self, host: Namespace, workdir: Path, name: str = "iked") -> None:
        super().__init__(host.name, workdir, name)
        self.host = host

    def call(self, cmd: str, timeout: float = 15.0, **params: Any) -> Any:
        return super().call(cmd, timeout=timeout, **params)

    def sa_cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """`ocfpy sa ...` against this daemon, as an operator runs it (root namespace)."""
        # A wide virtual terminal: rich wraps table cells at 80 columns otherwise.
        env = {**os.environ, "COLUMNS": "250"}
        return subprocess.run([OCFPY, "sa", *args, "--control", str(self.control)],
                              capture_output=True, text=True, timeout=timeout, env=env)

    def sas(self) -> list[dict[str, Any]]:
        return self.call("list")
