"""ocfpy's daemon as the peer of charon: the real `ocfpy iked` command in one namespace.

It runs exactly as an operator would start it (`ip netns exec oss-moon .venv/bin/ocfpy iked
--config F --foreground --control S --log-file L`), with its own TOML config, control socket
and log under the test's /tmp/oss-* folder, and is reached only through that control socket
(what `ocfpy sa` does) and the `ocfpy sa` command itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ocfpy.benchmarks.netns import Host

OCFPY = str(Path(sys.executable).with_name("ocfpy"))


def unavailable_reason() -> str | None:
    """Why ocfpy's IKE daemon cannot run yet (a module not merged), or None."""
    for module, what in (("ocfpy.ike.engine", "the sans-I/O IKE engine (branch ike-core)"),
                         ("ocfpy.ike.daemon", "the IKE daemon (branch ike-daemon)"),
                         ("ocfpy.ike.control", "the daemon's control socket (branch ike-daemon)"),
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


def toml_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def iked_config(*, me: Host, peer: Host, local_id: str, remote_id: str, psk: str,
                proposals: Iterable[str], esp_proposals: Iterable[str], dataplane: str,
                local_ts: Iterable[str] | None = None, remote_ts: Iterable[str] | None = None,
                control: Path, name: str = "t", child: str = "net",
                extra_children: dict[str, tuple[list[str], list[str]]] | None = None,
                dpd_delay: str = "0s", backend: str = "openssl") -> str:
    """The TOML config (docs/configuration.md) of one connection with one child to ``peer``.

    A proposal list of ["default"] leaves the key out: ocfpy's defaults apply."""
    local_ts = list(local_ts or [me.inner_net])
    proposals, esp_proposals = list(proposals), list(esp_proposals)
    ike_line = "" if proposals == ["default"] else f"proposals = {toml_list(proposals)}"
    esp_line = "" if esp_proposals == ["default"] else f"esp_proposals = {toml_list(esp_proposals)}"
    remote_ts = list(remote_ts or [peer.inner_net])
    extra = "".join(f"""
[connections.{name}.children.{cname}]
local_ts = {toml_list(lts)}
remote_ts = {toml_list(rts)}
{esp_line}
""" for cname, (lts, rts) in (extra_children or {}).items())
    return f"""\
[daemon]
crypto_backend = "{backend}"
dataplane = "{dataplane}"
listen = ["{me.outer}"]
control_socket = "{control}"

[connections.{name}]
local_addrs = ["{me.outer}"]
remote_addrs = ["{peer.outer}"]
{ike_line}
dpd_delay = "{dpd_delay}"
keyingtries = 1
retransmit = {{ timeout = "1s", tries = 2, base = 1.5 }}

[connections.{name}.local]
auth = "psk"
id = "{local_id}"

[connections.{name}.remote]
auth = "psk"
id = "{remote_id}"

[connections.{name}.children.{child}]
local_ts = {toml_list(local_ts)}
remote_ts = {toml_list(remote_ts)}
{esp_line}
{extra}
[secrets.ike-{name}]
id = [{json.dumps(local_id)}, {json.dumps(remote_id)}]
secret = {json.dumps(psk)}
"""


class Iked:
    def __init__(self, host: Host, workdir: Path, name: str = "iked") -> None:
        self.host = host
        self.dir = workdir
        self.control = workdir / f"{name}.sock"
        self.log_path = workdir / f"{name}.log"
        self.conf_path = workdir / f"{name}.toml"
        self.proc: subprocess.Popen[str] | None = None

    def start(self, config_text: str, *extra: str, timeout: float = 20.0) -> Iked:
        from ocfpy.ike.control import ControlError

        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(config_text)
        self.log_path.write_text("")
        argv = self.host.argv(OCFPY, "-vv", "iked", "--config", str(self.conf_path),
                              "--foreground", "--control", str(self.control),
                              "--log-file", str(self.log_path), *extra)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"ocfpy iked exited with {self.proc.returncode}: {err.strip()}"
                                   f"\n--- log ---\n{self.log()[-3000:]}")
            if self.control.exists():
                with contextlib.suppress(ControlError, OSError):
                    self.call("stats", timeout=2)
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"ocfpy iked: no control socket after {timeout}s\n{self.log()[-3000:]}")

    def call(self, cmd: str, timeout: float = 15.0, **params: Any) -> Any:
        from ocfpy.ike.control import ControlClient

        with ControlClient(self.control, timeout=timeout) as client:
            return client.call(cmd, **params)

    def sa_cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """`ocfpy sa ...` against this daemon, as an operator runs it (root namespace)."""
        # A wide virtual terminal: rich wraps table cells at 80 columns otherwise.
        env = {**os.environ, "COLUMNS": "250"}
        return subprocess.run([OCFPY, "sa", *args, "--control", str(self.control)],
                              capture_output=True, text=True, timeout=timeout, env=env)

    def sas(self) -> list[dict[str, Any]]:
        return self.call("list")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 8.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stderr:
            proc.stderr.close()
        return proc.returncode


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             on_fail: Callable[[], str] | None = None, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n"
                                 + (on_fail() if on_fail else ""))
        time.sleep(interval)
