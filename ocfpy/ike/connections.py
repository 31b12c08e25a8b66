"""Which configured connection an SA belongs to, and the proposals each connection and child
can actually be served with (cached: parsing and asking the dispatcher per SA would cost more
than the rest of IKE_SA_INIT).

Two decisions live here, both the responder's: at IKE_SA_INIT by addresses and IKE proposals
(RFC 7296 2.2's "first match"), and at IKE_AUTH again by identities (strongSwan's peer_cfg
matching), which may move the SA to a better-fitting connection."""

from __future__ import annotations

import functools
import ipaddress

from ocfpy.crypto.catalogue import TransformType
from ocfpy.ike.config import ChildConfig, Connection, IkeConfig
from ocfpy.ike.errors import IkeUsageError
from ocfpy.ike.events import Addr
from ocfpy.ike.identity import Identity
from ocfpy.ike.proposals import (
    Proposal,
    accepts,
    explain_mismatch,
    from_raw,
    parse_esp,
    parse_ike,
    select,
)
from ocfpy.ike.proposals import servable as servable_proposals


def addr_matches(patterns: list[str], ip: str) -> bool:
    """swanctl local_addrs/remote_addrs: empty or %any matches everything; otherwise an
    address or a prefix."""
    return not patterns or _addr_matches_cached(tuple(patterns), ip)


@functools.lru_cache(maxsize=4096)
def _addr_matches_cached(patterns: tuple[str, ...], ip: str) -> bool:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for p in patterns:
        if p == "%any" or (p == "%any4" and a.version == 4) or (p == "%any6" and a.version == 6):
            return True
        try:
            if a in ipaddress.ip_network(p, strict=False):
                return True
        except ValueError:
            continue
    return False


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


class Connections:
    __slots__ = ("config", "dispatcher", "_ike_cache", "_esp_cache")

    def __init__(self, config: IkeConfig, dispatcher):
        self.config = config
        self.dispatcher = dispatcher
        self._ike_cache: dict[int, tuple[list[Proposal], list[str]]] = {}
        self._esp_cache: dict[tuple[int, bool], tuple[list[Proposal], list[str]]] = {}

    # -- by name (the initiator's side) --------------------------------------------------------
    def get(self, name: str) -> Connection:
        conn = self.config.connections.get(name)
        if conn is None:
            raise IkeUsageError(f"no connection named {name!r} (configured: "
                                f"{', '.join(self.config.connections) or 'none'})")
        return conn

    @staticmethod
    def endpoints(conn: Connection) -> tuple[Addr, Addr]:
        """Where to initiate ``conn`` from and to: its first remote IP address, and a local
        address of the same family (the wildcard if none is configured; the kernel picks)."""
        remote_ip = next((a for a in conn.remote_addrs if _is_ip(a)), None)
        if remote_ip is None:
            raise IkeUsageError(f"connection {conn.name!r} has no remote address to initiate "
                                f"to (remote_addrs = {conn.remote_addrs})")
        version = ipaddress.ip_address(remote_ip).version
        local_ip = next((a for a in conn.local_addrs if _is_ip(a)
                         and ipaddress.ip_address(a).version == version),
                        "0.0.0.0" if version == 4 else "::")
        return (local_ip, conn.local_port), (remote_ip, conn.remote_port)

    # -- proposals -----------------------------------------------------------------------------
    def ike_proposals(self, conn: Connection) -> tuple[list[Proposal], list[str]]:
        """The connection's IKE proposals the dispatcher can serve, and what it dropped."""
        key = id(conn)
        hit = self._ike_cache.get(key)
        if hit is None:
            hit = servable_proposals([parse_ike(p) for p in conn.proposals], self._can_serve)
            self._ike_cache[key] = hit
        return hit

    def esp_proposals(self, cfg: ChildConfig, with_ke: bool = False
                      ) -> tuple[list[Proposal], list[str]]:
        """The child's ESP proposals. Without ``with_ke`` (IKE_AUTH) the KE groups are
        stripped: the first CHILD_SA takes its keys from IKE_AUTH (strongSwan strips them too);
        CREATE_CHILD_SA keeps them for PFS."""
        key = (id(cfg), with_ke)
        hit = self._esp_cache.get(key)
        if hit is None:
            props = [parse_esp(p) for p in cfg.esp_proposals]
            for p in props:
                if not with_ke:
                    p.transforms.pop(TransformType.KE, None)
            hit = servable_proposals(props, self._can_serve)
            self._esp_cache[key] = hit
        return hit

    def _can_serve(self, t) -> bool:
        return self.dispatcher.can_serve(t)

    # -- the responder's matching ------------------------------------------------------------
    def for_init(self, sa_payload, local: Addr, remote: Addr
                 ) -> tuple[Connection | None, str, str]:
        """The first connection for these addresses whose IKE proposals match the offer (the
        request's SA payload), or (None, why, the name to file the failure under)."""
        cands = [c for c in self.config.connections.values()
                 if addr_matches(c.local_addrs, local[0]) and addr_matches(c.remote_addrs, remote[0])]
        if not cands:
            return None, (f"IKE_SA_INIT from {remote[0]} to {local[0]}: no connection is "
                          "configured for these addresses"), "(unknown)"
        offered = [from_raw(p) for p in sa_payload.proposals]
        for c in cands:
            if select(offered, self.ike_proposals(c)[0]) is not None:
                return c, "", c.name
        ours, dropped = self.ike_proposals(cands[0])
        why = explain_mismatch(offered, ours, what="IKE", backend=self.dispatcher.backend,
                               dropped=dropped)
        return None, why, cands[0].name

    def for_ids(self, local: Addr, remote: Addr, proposal: Proposal | None, peer: Identity,
                wanted_local: Identity | None) -> Connection | None:
        """At IKE_AUTH: the connection for these addresses that accepts the negotiated IKE
        proposal and the peer's identity (and the identity it asks us for, IDr); a configured
        remote identity scores above a wildcard, a matching IDr adds to that."""
        best: tuple[int, Connection] | None = None
        for conn in self.config.connections.values():
            if not (addr_matches(conn.local_addrs, local[0])
                    and addr_matches(conn.remote_addrs, remote[0])):
                continue
            if proposal is None or not accepts(proposal, self.ike_proposals(conn)[0]):
                continue
            score = 0
            if conn.remote.id is not None:
                if not Identity.parse(conn.remote.id).matches(peer):
                    continue
                score += 2
            if wanted_local is not None:
                mine = (Identity.parse(conn.local.id) if conn.local.id is not None
                        else Identity.from_address(local[0]))
                if not mine.matches(wanted_local):
                    continue
                score += 1
            if best is None or score > best[0]:
                best = (score, conn)
        return best[1] if best else None
