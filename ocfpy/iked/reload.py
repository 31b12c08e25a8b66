"""Reloading the configuration (SIGHUP, `ocfpy sa reload`): re-read the file, refuse it whole
or apply it (the engine diffs the connections, iked/traps.py brings the traps in step), and
tell systemd (RELOADING=1, then READY=1 with STATUS=) either way.

Only the connections and secrets change at a reload; [daemon] keys (sockets, backend,
dataplane, metrics) are bound at start and are reported as ``restart_needed``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from ocfpy.crypto.errors import OcfError
from ocfpy.ike.config import IkeConfig
from ocfpy.iked.context import DaemonContext
from ocfpy.iked.control import CommandError
from ocfpy.iked.systemd import Notifier
from ocfpy.iked.traps import Traps

#: configuration (re)loading: the ``cfg`` subsystem (charon's CFG)
cfglog = logging.getLogger("ocfpy.iked.cfg")


class ConfigReload:
    def __init__(self, ctx: DaemonContext, traps: Traps, notifier: Notifier,
                 read: Callable[[], IkeConfig] | None, status_text: Callable[[], str]):
        """``read``: re-reads the config file (the CLI's: its command-line overrides and the
        log setup apply again); it raises ConfigError for a file that must change nothing.
        None: the daemon was started without a file."""
        self.ctx = ctx
        self.traps = traps
        self.notifier = notifier
        self.read = read
        self.status_text = status_text
        self.counts: Counter[str] = Counter()  # "ok" / "failed"

    def on_sighup(self) -> None:
        loop = self.ctx.loop
        assert loop is not None
        loop.create_task(self._logged())

    async def _logged(self) -> None:
        try:
            await self.reload()
        except CommandError as exc:
            cfglog.error("reload refused, nothing changed: %s", exc)

    async def reload(self) -> dict:
        """Re-read the config file. systemd hears RELOADING=1 first and READY=1 after, also
        when the file was refused (the daemon still runs on the old config; STATUS= says
        why). A refused file changes nothing: CommandError."""
        self.notifier.reloading("reloading the configuration")
        cfglog.info("reloading the configuration")
        if self.read is None:
            self.notifier.ready(self.status_text())
            raise CommandError("this daemon was started without a config file to reload")
        try:
            new = self.read()
        except OcfError as exc:  # ConfigError (file:line: key: reason), LogSetupError
            self.counts["failed"] += 1
            self.ctx.publish("reload", ok=False, error=str(exc))
            self.notifier.ready(f"reload refused: {exc}; {self.status_text()}")
            raise CommandError(f"reload refused, nothing changed: {exc}") from None
        result = self.apply(new)
        self.counts["ok"] += 1
        self.ctx.publish("reload", ok=True, **result)
        cfglog.info("reloaded: %s", ", ".join(f"{k} {v}" for k, v in result.items()) or
                    "nothing changed")
        self.notifier.ready(self.status_text())
        return result

    def apply(self, new: IkeConfig) -> dict:
        """Swap in a checked config (the connection and secret parts; the daemon's own
        sockets, control path, backend and dataplane need a restart)."""
        ctx = self.ctx
        loop = ctx.loop
        assert loop is not None
        old_opts, new_opts = vars(ctx.config.daemon), vars(new.daemon)
        stale = sorted(k for k in new_opts if k != "log" and old_opts.get(k) != new_opts[k])
        result: dict = ctx.engine.reload(new, loop.time())
        ctx.config.connections = ctx.engine.config.connections
        self.traps.sync(result)
        if stale:  # sockets, backend, dataplane, metrics: bound at start
            cfglog.warning("daemon.%s changed in the file: takes effect at the next start",
                           ", daemon.".join(stale))
            result["restart_needed"] = [f"daemon.{k}" for k in stale]
        ctx.service()
        return result
