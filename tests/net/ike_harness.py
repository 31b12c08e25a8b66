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
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ocfpy.lab.iked_runner import IkedRunner, wait_for
from ocfpy.lab.iked_toml import config_toml, connection_table, daemon_table, secret_table
from ocfpy.lab.netlab import Lab, Namespace, two_hosts

__all__ = ["OCFPY", "OUTER", "OUTER6", "Iked", "Pair", "config", "have_nft", "ike_lab", "wait_for"]

PREFIX = "oid"
OUTER = ("10.77.0.1", "10.77.0.2")
OUTER6 = ("fd00:77::1", "fd00:77::2")
INNER = ("10.177.1.0/24", "10.177.2.0/24")
IDS = ("a.oid.example", "b.oid.example")
PSK = "0s" + "b2lkLXRlc3QtcHNrLW5vdC1hLXJlYWwtc2VjcmV0"  # base64("oid-test-psk-not-a-real-secret")
OCFPY = str(Path(sys.executable).with_name("ocfpy"))


def config(side: int, *, proposals: list[str], esp: list[str], psk: str = PSK,
           dataplane: str = "none", backend: str = "openssl", dpd_delay: str = "0s",
           retransmit: dict | None = None,
           cookie_threshold: int = 30, keyingtries: int = 1, encap: bool | None = None,
           child_options: dict | None = None, daemon_options: dict | None = None,
           outer: tuple[str, str] = OUTER, listen: list[str] | None = None) -> str:
    """The TOML config of side 0 (a) or 1 (b); connection "t" points at the other side."""
    me, peer = side, 1 - side
    return config_toml(
        daemon_table(backend=backend, dataplane=dataplane, listen=listen or [outer[me]],
                     cookie_threshold=cookie_threshold, half_open_timeout="5s",
                     **(daemon_options or {})),
        connection_table("t", local_addr=outer[me], remote_addr=outer[peer], local_id=IDS[me],
                         remote_id=IDS[peer], proposals=proposals, esp_proposals=esp,
                         children={"net": ([INNER[me]], [INNER[peer]])}, dpd_delay=dpd_delay,
                         keyingtries=keyingtries, encap=encap, child_options=child_options,
                         retransmit=retransmit or {"timeout": 0.5, "tries": 3, "base": 1.4}),
        secret_table("ike-t", psk, IDS))


class Iked(IkedRunner):
    """One daemon in its namespace of the lab (ocfpy.lab.iked_runner), reached over its socket."""

    def __init__(self, lab: Lab, ns: Namespace, workdir: Path, name: str) -> None:
        # Registered with the lab too: its close() stops a daemon a test left running.
        super().__init__(ns.name, workdir, name, on_start=lab.procs.append)
        self.lab, self.ns = lab, ns

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


@dataclass
class Pair:
    lab: Lab
    a: Iked
    b: Iked
    workdir: Path

    def logs(self) -> str:
        return (f"--- a log ---\n{self.a.log()[-4000:]}\n--- b log ---\n{self.b.log()[-4000:]}")

    def stop_daemons(self) -> None:
        """Stop whichever of the two daemons still runs (a test may have stopped one)."""
        for d in (self.a, self.b):
            if d.proc is not None and d.proc.poll() is None:
                d.stop()
            d.proc = None

    def nft(self, ns: Namespace, ruleset: str) -> None:
        """Load an nftables ruleset inside the namespace (never outside it)."""
        self.lab.run(ns, ["nft", "-f", "-"], input=ruleset, check=True)


@contextlib.contextmanager
def ike_lab(prefix: str = PREFIX) -> Iterator[Pair]:
    """The two namespaces (``prefix``-a, ``prefix``-b) and a workdir; daemons are started by
    the tests, and stopped here if they still run."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    try:
        with Lab(prefix) as lab:
            a_ns, b_ns, veth = two_hosts(lab, outer=(f"{OUTER[0]}/24", f"{OUTER[1]}/24"),
                                         inner=("10.177.1.1/32", "10.177.2.1/32"))
            lab.configure_link(a_ns, veth.a, f"{OUTER6[0]}/64")
            lab.configure_link(b_ns, veth.b, f"{OUTER6[1]}/64")
            pair = Pair(lab, Iked(lab, a_ns, workdir, "a"), Iked(lab, b_ns, workdir, "b"),
                        workdir)
            try:
                yield pair
            finally:
                pair.stop_daemons()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def have_nft() -> bool:
    return shutil.which("nft") is not None
