"""The control socket's commands (`ocfpy sa ...`): each handler checks its request, asks the
engine or a daemon part, and answers a dict or raises CommandError with what to do. The
socket itself, its framing and the `sa monitor` feed are iked/control.py's.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

from ocfpy.ike.errors import IkeUsageError
from ocfpy.ike.events import (
    ChildSaEstablished,
    Event,
    IkeSaClosed,
    IkeSaEstablished,
    NegotiationFailed,
)
from ocfpy.iked import listing
from ocfpy.iked.bridge import DataplaneBridge
from ocfpy.iked.context import DaemonContext
from ocfpy.iked.control import CommandError
from ocfpy.iked.reactions import notify_name
from ocfpy.iked.traps import Traps
from ocfpy.iked.udp import UdpSockets
from ocfpy.iked.waiters import Waiters


class Commands:
    def __init__(self, ctx: DaemonContext, udp: UdpSockets, bridge: DataplaneBridge,
                 traps: Traps, waiters: Waiters, reload: Callable[[], Awaitable[dict]]):
        """``reload``: the daemon's reload (iked/reload.py), also what SIGHUP runs."""
        self.ctx = ctx
        self.udp = udp
        self.bridge = bridge
        self.traps = traps
        self.waiters = waiters
        self.reload = reload
        self.started_at = time.time()

    def handlers(self) -> dict[str, Callable]:
        return {
            "list": self.list,
            "initiate": self.initiate,
            "terminate": self.terminate,
            "why": self.why,
            "stats": self.stats,
            "drivers": self.drivers,
            "reload": self._reload,
            "list-conns": self.list_conns,
            "rekey": self.rekey,
        }

    def list(self, request: dict) -> list[dict]:
        return listing.sa_list(self.ctx, self.bridge)

    def list_conns(self, request: dict) -> list[dict]:
        return listing.list_conns(self.ctx, self.traps)

    def _connection(self, request: dict) -> str:
        """The request's configured connection name; CommandError names what exists."""
        name = request.get("name")
        if not isinstance(name, str) or not name:
            raise CommandError("this command needs a connection name")
        connections = self.ctx.config.connections
        if name not in connections:
            raise CommandError(f"no connection named {name!r}; configured: "
                               + (", ".join(sorted(connections)) or "none"))
        return name

    async def initiate(self, request: dict) -> dict:
        name = self._connection(request)
        child = request.get("child")
        wait = float(request.get("wait") or 0)
        ctx = self.ctx
        loop = ctx.loop
        assert loop is not None
        fut: asyncio.Future | None = None
        ike_ids: list[int] = []
        want_child = False  # an established IKE SA was reused: wait for the new CHILD_SA
        prior: dict[int, dict] = {}
        if wait > 0:
            # the engine reuses an IKE SA of the connection (like charon); know which exist
            prior = {sa["id"]: sa for sa in ctx.engine.sa_list() if sa.get("name") == name}

            def match(ev: Event) -> dict | None:
                match ev:
                    case IkeSaEstablished() if ev.ike_id in ike_ids and not want_child:
                        return {"ike_id": ev.ike_id, "state": "established"}
                    case ChildSaEstablished() if ev.ike_id in ike_ids and want_child:
                        return {"ike_id": ev.ike_id, "state": "established", "reused": True,
                                "child": ev.spec.name}
                    case NegotiationFailed() if ev.name == name:
                        return {"ike_id": ike_ids[0] if ike_ids else None, "state": "failed",
                                "notify": notify_name(ev.notify),
                                "explanation": ev.explanation}
                    case IkeSaClosed() if ev.ike_id in ike_ids:
                        return {"ike_id": ev.ike_id, "state": "failed", "notify": None,
                                "explanation": str(ev.reason)}
                return None

            fut = self.waiters.add(match, loop)
        try:
            ike_id = ctx.engine.initiate(name, loop.time(), child=child)
        except (IkeUsageError, KeyError, ValueError) as exc:
            if fut is not None:
                self.waiters.discard(fut)
            raise CommandError(f"cannot initiate {name}: {exc}") from None
        ike_ids.append(ike_id)
        reused = prior.get(ike_id)
        if fut is not None and reused is not None and reused.get("state") == "established":
            have = {c.get("name") for c in reused.get("children", [])}
            if child is None or child in have:
                self.waiters.discard(fut)
                return {"ike_id": ike_id, "state": "established", "reused": True}
            want_child = True
        ctx.service()
        if fut is None:
            return {"ike_id": ike_id, "state": "connecting"}
        try:
            result = await asyncio.wait_for(fut, wait)
        except TimeoutError:
            why = self.why_not(name)
            raise CommandError(f"{name}: not established within {wait:g} s"
                               + (f": {why}" if why else "; see `ocfpy sa why " + name + "`")) from None
        finally:
            self.waiters.discard(fut)
        if result["state"] == "failed":
            notify, text = result.get("notify"), result["explanation"]
            prefix = f"{notify}: " if notify and notify not in text else ""
            raise CommandError(f"{name}: {prefix}{text}")
        return result

    def terminate(self, request: dict) -> dict:
        target = request.get("name")
        if target is None:
            target = request.get("id")
        if isinstance(target, str) and target.isdigit():
            target = int(target)
        if target is None or target == "":
            raise CommandError("terminate needs a connection name or an IKE_SA id")
        child = request.get("child")
        if child is not None:  # one CHILD_SA: "conn/child", or its unique id
            if isinstance(target, int):
                raise CommandError("--child needs the connection's name, not an IKE_SA id")
            child = str(child)
            target = f"child:{child}" if child.isdigit() else f"{target}/{child}"
        try:
            self.ctx.engine.terminate(target, self.ctx.loop.time())  # type: ignore[union-attr]
        except (IkeUsageError, KeyError, ValueError) as exc:
            raise CommandError(f"cannot terminate {target}: {exc}") from None
        self.ctx.service()
        return {"terminating": target}

    def rekey(self, request: dict) -> dict:
        """Rekey IKE SAs (``kind`` "ike") or CHILD_SAs ("child", optionally one ``child`` by
        name) of a connection name or an IKE_SA id (RFC 7296 2.8, CREATE_CHILD_SA)."""
        ctx = self.ctx
        target = request.get("name")
        kind = request.get("kind", "ike")
        if target is None or target == "":
            raise CommandError("rekey needs a connection name or an IKE_SA id")
        if kind not in ("ike", "child"):
            raise CommandError(f"rekey kind must be ike or child, not {kind!r}")
        target = str(target)
        sas = [sa for sa in ctx.sa_list() if sa.get("state") == "established"
               and (str(sa.get("id")) == target or sa.get("name") == target)]
        if not sas:
            raise CommandError(f"no established IKE SA matches {target!r}")
        now = ctx.loop.time()  # type: ignore[union-attr]
        done: list[int] = []
        try:
            for sa in sas:
                if kind == "ike":
                    ctx.engine.rekey_ike(sa["id"], now)
                    done.append(sa["id"])
                    continue
                for c in sa.get("children", []):
                    if request.get("child") in (None, c.get("name"), str(c.get("unique_id"))):
                        ctx.engine.rekey_child(c["unique_id"], now)
                        done.append(c["unique_id"])
        except (IkeUsageError, KeyError, ValueError) as exc:
            raise CommandError(f"cannot rekey {target}: {exc}") from None
        finally:
            ctx.service()
        if not done:
            raise CommandError(f"{target} has no CHILD_SA"
                               + (f" named {request['child']!r}" if request.get("child") else ""))
        return {"rekeying": kind, "ids": done}

    def why(self, request: dict) -> str | None:
        return self.why_not(self._connection(request))

    def why_not(self, name: str) -> str | None:
        """The engine's last failure of the connection, and a send failure towards its peer
        (which the engine cannot see: for it the peer just does not answer)."""
        why = self.ctx.engine.why(name)
        conn = self.ctx.config.connections.get(name)
        errors = self.udp.send_errors
        sent = [errors[a] for a in (conn.remote_addrs if conn else []) if a in errors]
        return "; ".join([*sent, *([why] if why else [])]) or None

    async def _reload(self, request: dict) -> dict:
        return await self.reload()

    def stats(self, request: dict) -> dict:
        ctx = self.ctx
        engine, control, dataplane = ctx.engine, ctx.control, ctx.dataplane
        return {
            "engine": dict(engine.stats),
            "daemon": dict(ctx.stats),
            # issue 13: how close the responder is to its caps (docs/security.md)
            "half_open": {"now": engine.sas.half_open_count,
                          "peak": engine.sas.half_open_peak,
                          "limit": ctx.config.daemon.half_open_limit},
            "monitor": {"subscribers": len(control.subscribers) if control else 0,
                        "events_dropped": control.events_dropped if control else 0},
            "dataplane": dataplane.name,
            # the userspace dataplane's own health: worker/reader restarts, unreadable
            # records on its channel (issue 13 finding 3); other dataplanes have none
            "dataplane_stats": dict(getattr(dataplane, "stats", dict)()),
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 3),
            "listening": [f"[{ep.address}]:{ep.port}" for ep in self.udp.endpoints],
        }

    def drivers(self, request: dict) -> list[dict]:
        if self.ctx.dispatcher is None:
            return []
        return [r.as_dict() for r in self.ctx.dispatcher.registry.records()]
