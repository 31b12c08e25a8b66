"""What `ocfpy sa list` and `ocfpy sa list-conns` show: the engine's SAs and the loaded
connections, each joined with what only the daemon knows (when a CHILD_SA was installed, the
dataplane's counters and driver of record, why the dispatcher chose those drivers, the traps).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter

from ocfpy.iked.bridge import DataplaneBridge
from ocfpy.iked.context import DaemonContext
from ocfpy.iked.traps import Traps

log = logging.getLogger("ocfpy.iked.daemon")


def sa_list(ctx: DaemonContext, bridge: DataplaneBridge) -> list[dict]:
    """The engine's SAs, each CHILD_SA with the dataplane's counters and the driver of
    record: the one the dataplane reports serving it (SaCounters.drivers), never a guess
    from the dispatcher, which would disagree with a kernel dataplane."""
    engine, dataplane = ctx.engine, ctx.dataplane
    sas = engine.sa_list()
    now = ctx.now()
    # the policy that chose the drivers: the daemon's dispatcher (the engine's, the same
    # object, when the daemon was built without one)
    policy = ctx.dispatcher or getattr(engine, "dispatcher", None)

    def since(t: float | None) -> float | None:
        return None if t is None else round(now - t, 1)

    def until(t: float | None) -> float | None:
        return None if not t else round(t - now, 1)

    for sa in sas:
        obj = None
        with contextlib.suppress(Exception):
            obj = engine.sas.by_id(sa["id"])
        sa["selection"] = {
            role: _selection(policy, [(sa.get("algorithms") or {}).get(role)], drv)
            for role, drv in (sa.get("drivers") or {}).items()}
        # seconds; expires_in_s is None: ocfpy has no time-based hard lifetime (charon's
        # over_time), only life_bytes / life_packets, which the dataplane enforces
        sa["established_s"] = since(getattr(obj, "established_at", None))
        sa["rekey_in_s"] = until(getattr(obj, "rekey_at", None))
        sa["expires_in_s"] = None
        for child in sa.get("children", []):
            uid = child.get("unique_id")
            if uid is None:
                continue
            c = obj.child_by_id(uid) if obj is not None else None
            child["established_s"] = since(bridge.up_at.get(uid))
            child["rekey_in_s"] = until(getattr(c, "rekey_at", None))
            child["expires_in_s"] = None
            if c is not None:
                child["life_bytes"] = c.cfg.life_bytes or None
                child["life_packets"] = c.cfg.life_packets or None
            child["driver"] = None  # not installed, or a dataplane that carries nothing
            with contextlib.suppress(Exception):
                c = dataplane.counters(uid)
                child["dataplane"] = {"name": dataplane.name, **vars(c)}
                child["driver"] = _driver_of_record(c.drivers)
                child["selection"] = {
                    d: _selection(policy, [child.get("encr"), child.get("integ")], names)
                    for d, names in c.drivers.items()}
    return sas


def list_conns(ctx: DaemonContext, traps: Traps) -> list[dict]:
    """The loaded connections as the daemon sees them (after the file's defaults and the
    last reload), with how many IKE SAs each has up."""
    up: Counter[str] = Counter(sa.get("name") for sa in ctx.sa_list()
                               if sa.get("state") == "established")
    trap_stats: dict = {}
    if traps.installed:
        try:
            trap_stats = ctx.dataplane.trap_stats()
        except Exception as exc:  # the counters only: the listing must not fail for them
            log.warning("trap counters: %s", exc)
    out = []
    for conn in ctx.config.connections.values():
        out.append({
            "name": conn.name, "local_addrs": conn.local_addrs,
            "remote_addrs": conn.remote_addrs, "local_port": conn.local_port,
            "remote_port": conn.remote_port, "proposals": conn.proposals,
            "local_id": conn.local.id, "remote_id": conn.remote.id,
            "rekey_time": conn.rekey_time, "dpd_delay": conn.dpd_delay,
            "keyingtries": conn.keyingtries, "encap": conn.encap, "ike_sas_up": up[conn.name],
            "children": [{"name": c.name, "local_ts": c.local_ts, "remote_ts": c.remote_ts,
                          "esp_proposals": c.esp_proposals, "mode": c.mode,
                          "start_action": c.start_action,
                          "trap": traps.state(f"{conn.name}/{c.name}", trap_stats),
                          "dpd_action": getattr(c, "dpd_action", "none"),
                          "close_action": getattr(c, "close_action", "none"),
                          "rekey_time": c.rekey_time} for c in conn.children.values()],
        })
    return out


def _driver_of_record(drivers: dict[str, str]) -> str | None:
    """One name when both directions use the same driver (the usual case), else each
    direction's ("in: x, out: y"); None when the dataplane names none."""
    names = set(drivers.values())
    if len(names) == 1:
        return names.pop()
    return ", ".join(f"{k}: {v}" for k, v in drivers.items()) or None


def _selection(dispatcher, algorithms: list[str | None], drivers: str) -> str | None:
    """Why the dispatcher's policy has these drivers serve these algorithms (Dispatcher.explain:
    calibrated, forced, kind, priority, fallback, migrated), "+"-joined like ``drivers`` (ESP:
    the cipher's driver, then the MAC's; one name serves both); "kernel" for what a kernel
    dataplane chose."""
    algs = [a for a in algorithms if a and a != "none"]
    names = drivers.split("+") if drivers else []
    if not algs or not names:
        return None
    pairs = zip(algs, names * len(algs) if len(names) == 1 else names)  # noqa: B905
    reasons = []
    for alg, name in pairs:
        if name.startswith("kernel:") or dispatcher is None:
            reasons.append("kernel" if name.startswith("kernel:") else "unknown")
            continue
        try:
            reasons.append(dispatcher.explain(alg, name))
        except Exception:  # an algorithm or driver this dispatcher does not know
            reasons.append("unknown")
    return "+".join(dict.fromkeys(reasons))
