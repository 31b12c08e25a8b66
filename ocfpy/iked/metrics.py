"""Prometheus metrics for the daemon (optional extra: ``pip install 'ocfpy[metrics]'``).

``[daemon] metrics = "127.0.0.1:9641"`` serves the Prometheus text format at
``http://127.0.0.1:9641/metrics``. The daemon hands us a *snapshot callable* (``() ->
MetricsSnapshot``) and nothing else: the collector calls it at each scrape and turns it into
metric families, so no counter is kept twice and the daemon keeps no prometheus objects.

The HTTP server runs on the daemon's asyncio loop, not in prometheus-client's thread: the
snapshot reads the engine's and the dataplane's tables, which only the loop's thread may
touch while it runs. A scrape is small (a few hundred lines); the reply is written at once.
Only GET /metrics (and /) are served; the listener should stay on a loopback or management
address, as the daemon's state is not secret but is not public either.

Exposed (all prefixed ``ocfpy_``):

- ``ike_sas{state}``, ``child_sas{state}``: gauges, SAs by state now
- ``ike_negotiation_failures_total{reason}``: counter, e.g. NO_PROPOSAL_CHOSEN,
  AUTHENTICATION_FAILED, timeout
- ``rekeys_total{kind="ike"|"child"}``, ``dpd_failures_total``
- ``dataplane_packets_total{direction}``, ``dataplane_bytes_total{direction}``,
  ``dataplane_drops_total{reason}``
- ``crypto_operations_total{driver}``, ``crypto_failovers_total{driver}``
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ocfpy.crypto.errors import OcfError

__all__ = ["DEFAULT_PORT", "MetricsError", "MetricsServer", "MetricsSnapshot",
           "SnapshotCollector", "parse_listen"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 9641
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MAX_REQUEST = 8192


class MetricsError(OcfError, RuntimeError):
    """Metrics were asked for but cannot be served (extra not installed, bad address)."""


@dataclass
class MetricsSnapshot:
    """What the daemon knows at one instant; every field defaults to "nothing yet"."""

    ike_sas: Mapping[str, int] = field(default_factory=dict)  # state -> count
    child_sas: Mapping[str, int] = field(default_factory=dict)  # state -> count
    negotiation_failures: Mapping[str, int] = field(default_factory=dict)  # reason -> total
    rekeys: Mapping[str, int] = field(default_factory=dict)  # "ike" / "child" -> total
    dpd_failures: int = 0
    packets: Mapping[str, int] = field(default_factory=dict)  # "in" / "out" -> total
    bytes: Mapping[str, int] = field(default_factory=dict)  # "in" / "out" -> total
    drops: Mapping[str, int] = field(default_factory=dict)  # reason -> total
    crypto_ops: Mapping[str, int] = field(default_factory=dict)  # driver -> total
    crypto_failovers: Mapping[str, int] = field(default_factory=dict)  # driver -> total


def parse_listen(text: str) -> tuple[str, int]:
    """"127.0.0.1:9641", "[::1]:9641", or a bare port (then loopback: metrics are not
    exposed to the network unless asked for)."""
    text = text.strip()
    if text.isdigit():
        host, port_text = "127.0.0.1", text
    elif text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{text!r}: write an IPv6 address as [::1]:{DEFAULT_PORT}")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"{text!r} is not ADDRESS:PORT (e.g. 127.0.0.1:{DEFAULT_PORT}, "
                             f"[::1]:{DEFAULT_PORT})")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address (host names are not resolved)") from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{port_text!r} is not a port (1-65535)")
    return host, int(port_text)


def listen_converter(value):
    """``[daemon] metrics`` for ocfpy.iked.configfile's schema (file:line: key: reason)."""
    from ocfpy.iked.configfile import _Invalid, nonempty_string

    try:
        return parse_listen(nonempty_string(value))
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _prometheus():
    try:
        from prometheus_client import core, exposition
    except ImportError:
        raise MetricsError("metrics need the prometheus-client package: pip install "
                           "'ocfpy[metrics]' (or remove [daemon] metrics)") from None
    return core, exposition


