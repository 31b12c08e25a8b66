"""Two `ocfpy iked` daemons in two namespaces (oid-a, oid-b) joined by a veth pair.

Each daemon is the real command (`ip netns exec oid-X .venv/bin/ocfpy iked ...`) with its own
config file, log file and control socket under a temporary directory named oid-*; the tests
talk to it only through that control socket, as `ocfpy sa` does. Everything is removed at the
end, also when a test fails (the lab's close() and the fixtures' finally blocks).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocfpy.ike.control import ControlClient, ControlError
from ocfpy.netlab import Lab, Namespace, two_hosts

PREFIX = "oid"
OUTER = ("10.77.0.1", "10.77.0.2")
OUTER6 = ("fd00:77::1", "fd00:77::2")
INNER = ("10.177.1.0/24", "10.177.2.0/24")
IDS = ("a.oid.example", "b.oid.example")
PSK = "0s" + "b2lkLXRlc3QtcHNrLW5vdC1hLXJlYWwtc2VjcmV0"  # base64("oid-test-psk-not-a-real-secret")
OCFPY = str(Path(sys.executable).with_name("ocfpy"))


def config(side: int, *, proposals: list[str], esp: list[str], psk: str = PSK,
           dataplane: str = "none", backend: str = "openssl", dpd_delay: str = "0s",
           retransmit: str = "{ timeout = 0.5, tries = 3, base = 1.4 }",
           cookie_threshold: int = 30, keyingtries: int = 1, extra_daemon: str = "",
           outer: tuple[str, str] = OUTER, listen: list[str] | None = None) -> str:
    """The TOML config of side 0 (a) or 1 (b); connection "t" points at the other side."""
    me, peer = side, 1 - side
    listen = listen or [outer[me]]
    return textwrap.dedent(f"""\
        [daemon]
        crypto_backend = "{backend}"
        dataplane = "{dataplane}"
        listen = {_toml_list(listen)}
        cookie_threshold = {cookie_threshold}
        half_open_timeout = "5s"
        {extra_daemon}

        [connections.t]
        local_addrs = ["{outer[me]}"]
        remote_addrs = ["{outer[peer]}"]
        proposals = {_toml_list(proposals)}
        dpd_delay = "{dpd_delay}"
        keyingtries = {keyingtries}
        retransmit = {retransmit}

        [connections.t.local]
        auth = "psk"
        id = "{IDS[me]}"

        [connections.t.remote]
        auth = "psk"
        id = "{IDS[peer]}"

        [connections.t.children.net]
        local_ts = ["{INNER[me]}"]
        remote_ts = ["{INNER[peer]}"]
        esp_proposals = {_toml_list(esp)}

        [secrets.ike-t]
        id = ["{IDS[0]}", "{IDS[1]}"]
        secret = "{psk}"
        """)


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


@dataclass
class Iked:
    """One daemon: started as a subprocess inside its namespace, reached over its socket."""

    lab: Lab
    ns: Namespace
    workdir: Path
    name: str
    proc: subprocess.Popen | None = None
    config_text: str = ""
    extra_args: list[str] = field(default_factory=list)

    @property
    def control(self) -> Path:
        return self.workdir / f"{self.name}.sock"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, config_text: str, *extra_args: str, timeout: float = 20.0,
              verbosity: str = "-vv") -> Iked:
        self.config_text = config_text
        conf = self.workdir / f"{self.name}.toml"
        conf.write_text(config_text)
        self.log_path.write_text("")
        argv = [OCFPY, *([verbosity] if verbosity else []), "iked", "--config", str(conf), "--foreground",
                "--control", str(self.control), "--log-file", str(self.log_path), *extra_args]
        self.proc = self.lab.popen(self.ns, argv, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"iked {self.name} exited with {self.proc.returncode}: "
                                   f"{err.strip()}\n--- log ---\n{self.log()[-3000:]}")
            if self.control.exists():
                with contextlib.suppress(ControlError):
                    self.call("stats", timeout=2)
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"iked {self.name} did not open its control socket within "
                           f"{timeout} s\n--- log ---\n{self.log()[-3000:]}")

    def call(self, cmd: str, timeout: float = 10.0, **params: Any) -> Any:
        with ControlClient(self.control, timeout=timeout) as client:
            return client.call(cmd, **params)

    def sas(self) -> list[dict]:
        return self.call("list")

    def established(self) -> list[dict]:
        return [sa for sa in self.sas() if str(sa.get("state", "")).lower() == "established"]

    def stats(self) -> dict:
        return self.call("stats")

    def sa_cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """`ocfpy sa ...` against this daemon, as an operator would run it."""
        env = {**os.environ, "COLUMNS": "200"}  # a wide terminal: whole words in the table
        return subprocess.run([OCFPY, "sa", *args, "--control", str(self.control)],
                              capture_output=True, text=True, timeout=timeout, env=env)

    def stop(self, timeout: float = 8.0) -> int | None:
        if self.proc is None:
            return None
        rc = self.lab.stop(self.proc, timeout)
        return rc

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, *,
             interval: float = 0.05, on_fail: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = on_fail() if on_fail else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{detail}")
        time.sleep(interval)


@dataclass
class Pair:
    lab: Lab
    a: Iked
    b: Iked
    workdir: Path

    def logs(self) -> str:
        return (f"--- a log ---\n{self.a.log()[-4000:]}\n--- b log ---\n{self.b.log()[-4000:]}")

    def nft(self, ns: Namespace, ruleset: str) -> None:
        """Load an nftables ruleset inside the namespace (never outside it)."""
        self.lab.run(ns, ["nft", "-f", "-"], input=ruleset, check=True)


@contextlib.contextmanager
def ike_lab() -> Iterator[Pair]:
    """The two namespaces and a workdir; daemons are started by the tests."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    try:
        with Lab(PREFIX) as lab:
            a_ns, b_ns, veth = two_hosts(lab, outer=(f"{OUTER[0]}/24", f"{OUTER[1]}/24"),
                                         inner=("10.177.1.1/32", "10.177.2.1/32"))
            lab.configure_link(a_ns, veth.a, f"{OUTER6[0]}/64")
            lab.configure_link(b_ns, veth.b, f"{OUTER6[1]}/64")
            yield Pair(lab, Iked(lab, a_ns, workdir, "a"), Iked(lab, b_ns, workdir, "b"),
                       workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def have_nft() -> bool:
    return shutil.which("nft") is not None
