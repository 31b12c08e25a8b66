"""One `ocfpy iked` daemon run as a child process inside a network namespace.

The tests (tests/net, tests/kernel, tests/interop), `ocfpy bench ike` and `ocfpy demo` all
start the real daemon the way an operator does (`ip netns exec NS ocfpy iked --config F
--foreground --control S --log-file L`) and talk to it only over its control socket. This is
the one place that does it: write the config (mode 0600, it holds the PSK), start the daemon,
wait until its control socket answers, call it, read its log, stop it with SIGTERM and
report the exit code. What each user adds (identities, profiles, `ocfpy sa`) stays with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# `python -m` rather than the console script: works from a source tree without an install.
OCFPY_MODULE = (sys.executable, "-m", "ocfpy.cli.main")


class IkedRunner:
    """``ocfpy iked`` named ``name`` in namespace ``netns`` (None: this namespace), with its
    config, control socket and log file under ``workdir``.

    ``error`` is the exception type raised when the daemon exits or never answers (the
    caller's own, so its messages reach its users the way they expect); ``on_start`` sees
    each process started (a lab that stops leftovers on close registers it there)."""

    def __init__(self, netns: str | None, workdir: Path, name: str, *,
                 program: Sequence[str] = OCFPY_MODULE, verbosity: str = "-vv",
                 error: type[Exception] = RuntimeError,
                 on_start: Callable[[subprocess.Popen], None] | None = None) -> None:
        self.netns = netns
        self.workdir = Path(workdir)
        self.name = name
        self.program = list(program)
        self.verbosity = verbosity
        self.error = error
        self.on_start = on_start
        self.proc: subprocess.Popen[str] | None = None
        self.config_text = ""

    @property
    def control(self) -> Path:
        return self.workdir / f"{self.name}.sock"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def conf_path(self) -> Path:
        return self.workdir / f"{self.name}.toml"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # `ip netns exec` execs the command: this is the daemon itself

    def argv(self, *extra_args: str, python: Sequence[str] | None = None) -> list[str]:
        """The daemon's command line; ``python`` replaces the interpreter part of a
        ``python -m`` program (e.g. to run it under cProfile)."""
        program = self.program
        if python is not None and program[:1] == [sys.executable]:
            program = [*python, *program[1:]]
        ns = ["ip", "netns", "exec", self.netns] if self.netns else []
        return [*ns, *program, *([self.verbosity] if self.verbosity else []), "iked",
                "--config", str(self.conf_path), "--foreground", "--control", str(self.control),
                "--log-file", str(self.log_path), *extra_args]

    def spawn(self, config_text: str, *extra_args: str,
              python: Sequence[str] | None = None) -> subprocess.Popen[str]:
        """Write the config and start the daemon; does not wait (see wait_ready)."""
        self.config_text = config_text
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(config_text)
        self.conf_path.chmod(0o600)
        self.log_path.write_text("")
        # Own session: Ctrl-C at the terminal reaches us, and we stop the daemon in order.
        self.proc = subprocess.Popen(self.argv(*extra_args, python=python),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        if self.on_start is not None:
            self.on_start(self.proc)
        return self.proc

    def ready(self) -> bool:
        """True once the control socket answers; raises ``error`` if the daemon exited."""
        from ocfpy.iked.control import ControlError

        assert self.proc is not None
        if self.proc.poll() is not None:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise self.error(f"ocfpy iked ({self.name}) exited with {self.proc.returncode}: "
                             f"{err.strip()[-2000:]}\n--- log ---\n{self.log_tail(3000)}")
        if not self.control.exists():
            return False
        try:
            self.call("stats", timeout=2)
        except (ControlError, OSError):
            return False
        return True

    def wait_ready(self, timeout: float = 20.0) -> IkedRunner:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                self.stop()
                raise self.error(f"ocfpy iked ({self.name}) did not answer on {self.control} "
                                 f"within {timeout} s\n--- log ---\n{self.log_tail(3000)}")
            time.sleep(0.05)
        return self

    def start(self, config_text: str, *extra_args: str, timeout: float = 20.0,
              python: Sequence[str] | None = None) -> IkedRunner:
        """Start the daemon and wait until its control socket answers."""
        self.spawn(config_text, *extra_args, python=python)
        return self.wait_ready(timeout)

    def call(self, cmd: str, timeout: float = 10.0, **params: Any) -> Any:
        from ocfpy.iked.control import ControlClient

        with ControlClient(self.control, timeout=timeout) as client:
            return client.call(cmd, **params)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 2000) -> str:
        return self.log()[-n:]

    def stop(self, timeout: float = 8.0) -> int | None:
        """SIGTERM (SIGKILL after ``timeout``) to the daemon's process group; its exit code,
        None if it was never started or would not die."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc.stderr and proc.returncode is not None:
            proc.stderr.close()
        return proc.returncode

    def kill9(self) -> None:
        """A crash, as far as its peer can tell: no INFORMATIONAL, no cleanup."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)

    def __enter__(self) -> IkedRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, *,
             interval: float = 0.05, on_fail: Callable[[], str] | None = None,
             error: type[Exception] = AssertionError) -> Any:
    """``predicate()``'s first true value; ``error`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = on_fail() if on_fail else ""
            raise error(f"timed out after {timeout} s waiting for {what}"
                        + (f"\n{detail}" if detail else ""))
        time.sleep(interval)
