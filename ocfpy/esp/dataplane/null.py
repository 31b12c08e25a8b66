"""The control-plane-only dataplane: CHILD_SAs are negotiated but nothing carries traffic.

Chosen only explicitly (``dataplane = "none"`` or ``--dataplane none``), never as a silent
fallback, because a VPN that negotiates tunnels and then drops every packet in clear sight of
its operator is worse than one that refuses to start. Every install is logged as such, so the
log never suggests that traffic is protected.
"""

from __future__ import annotations

import logging

from ocfpy.esp.dataplane.base import Dataplane, SaCounters
from ocfpy.esp.spec import ChildSaSpec

log = logging.getLogger(__name__)


class NullDataplane(Dataplane):
    name = "none"

    def __init__(self) -> None:
        self.installed: dict[int, ChildSaSpec] = {}

    def install(self, spec: ChildSaSpec, *, outbound: bool = True,
                replaces: int | None = None) -> None:
        self.installed[spec.unique_id] = spec
        # INFO, not WARNING: selecting "none" already warned once; a bench with 10,000 SAs
        # must not spend its time writing the same warning
        log.info(
            "control plane only: CHILD_SA %s #%d (SPIs in %08x / out %08x, %s, %s === %s) "
            "negotiated but NOT installed: dataplane = none carries no traffic",
            spec.name, spec.unique_id, spec.inbound.spi, spec.outbound.spi, spec.encryption,
            ", ".join(map(str, spec.local_ts)) or "-", ", ".join(map(str, spec.remote_ts)) or "-",
        )

    def remove(self, unique_id: int) -> None:
        if self.installed.pop(unique_id, None) is not None:
            log.info("control plane only: CHILD_SA #%d forgotten", unique_id)

    def counters(self, unique_id: int) -> SaCounters:
        return SaCounters()  # nothing passes: every counter is truly zero

    def close(self) -> None:
        self.installed.clear()
