"""The kernel ESP dataplane: CHILD_SAs as Linux XFRM states and policies, over netlink.

What install() puts into the kernel for one CHILD_SA (strongSwan's kernel_netlink is the
model): two states (inbound: peer -> us with our SPI; outbound: us -> peer with the peer's
SPI) carrying the negotiated algorithms, ESN and replay window, tunnel or transport mode and,
with NAT-T, UDP encapsulation; policies out/in (and fwd in tunnel mode) for every pair of
traffic selectors, each with a template that names the CHILD_SA's reqid; in tunnel mode, a
route per remote selector so that the kernel reaches the policy at all. remove() and close()
take exactly that back out. Counters are read from the kernel (lifetime bytes/packets, replay
and integrity failures); soft and hard lifetime expiries and acquires arrive on the XFRM
multicast groups: expiries go to the daemon as SaEvent, acquires are logged.

Crypto runs in the kernel, so the dispatcher is not used here; the kernel driver that serves
each SA (from /proc/crypto) is reported in the counters instead.

The host kernel this project develops on has XFRM netlink but no ESP (CONFIG_INET_ESP unset);
construction probes once and says so, naming the kernel options.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import itertools
import logging
import os
import select
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from ocfpy.crypto.devices import proc_crypto
from ocfpy.crypto.errors import OcfError
from ocfpy.esp import rtnl
from ocfpy.esp.dataplane import xfrm_msg as X
from ocfpy.esp.dataplane.base import (
    Acquire,
    AcquireHandler,
    Dataplane,
    EventHandler,
    IkeDatagramHandler,
    SaCounters,
    SaEvent,
    TrapSpec,
)
from ocfpy.esp.dataplane.xfrm_selectors import priority, selectors
from ocfpy.esp.netlink import NETLINK_ROUTE, NETLINK_XFRM, NetlinkChannel, NetlinkError
from ocfpy.esp.sad import SOFT_FRACTION
from ocfpy.esp.spec import ChildSaSpec, IPAddress, IPNetwork, Mode

log = logging.getLogger(__name__)

SOL_UDP = 17
UDP_ENCAP = 100
IP_XFRM_POLICY = 17
IPV6_XFRM_POLICY = 35
# A probe SA nobody can send to: TEST-NET-1 / the documentation prefix, a reserved-looking SPI.
_PROBE = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8::1", "2001:db8::2")}
_PROBE_SPI = 0xFFFFFFF0
_KERNEL_OPTIONS = {4: "CONFIG_INET_ESP", 6: "CONFIG_INET6_ESP"}


class XfrmUnavailable(OcfError):
    """The kernel cannot be the ESP dataplane here; the message says why and what to enable."""


class XfrmError(OcfError):
    """The kernel refused an SA or a policy; the message names the CHILD_SA and the reason."""


@dataclass
class _Installed:
    spec: ChildSaSpec
    reqid: int
    states: list[tuple[IPAddress, IPAddress, int]] = field(default_factory=list)  # src,dst,spi
    policies: list[tuple] = field(default_factory=list)  # policy keys
    routes: list[IPNetwork] = field(default_factory=list)
    drivers: dict[str, str] = field(default_factory=dict)
    active: bool = True  # its outbound state is in the kernel (False: installed for a rekey)


@dataclass
class _TrapEntry:
    spec: TrapSpec
    reqid: int  # its template's; the CHILD_SAs of the same child get it too (install)
    policies: list[tuple] = field(default_factory=list)  # policy keys it is a user of
    routes: list[IPNetwork] = field(default_factory=list)

    @property
    def uid(self) -> str:
        """Its name among a policy's users (CHILD_SAs are ints: never equal)."""
        return "trap:" + self.spec.key