class SnapshotCollector:
    """A prometheus-client custom collector over a snapshot callable."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot]):
        self.snapshot = snapshot
        self._core, _ = _prometheus()

    def describe(self):
        return []  # families depend on the snapshot; registering must not call it

    def collect(self):
        core = self._core
        s = self.snapshot()

        def labelled(kind, name, doc, label, values):
            fam = kind(f"ocfpy_{name}", doc, labels=[label])
            for key, value in sorted(values.items()):
                fam.add_metric([str(key)], value)
            return fam

        gauge, counter = core.GaugeMetricFamily, core.CounterMetricFamily
        yield labelled(gauge, "ike_sas", "IKE SAs by state", "state", s.ike_sas)
        yield labelled(gauge, "child_sas", "CHILD SAs by state", "state", s.child_sas)
        # CounterMetricFamily appends _total itself
        yield labelled(counter, "ike_negotiation_failures", "Failed IKE/CHILD negotiations by "
                       "reason", "reason", s.negotiation_failures)
        yield labelled(counter, "rekeys", "Completed rekeys by SA kind", "kind", s.rekeys)
        yield counter("ocfpy_dpd_failures", "Peers declared dead by liveness checks (DPD)",
                      value=s.dpd_failures)
        yield labelled(counter, "dataplane_packets", "ESP packets by direction", "direction",
                       s.packets)
        yield labelled(counter, "dataplane_bytes", "ESP payload bytes by direction",
                       "direction", s.bytes)
        yield labelled(counter, "dataplane_drops", "Dataplane drops by reason", "reason",
                       s.drops)
        yield labelled(counter, "crypto_operations", "Crypto operations by driver", "driver",
                       s.crypto_ops)
        yield labelled(counter, "crypto_failovers", "Sessions migrated away from a failed "
                       "driver, by that driver", "driver", s.crypto_failovers)


class MetricsServer:
    """``await MetricsServer(snapshot, host, port).start()`` on the daemon's loop; ``close()``
    at shutdown. A failing snapshot answers 500 and is logged, it never stops the daemon."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot], host: str = "127.0.0.1",
                 port: int = DEFAULT_PORT):
        core, exposition = _prometheus()
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(snapshot))
        self._generate = exposition.generate_latest
        self.host, self.port = host, port
        self._server: asyncio.base_events.Server | None = None
        self.scrapes = 0

    async def start(self) -> MetricsServer:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as exc:
            raise MetricsError(f"metrics: cannot listen on {self.host}:{self.port}: "
                               f"{exc.strerror or exc}") from None
        self.port = self._server.sockets[0].getsockname()[1]  # port 0 -> the one we got
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError):
                return
            if len(head) > _MAX_REQUEST:
                return await self._reply(writer, 431, b"request header too large\n")
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                return await self._reply(writer, 405, b"only GET\n")
            if path not in ("/metrics", "/"):
                return await self._reply(writer, 404, b"try /metrics\n")
            try:
                body = self._generate(self.registry)
            except Exception as exc:
                log.error("metrics snapshot failed: %s", exc)
                return await self._reply(writer, 500, b"snapshot failed (see the daemon log)\n")
            self.scrapes += 1
            await self._reply(writer, 200, body, head_only=method == "HEAD")
        except (ConnectionError, OSError):
            pass  # the scraper went away
        finally:
            writer.close()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, code: int, body: bytes, *,
                     head_only: bool = False) -> None:
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 431:
                  "Request Header Fields Too Large", 500: "Internal Server Error"}[code]
        ctype = CONTENT_TYPE if code == 200 else "text/plain; charset=utf-8"
        writer.write(f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                     + (b"" if head_only else body))
        await writer.drain()
