"""What the daemon does with each engine event: the audit log line, the `sa monitor` event,
the counters metrics read, and the hand-off to the part that acts (the dataplane bridge, the
restart rules, the UDP sockets for a NAT keepalive, the waiting control commands). Every
decision about IKE was the engine's; this only routes its verdicts.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable

from ocfpy.ike.constants import notify_name as _notify_name
from ocfpy.ike.events import (
    Addr,
    ChildSaClosed,
    ChildSaEstablished,
    ChildSaOutbound,
    Event,
    IkeSaClosed,
    IkeSaEstablished,
    NegotiationFailed,
    SendKeepalive,
)
from ocfpy.iked import logsetup
from ocfpy.iked.bridge import DataplaneBridge
from ocfpy.iked.context import DaemonContext
from ocfpy.iked.restarts import Restarts
from ocfpy.iked.udp import NAT_KEEPALIVE
from ocfpy.iked.waiters import Waiters

log = logging.getLogger("ocfpy.iked.daemon")


def notify_name(notify: int | None) -> str | None:
    """AUTHENTICATION_FAILED rather than 24, for people (None: no notify, a timeout)."""
    return None if notify is None else _notify_name(notify)


class Reactions:
    def __init__(self, ctx: DaemonContext, bridge: DataplaneBridge, restarts: Restarts,
                 waiters: Waiters, send: Callable[[bytes, Addr, Addr], None],
                 status_changed: Callable[[], None]):
        """``send``: one datagram out (the NAT keepalive); ``status_changed``: SAs came or
        went (systemd's STATUS= line)."""
        self.ctx = ctx
        self.bridge = bridge
        self.restarts = restarts
        self.waiters = waiters
        self.send = send
        self.status_changed = status_changed
        #: negotiation failures by reason (the notify's name, or "timeout"), for metrics
        self.failures: Counter[str] = Counter()
        self.dpd_failures = 0
        self.rekeys: Counter[str] = Counter()  # "ike" / "child": completed rekeys

    def __call__(self, event: Event) -> None:
        kind = type(event).__name__
        self.ctx.stats[f"event_{kind}"] += 1
        try:
            self._react(event)
        except Exception:
            log.exception("handling %s failed", kind)
        self.waiters.resolve(event)

    def _react(self, event: Event) -> None:
        publish = self.ctx.publish
        match event:
            case IkeSaEstablished():
                log.log(logsetup.AUDIT, "IKE_SA %s[%s] established", event.name, event.ike_id)
                old = self._rekeyed_from(event.ike_id)
                if old is None:
                    publish("ike-up", name=event.name, ike_id=event.ike_id)
                else:
                    self.rekeys["ike"] += 1
                    publish("ike-rekey", name=event.name, ike_id=event.ike_id, old_ike_id=old)
                self.status_changed()
            case IkeSaClosed():
                log.log(logsetup.AUDIT, "IKE_SA %s[%s] closed: %s", event.name, event.ike_id,
                        event.reason)
                publish("ike-down", name=event.name, ike_id=event.ike_id, reason=event.reason)
                self.status_changed()
                if event.reason == "deleted by peer":  # its Delete (RFC 7296 1.4.1)
                    self.restarts.restart_children(event.name, "close_action",
                                                   "the peer closed it")
            case ChildSaEstablished():
                spec = event.spec
                # a CHILD_SA of a conn/child already up is its rekey (RFC 7296 2.8); the
                # old one's Delete follows
                old = self.bridge.installed_as(spec.name)
                self.bridge.install(event)
                fields = dict(name=spec.name, ike_id=event.ike_id, unique_id=spec.unique_id,
                              spi_in=f"{spec.inbound.spi:08x}",
                              spi_out=f"{spec.outbound.spi:08x}")
                if old is None:
                    publish("child-up", **fields)
                else:
                    self.rekeys["child"] += 1
                    publish("child-rekey", old_unique_id=old, **fields)
                self.status_changed()
            case ChildSaOutbound():
                self.bridge.activate(event)
            case ChildSaClosed():
                name = self.bridge.names.get(event.unique_id)
                self.bridge.remove(event)
                publish("child-down", name=name, ike_id=event.ike_id,
                        unique_id=event.unique_id, reason=event.reason)
                self.status_changed()
                if event.reason == "deleted by peer" and name:
                    self.restarts.child_closed_by_peer(event.ike_id, name)
            case NegotiationFailed():
                reason = notify_name(event.notify) or "timeout"
                self.failures[reason] += 1
                if "(dead peer detection)" in event.explanation:  # IkeSa.no_answer's words
                    self.dpd_failures += 1
                    publish("dpd", name=event.name, result="dead",
                            explanation=event.explanation)
                    self.restarts.restart_children(event.name, "dpd_action", "the peer is dead")
                else:
                    publish("failure", name=event.name, notify=notify_name(event.notify),
                            explanation=event.explanation)
                log.warning("%s: negotiation failed (%s): %s", event.name,
                            notify_name(event.notify), event.explanation)
            case SendKeepalive():  # RFC 3948 2.3, on the engine's schedule
                self.send(NAT_KEEPALIVE, tuple(event.local), tuple(event.remote))  # type: ignore[arg-type]
            case _:
                log.info("%s", event)

    def _rekeyed_from(self, ike_id: int) -> int | None:
        """The IKE SA that ``ike_id`` replaced by a rekey (IkeSa.replaced_by), if any."""
        with contextlib.suppress(Exception):
            for sa in self.ctx.engine.sas:
                if getattr(sa, "replaced_by", None) == ike_id:
                    return sa.id
        return None