def _probe(ch: NetlinkChannel, version: int) -> str | None:
    """None if the kernel takes an ESP state of this IP version, else the reason."""
    src, dst = (ipaddress.ip_address(a) for a in _PROBE[version])
    params = X.StateParams(src, dst, _PROBE_SPI, 0, "aes128", bytes(16), integrity="sha256",
                           integrity_key=bytes(32), mode=Mode.TRANSPORT)
    try:
        ch.request(X.newsa(params), "probe ESP state")
    except NetlinkError as exc:
        if exc.errno == errno.EEXIST:
            pass  # a probe left over by a crashed run: ESP works
        elif exc.errno in (errno.EPERM, errno.EACCES):
            return "adding XFRM states needs CAP_NET_ADMIN (run as root)"
        else:
            return (f"the kernel refuses ESP states: {exc.kernel_message or os.strerror(exc.errno)}"
                    f" (build the kernel with {_KERNEL_OPTIONS[version]}=y or load esp{version}:"
                    f" modprobe esp{version}; CONFIG_XFRM_USER for the netlink interface)")
    with contextlib.suppress(NetlinkError):
        ch.request(X.delsa(src, dst, _PROBE_SPI), "remove probe state")
    return None


def _open_xfrm(netns: str | None, groups: int = 0) -> NetlinkChannel:
    try:
        return NetlinkChannel(NETLINK_XFRM, netns=netns, groups=groups)
    except OSError as exc:
        if exc.errno in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT):
            raise XfrmUnavailable("this kernel has no XFRM netlink interface (CONFIG_XFRM_USER; "
                                  "modprobe xfrm_user)") from exc
        raise XfrmUnavailable(f"cannot open an XFRM netlink socket: {exc}") from exc


class XfrmDataplane(Dataplane):
    """CHILD_SAs in the Linux kernel (XFRM). ``netns``: work in that named namespace
    instead of the caller's (tests drive two namespaces from one process this way)."""

    name = "xfrm"

    def __init__(self, *, netns: str | None = None, install_routes: bool = True,
                 first_reqid: int = 1):
        self.netns = netns
        self.install_routes = install_routes
        self._xfrm = _open_xfrm(netns)
        try:
            self.families = self._probe_families()
            self._route = NetlinkChannel(NETLINK_ROUTE, netns=netns)
        except BaseException:
            self._xfrm.close()
            raise
        self._routes = rtnl.Routes(self._route)
        self._reqids = itertools.count(first_reqid)
        self._installed: dict[int, _Installed] = {}
        self._by_state: dict[tuple[IPAddress, int], int] = {}  # (dst, spi) -> unique_id
        self._policies: dict[tuple, list[tuple[int, X.TemplateParams, X.Selector, int]]] = {}
        self._lock = threading.RLock()
        self._on_event: EventHandler | None = None
        self._on_acquire: AcquireHandler | None = None
        self._traps: dict[str, _TrapEntry] = {}
        self._acquired_at: dict[str, float] = {}  # trap key -> monotonic time of the last
        self._trap_counts: dict[str, Counter[str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: NetlinkChannel | None = None
        self._event_thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        self._start_events()
        log.info("xfrm dataplane%s: kernel ESP for IPv%s", f" in netns {netns}" if netns else "",
                 " and IPv".join(str(v) for v in sorted(self.families)))

    def _probe_families(self) -> set[int]:
        reasons = {v: _probe(self._xfrm, v) for v in (4, 6)}
        families = {v for v, why in reasons.items() if why is None}
        if 4 not in families:
            raise XfrmUnavailable(reasons[4] or "no ESP")
        if 6 not in families:
            log.warning("xfrm: no IPv6 ESP: %s", reasons[6])
        self._family_reasons = reasons
        return families

    # -- the Dataplane interface ----------------------------------------------------------------
    def set_event_handler(self, handler: EventHandler) -> None:
        self._on_event = handler
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()

    def prepare_ike_socket(self, sock: socket.socket) -> None:
        """IKE sockets (500 and 4500) bypass IPsec policies: IKE is never caught by a
        CHILD_SA's selectors (strongSwan does the same)."""
        bypass_socket(sock)

    def attach_udp_encap(self, sock: socket.socket, on_ike: IkeDatagramHandler) -> bool:
        """Let the kernel take ESP-in-UDP out of the daemon's port 4500 socket (UDP_ENCAP);
        IKE (non-ESP marker) and keepalives still reach the socket."""
        sock.setsockopt(SOL_UDP, UDP_ENCAP, X.UDP_ENCAP_ESPINUDP)
        bypass_socket(sock)  # idempotent; for callers that skip prepare_ike_socket
        return False

    def install(self, spec: ChildSaSpec, *, outbound: bool = True,
                replaces: int | None = None) -> None:
        """A rekey (``replaces``) keeps the old CHILD_SA's reqid, as strongSwan does: the
        policies' templates then match the old and the new SAs alike, so the kernel's
        inbound policy check passes the old SA's tail and the policies need no update.
        ``outbound`` False: only the inbound state goes in now; ``activate`` adds the
        outbound one, and the kernel sends on the newest state of a reqid from then on."""
        version = spec.remote.version
        if version not in self.families:
            raise XfrmError(f"CHILD_SA {spec.name}: {self._family_reasons[version]}")
        if spec.local.version != version:
            raise XfrmError(f"CHILD_SA {spec.name}: outer addresses {spec.local} and "
                            f"{spec.remote} are of different IP versions")
        if not spec.local_ts or not spec.remote_ts:
            raise XfrmError(f"CHILD_SA {spec.name}: no traffic selectors to install")
        with self._lock:
            self._check_open()
            if spec.unique_id in self._installed:
                self.remove(spec.unique_id)
            # A rekey's SAs keep the old CHILD_SA's reqid (policies unchanged); a trapped
            # child's SAs take the trap's reqid (charon keeps one reqid per child, rekeys
            # included): adding the outbound state then replaces the kernel's larval state of
            # the ACQUIRE (xfrm_state_add matches it by mode, reqid, proto and addresses),
            # which would otherwise swallow the trap's next ACQUIRE for xfrm_acq_expires (30 s)
            # once this CHILD_SA is gone
            old = self._installed.get(replaces) if replaces is not None else None
            trap = self._traps.get(spec.name)
            reqid = (old.reqid if old is not None else
                     trap.reqid if trap is not None else next(self._reqids))
            entry = _Installed(spec, reqid, active=outbound)
            try:
                self._add_states(entry)
                self._add_policies(entry)
                if self.install_routes and spec.mode is Mode.TUNNEL:
                    self._add_routes(entry)
            except Exception:
                self._undo(entry)
                raise
            entry.drivers = kernel_drivers(spec)
            self._installed[spec.unique_id] = entry
            # a negotiation finished: the next ACQUIRE is a new question (see worker.py)
            self._acquired_at.clear()
        log.info("installed CHILD_SA %s #%d in the kernel: in %08x out %08x %s%s%s, %s === %s "
                 "(%s mode, reqid %d%s)", spec.name, spec.unique_id, spec.inbound.spi,
                 spec.outbound.spi, spec.encryption,
                 f"-{spec.integrity}" if spec.integrity else "", "-esn" if spec.esn else "",
                 ",".join(map(str, spec.local_ts)), ",".join(map(str, spec.remote_ts)),
                 spec.mode.value, entry.reqid, ", UDP-encapsulated" if spec.encap else "")

    def activate(self, unique_id: int) -> None:
        """The switch: one netlink request adds the outbound state; the kernel picks the
        newest valid state of the reqid for the next packet (xfrm_state_find)."""
        with self._lock:
            entry = self._installed.get(unique_id)
            if entry is None or entry.active:
                return
            entry.active = True
            self._add_state(entry, inbound=False)

    def remove(self, unique_id: int) -> None:
        with self._lock:
            entry = self._installed.pop(unique_id, None)
            if entry is None:
                return
            self._undo(entry)
        log.info("removed CHILD_SA %s #%d from the kernel", entry.spec.name, unique_id)

    def counters(self, unique_id: int) -> SaCounters:
        with self._lock:  # one request at a time on the socket (the event thread uses it too)
            entry = self._installed.get(unique_id)
            if entry is None:
                raise KeyError(f"no CHILD_SA with id {unique_id} is installed")
            spec = entry.spec
            inbound = self._get_state(spec.remote, spec.local, spec.inbound.spi)
            outbound = self._get_state(spec.local, spec.remote, spec.outbound.spi)
        c = SaCounters(drivers=dict(entry.drivers))
        if inbound is not None:
            c.packets_in, c.bytes_in = inbound.packets, inbound.bytes
            c.replay_drops = inbound.replay_drops
            c.auth_failures = inbound.integrity_failures
        if outbound is not None:
            c.packets_out, c.bytes_out = outbound.packets, outbound.bytes
        return c

    def installed(self) -> list[ChildSaSpec]:
        return [e.spec for e in self._installed.values()]

    def close(self) -> None:
        """Remove every SA, policy and route this dataplane installed (daemon shutdown)."""
        with self._lock:
            if self._closed:
                return
            for uid in list(self._installed):
                try:
                    self.remove(uid)
                except Exception as exc:
                    log.error("removing CHILD_SA #%d on close failed: %s", uid, exc)
            for key in list(self._traps):
                try:
                    self.remove_trap(key)
                except Exception as exc:
                    log.error("removing trap %s on close failed: %s", key, exc)
            self._closed = True
        os.write(self._wake_w, b"x")
        if self._event_thread is not None and self._event_thread is not threading.current_thread():
            self._event_thread.join(2)
        for ch in (self._events, self._xfrm, self._route):
            if ch is not None:
                ch.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> XfrmDataplane:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- trap policies ---------------------------------------------------------------------------
    def set_acquire_handler(self, handler: AcquireHandler) -> None:
        self._on_acquire = handler
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()

    def install_trap(self, trap: TrapSpec) -> None:
        """charon's trap: an outbound policy for the selectors whose template (ESP, the
        child's mode, our and the peer's addresses, its reqid, level required) no state
        satisfies, so the kernel sends XFRM_MSG_ACQUIRE for the first packet (RFC 4301
        4.4.1.1; the packet itself is dropped with xfrm_larval_drop = 1). The trap is the
        lowest user of its policy: a CHILD_SA's template replaces it while the SA is up and
        it comes back when the SA goes (_remove_policy)."""
        if trap.local is None or trap.remote is None:
            raise XfrmError(f"trap {trap.key}: the kernel's template needs both outer "
                            "addresses (local_addrs and remote_addrs)")
        version = trap.remote.version
        if version not in self.families:
            raise XfrmError(f"trap {trap.key}: {self._family_reasons[version]}")
        try:
            sels = selectors(list(trap.local_ts), list(trap.remote_ts))
        except ValueError as exc:
            raise XfrmError(f"trap {trap.key}: {exc}") from exc
        if not sels:
            raise XfrmError(f"trap {trap.key}: the traffic selectors have no pair of the same "
                            "IP version and protocol")
        with self._lock:
            self._check_open()
            old = self._traps.get(trap.key)
            if old is not None:
                self.remove_trap(trap.key)
            entry = _TrapEntry(trap, old.reqid if old is not None else next(self._reqids))
            tmpl = X.TemplateParams(trap.local, trap.remote, entry.reqid, trap.mode)
            try:
                for sel in sels:
                    key = (sel, X.XFRM_POLICY_OUT)
                    users = self._policies.setdefault(key, [])
                    prio = priority(sel)
                    if not users:
                        try:
                            self._xfrm.request(
                                X.newpolicy(sel, X.XFRM_POLICY_OUT, tmpl, priority=prio,
                                            msg_type=X.XFRM_MSG_UPDPOLICY),
                                f"trap {trap.key}: policy {_sel_str(sel, X.XFRM_POLICY_OUT)}")
                        except NetlinkError as exc:
                            del self._policies[key]
                            raise XfrmError(f"trap {trap.key}: the kernel refused the policy "
                                            f"{_sel_str(sel, X.XFRM_POLICY_OUT)}: "
                                            f"{exc.kernel_message or exc}") from exc
                    users.insert(0, (entry.uid, tmpl, sel, prio))
                    entry.policies.append(key)
                if self.install_routes and trap.mode is Mode.TUNNEL:
                    self._add_trap_routes(entry)
            except Exception:
                self._undo_trap(entry)
                raise
            self._traps[trap.key] = entry
            self._trap_counts.setdefault(trap.key, Counter())
        log.info("trap %s in the kernel: %s === %s (%s mode, %s -> %s)", trap.key,
                 ",".join(map(str, trap.local_ts)), ",".join(map(str, trap.remote_ts)),
                 trap.mode.value, trap.local, trap.remote)

    def _add_trap_routes(self, entry: _TrapEntry) -> None:
        trap = entry.spec
        path = rtnl.route_to(self._route, trap.remote)
        sources = rtnl.local_sources(self._route, list(trap.local_ts))
        for ts in trap.remote_ts:
            for net in ts.networks():
                if trap.remote in net:
                    continue  # would capture the peer itself (as in _add_routes)
                try:
                    self._routes.add(net, path, sources[net.version])
                except NetlinkError as exc:
                    raise XfrmError(f"trap {trap.key}: cannot add a route to {net}: "
                                    f"{exc}") from exc
                entry.routes.append(net)

    def _undo_trap(self, entry: _TrapEntry) -> None:
        for net in entry.routes:
            with contextlib.suppress(OSError):
                self._routes.remove(net)
        entry.routes.clear()
        for key in entry.policies:
            try:
                self._remove_policy(key, entry.uid)  # type: ignore[arg-type]
            except (NetlinkError, OSError) as exc:
                log.warning("trap %s: removing policy: %s", entry.spec.key, exc)
        entry.policies.clear()

    def remove_trap(self, key: str) -> None:
        with self._lock:
            entry = self._traps.pop(key, None)
            if entry is None:
                return
            self._undo_trap(entry)
            self._acquired_at.pop(key, None)
            self._trap_counts.pop(key, None)
        log.info("trap %s removed from the kernel", key)

    def trap_stats(self) -> dict[str, dict[str, int]]:
        return {k: dict(v) for k, v in self._trap_counts.items()}

    def _acquire(self, msg) -> None:
        """XFRM_MSG_ACQUIRE: which trap's policy (by its selector and direction) the packet
        hit; rate-limited per trap, as the kernel repeats ACQUIREs for the same flow."""
        policy = (X.selector_from(msg, "pol_sel_"), msg["pol_dir"])
        flow = X.selector_from(msg, "sel_")
        with self._lock:
            users = self._policies.get(policy, [])
            top = users[-1][0] if users else None
            entry = self._traps.get(top[5:]) if isinstance(top, str) else None
            if entry is None:
                # Traffic hit a CHILD_SA's policy with no state behind it (one direction
                # hard-expired before we took the CHILD_SA out, or a state was deleted by
                # hand): logged; the daemon's answer is the hard event it already got.
                log.info("xfrm acquire: traffic %s -> %s matches %s but has no SA", flow.src,
                         flow.dst, f"CHILD_SA #{top}'s policy" if top is not None
                         else "a policy")
                return
            key = entry.spec.key
            now = time.monotonic()
            if now - self._acquired_at.get(key, float("-inf")) < entry.spec.acquire_interval:
                self._trap_counts[key]["acquires_suppressed"] += 1
                return
            self._acquired_at[key] = now
            self._trap_counts[key]["acquires"] += 1
        log.info("xfrm acquire: %s -> %s (proto %d) hit trap %s", flow.src, flow.dst,
                 flow.proto, key)
        self._call_acquire(Acquire(key, str(flow.src), str(flow.dst), flow.proto))

    def _call_acquire(self, acq: Acquire) -> None:
        handler = self._on_acquire
        if handler is None:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(handler, acq)
            return
        try:
            handler(acq)
        except Exception:
            log.exception("acquire handler failed")

    # -- states ----------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise XfrmError("the xfrm dataplane was closed")

    def _state_params(self, entry: _Installed, inbound: bool) -> X.StateParams:
        spec = entry.spec
        keys = spec.inbound if inbound else spec.outbound
        src, dst = (spec.remote, spec.local) if inbound else (spec.local, spec.remote)
        encap = None
        if spec.encap is not None:
            ours, theirs = spec.encap.local_port, spec.encap.remote_port
            encap = (theirs, ours) if inbound else (ours, theirs)
        return X.StateParams(
            src, dst, keys.spi, entry.reqid, spec.encryption, keys.encryption_key,
            spec.integrity, keys.integrity_key, spec.mode, spec.esn, spec.replay_window,
            encap, spec.lifetime_bytes, spec.lifetime_packets, SOFT_FRACTION)

    def _add_states(self, entry: _Installed) -> None:
        for inbound in (True, False) if entry.active else (True,):
            self._add_state(entry, inbound)

    def _add_state(self, entry: _Installed, inbound: bool) -> None:
        spec = entry.spec
        p = self._state_params(entry, inbound)
        what = (f"CHILD_SA {spec.name}: {'inbound' if inbound else 'outbound'} SA "
                f"{p.spi:08x} ({spec.encryption}{'-' + spec.integrity if spec.integrity else ''})")
        try:
            self._xfrm.request(X.newsa(p), what)
        except NetlinkError as exc:
            if exc.errno != errno.EEXIST:
                raise XfrmError(_explain(exc, spec)) from exc
            # left over by a daemon that was killed: replace it (the keys differ)
            log.warning("%s exists already (a previous run?): replacing it", what)
            with contextlib.suppress(NetlinkError):
                self._xfrm.request(X.delsa(p.src, p.dst, p.spi), what)
            try:
                self._xfrm.request(X.newsa(p), what)
            except NetlinkError as exc2:
                raise XfrmError(_explain(exc2, spec)) from exc2
        entry.states.append((p.src, p.dst, p.spi))
        self._by_state[(p.dst, p.spi)] = spec.unique_id

    def _get_state(self, src: IPAddress, dst: IPAddress, spi: int) -> X.SaState | None:
        try:
            answers = self._xfrm.request(X.getsa(src, dst, spi), f"SA {spi:08x}")
        except NetlinkError as exc:
            if exc.errno == errno.ESRCH:
                return None
            raise
        return X.sa_state(X.parse(X.xfrm_usersa_info, answers[0])) if answers else None

    # -- policies -------------------------------------------------------------------------------
    def _policy_set(self, entry: _Installed) -> list[tuple[X.Selector, int, X.TemplateParams]]:
        spec = entry.spec
        out_t = X.TemplateParams(spec.local, spec.remote, entry.reqid, spec.mode)
        in_t = X.TemplateParams(spec.remote, spec.local, entry.reqid, spec.mode)
        try:
            outbound = selectors(spec.local_ts, spec.remote_ts)
            inbound = selectors(spec.remote_ts, spec.local_ts)
        except ValueError as exc:
            raise XfrmError(f"CHILD_SA {spec.name}: {exc}") from exc
        if not outbound:
            raise XfrmError(f"CHILD_SA {spec.name}: the traffic selectors have no pair of the "
                            "same IP version and protocol")
        result = [(s, X.XFRM_POLICY_OUT, out_t) for s in outbound]
        result += [(s, X.XFRM_POLICY_IN, in_t) for s in inbound]
        if spec.mode is Mode.TUNNEL:  # forwarded traffic for the subnets behind us
            result += [(s, X.XFRM_POLICY_FWD, in_t) for s in inbound]
        return result

    def _add_policies(self, entry: _Installed) -> None:
        # Policies are shared between CHILD_SAs with the same selectors (a rekeyed CHILD_SA
        # comes up before the old one goes): the newest one's template wins, and a policy
        # leaves the kernel with its last user (strongSwan's policy refcount).
        for sel, direction, tmpl in self._policy_set(entry):
            key = (sel, direction)
            users = self._policies.setdefault(key, [])
            prio = priority(sel)
            try:
                self._xfrm.request(
                    X.newpolicy(sel, direction, tmpl, priority=prio,
                                msg_type=X.XFRM_MSG_UPDPOLICY),
                    f"CHILD_SA {entry.spec.name}: policy {_sel_str(sel, direction)}")
            except NetlinkError as exc:
                if not users:
                    del self._policies[key]
                raise XfrmError(_explain(exc, entry.spec)) from exc
            users.append((entry.spec.unique_id, tmpl, sel, prio))
            entry.policies.append(key)

    def _remove_policy(self, key: tuple, unique_id: int) -> None:
        users = self._policies.get(key, [])
        users[:] = [u for u in users if u[0] != unique_id]
        sel, direction = key
        if users:
            _uid, tmpl, sel, prio = users[-1]
            self._xfrm.request(X.newpolicy(sel, direction, tmpl, priority=prio,
                                           msg_type=X.XFRM_MSG_UPDPOLICY),
                               f"policy {_sel_str(sel, direction)}")
            return
        self._policies.pop(key, None)
        try:
            self._xfrm.request(X.delpolicy(sel, direction), f"policy {_sel_str(sel, direction)}")
        except NetlinkError as exc:
            if exc.errno != errno.ENOENT:
                raise

    # -- routes ---------------------------------------------------------------------------------
    def _add_routes(self, entry: _Installed) -> None:
        spec = entry.spec
        path = rtnl.route_to(self._route, spec.remote)
        sources = rtnl.local_sources(self._route, spec.local_ts)
        for ts in spec.remote_ts:
            for net in ts.networks():
                if spec.remote in net:
                    # a route for it would capture the peer itself; it has its route already
                    log.info("CHILD_SA %s: no route for %s (it holds the peer %s)", spec.name,
                             net, spec.remote)
                    continue
                try:
                    self._routes.add(net, path, sources[net.version])
                except NetlinkError as exc:
                    raise XfrmError(f"CHILD_SA {spec.name}: cannot add a route to {net}: "
                                    f"{exc}") from exc
                entry.routes.append(net)

    # -- undo (remove and failed installs) --------------------------------------------------------
    def _undo(self, entry: _Installed) -> None:
        errors = []
        for net in entry.routes:
            try:
                self._routes.remove(net)
            except OSError as exc:
                errors.append(str(exc))
        entry.routes.clear()
        for key in entry.policies:
            try:
                self._remove_policy(key, entry.spec.unique_id)
            except (NetlinkError, OSError) as exc:
                errors.append(str(exc))
        entry.policies.clear()
        for src, dst, spi in entry.states:
            self._by_state.pop((dst, spi), None)
            try:
                self._xfrm.request(X.delsa(src, dst, spi), f"SA {spi:08x}")
            except NetlinkError as exc:
                if exc.errno != errno.ESRCH:  # already gone (hard expiry)
                    errors.append(str(exc))
        entry.states.clear()
        if errors:
            raise XfrmError(f"CHILD_SA {entry.spec.name}: removal incomplete: "
                            + "; ".join(errors))

    # -- kernel events ----------------------------------------------------------------------------
    def _start_events(self) -> None:
        groups = (1 << (X.XFRMNLGRP_ACQUIRE - 1)) | (1 << (X.XFRMNLGRP_EXPIRE - 1))
        try:
            self._events = _open_xfrm(self.netns, groups)
        except XfrmUnavailable as exc:
            log.warning("xfrm: no lifetime events (%s)", exc)
            return
        self._events.sock.settimeout(None)
        self._event_thread = threading.Thread(target=self._read_events, daemon=True,
                                              name="ocfpy-xfrm-events")
        self._event_thread.start()

    def _read_events(self) -> None:
        assert self._events is not None
        while not self._closed:
            try:
                ready, _, _ = select.select([self._wake_r, self._events.fileno()], [], [])
            except (OSError, ValueError):
                return
            if self._wake_r in ready or self._closed:
                return
            try:
                messages = self._events.receive()
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the kernel dropped events: say so, go on
                    log.warning("xfrm: kernel events were lost (socket buffer full)")
                    continue
                return
            for msg_type, raw in messages:
                try:
                    self._event(msg_type, raw)
                except Exception:
                    log.exception("xfrm: could not handle kernel event type %d", msg_type)

    def _event(self, msg_type: int, raw: bytes) -> None:
        if msg_type == X.XFRM_MSG_EXPIRE:
            msg = X.parse(X.xfrm_user_expire, raw)
            state = X.sa_state(msg)
            uid = self._by_state.get((state.dst, state.spi))
            if uid is None:
                return  # not ours (another daemon's SA in this namespace, or the probe)
            kind = "hard" if msg["hard"] else "soft"
            reason = (f"{kind} lifetime of SA {state.spi:08x} reached after {state.packets} "
                      f"packets, {state.bytes} bytes")
            log.info("CHILD_SA #%d: %s", uid, reason)
            if kind == "hard":  # the kernel deleted that SA; take the rest of the CHILD_SA out
                with contextlib.suppress(Exception):
                    self.remove(uid)
            self._emit(SaEvent(uid, kind, reason))
        elif msg_type == X.XFRM_MSG_ACQUIRE:
            self._acquire(X.parse(X.xfrm_user_acquire, raw))

    def _emit(self, event: SaEvent) -> None:
        handler = self._on_event
        if handler is None:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(handler, event)
            return
        try:
            handler(event)
        except Exception:
            log.exception("xfrm: event handler failed")


def bypass_socket(sock: socket.socket) -> None:
    """Exempt a socket from IPsec policies in both directions (IKE must never be tunnelled,
    even when a CHILD_SA's selectors cover the peer's address); strongSwan does the same."""
    level, opt = ((socket.IPPROTO_IPV6, IPV6_XFRM_POLICY) if sock.family == socket.AF_INET6
                  else (socket.IPPROTO_IP, IP_XFRM_POLICY))
    for direction in (X.XFRM_POLICY_IN, X.XFRM_POLICY_OUT):
        sock.setsockopt(level, opt, X.socket_policy(direction, sock.family))


def kernel_drivers(spec: ChildSaSpec,
                   algs: list[proc_crypto.CryptoAlg] | None = None) -> dict[str, str]:
    """The driver of record of both directions: the kernel's crypto driver that serves the
    states' algorithms, i.e. the usable /proc/crypto entry of highest priority, which is the
    one the kernel instantiated for them ("kernel:rfc4106-gcm-aesni"); where /proc/crypto
    does not list it, the algorithm's kernel name ("kernel:rfc4106(gcm(aes))"). Read once at
    install: an installed state keeps the implementation it was created with."""
    names = [X.kernel_algorithm(spec.encryption).name]
    if spec.integrity:
        names.append(X.kernel_algorithm(spec.integrity).name)
    algs = proc_crypto.read() if algs is None else algs
    served = []
    for name in names:
        alg = proc_crypto.resolve(name, algs=algs)
        served.append(f"kernel:{alg.driver}" if alg else f"kernel:{name}")
    label = "+".join(served)
    return {"in": label, "out": label}


def _sel_str(sel: X.Selector, direction: int) -> str:
    d = {X.XFRM_POLICY_IN: "in", X.XFRM_POLICY_OUT: "out", X.XFRM_POLICY_FWD: "fwd"}[direction]
    return f"{sel.src}/{sel.src_prefix} -> {sel.dst}/{sel.dst_prefix} dir {d}"


def _explain(exc: NetlinkError, spec: ChildSaSpec) -> str:
    """The kernel's refusal in words that say what to do."""
    hint = ""
    text = exc.kernel_message or os.strerror(exc.errno)
    if "algorithm not found" in text or exc.errno == errno.ENOSYS:
        algs = [X.kernel_algorithm(spec.encryption).name]
        if spec.integrity:
            algs.append(X.kernel_algorithm(spec.integrity).name)
        hint = (f" (the kernel lacks {' or '.join(algs)}: check /proc/crypto and the crypto "
                "modules, e.g. CONFIG_CRYPTO_GCM, CONFIG_CRYPTO_CHACHA20POLY1305)")
    elif "type not found" in text:
        hint = (f" (no ESP in this kernel: {_KERNEL_OPTIONS[spec.remote.version]})")
    return f"{exc.request}: {text}{hint}"
