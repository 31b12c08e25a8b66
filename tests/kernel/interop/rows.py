"""The interop rows: what each checks, and the runner that plays them.

Rows of one peer run one after another (they share the peer's namespace); the three peers run
at the same time, each in its own thread, since their namespaces, ocfpy connections and
addresses never meet. That keeps the lane's added time near the slowest peer's, not the sum
(issue 15: boot once, run peers in parallel namespaces). Every row ends in a record (peer,
version, role, row, suites, result, reason, date) written to ``$OCFPY_VM_RESULTS/interop/``,
from which scripts/interop-table.py renders docs/interop.md's table; the pytest items in
test_zero_config.py / test_matrix.py report each row's outcome.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
import traceback
from dataclasses import dataclass, field

from ocfpy.lab.iked_runner import wait_for
from ocfpy.lab.netlab import tcp_transfer
from tests.interop.capture import Capture
from tests.kernel.peers import OCFPY_HOST, PeerError
from tests.vm.guest import results_dir

# What the kernel calls ocfpy's transforms (``ip xfrm state``), to compare the two views.
KERNEL_NAMES = {
    "aes128gcm16": "rfc4106(gcm(aes))/128", "aes256gcm16": "rfc4106(gcm(aes))/128",
    "chacha20poly1305": "rfc7539esp(chacha20,poly1305)/128",
    "aes128": "cbc(aes)", "aes192": "cbc(aes)", "aes256": "cbc(aes)",
    "aes128ctr": "rfc3686(ctr(aes))", "aes256ctr": "rfc3686(ctr(aes))",
    "sha1": "hmac(sha1)/96", "sha256": "hmac(sha256)/128", "sha384": "hmac(sha384)/192",
    "sha512": "hmac(sha512)/256",
}
ZERO_CONFIG = "zero-config (no algorithm lines either side)"

# The TCP transfer of every tunnel row, in each direction (check_traffic). 256 kB is some 180
# full-sized segments each way, plus their ACKs under the other SPI: a real TCP exchange
# through both directions of the CHILD_SA (slow start, then full windows), small enough for
# the emulated guest. 1 MB cost 34-96 s per row (docs/interop.md, "Lane time"): some 60 rows
# would have added 30+ minutes to a VM lane that already bounds CI's wall time.
TRANSFER_BYTES = 256_000


@dataclass(frozen=True)
class Row:
    label: str
    role: str  # "ocfpy initiates" / "peer initiates"
    kind: str = "matrix"  # "zero-config", "matrix", or a failure notify name
    ike: str | None = None  # ocfpy's expected IKE suite: encr[-integ]-prf-ke (None: any)
    esp: str | None = None  # ocfpy's expected ESP suite: encr[-integ][-esn]
    peer: dict = field(default_factory=dict)  # Peer.start() options, in the peer's words
    impossible: str | None = None  # the peer's own reason, when it cannot do this row

    @property
    def key(self) -> str:
        return f"{self.label} [{self.role}]"


@dataclass
class Outcome:
    result: str  # pass / fail / impossible / skipped
    reason: str | None
    record: dict


def _suite(sa: dict) -> tuple[str, str]:
    alg, child = sa["algorithms"], sa["children"][0]
    ike = "-".join(a for a in (alg["encr"], alg["integ"], alg["prf"], alg["ke"]) if a)
    esp = "-".join(a for a in (child["encr"], child["integ"], "esn" if child["esn"] else None)
                   if a)
    return ike, esp


def check_kernel_view(peer, child: dict) -> list[dict]:
    """The peer's kernel holds the two SPIs ocfpy reports, with ocfpy's algorithms."""
    states = peer.kernel_states()
    spis = {st["spi"] for st in states}
    assert {child["spi_in"], child["spi_out"]} <= spis, (child, states)
    for st in states:
        if st["spi"] not in (child["spi_in"], child["spi_out"]):
            continue
        if "aead" in st:
            assert st["aead"] == KERNEL_NAMES[child["encr"]], (child, st)
        else:
            assert st.get("enc") == KERNEL_NAMES[child["encr"]], (child, st)
            auth = st.get("auth-trunc") or st.get("auth")
            expected = KERNEL_NAMES[child["integ"]]
            # PF_KEY installs hmac(sha1) without a truncation attribute: the kernel default, 96.
            assert auth == expected or (auth == expected.split("/")[0]
                                        and expected.endswith("/96")), (child, st)
        assert st["esn"] == ("esn" if child["esn"] else "noesn"), (child, st)
    return states


def _spi(value) -> int:
    return value if isinstance(value, int) else int(str(value).removeprefix("0x"), 16)


def check_traffic(istar, peer, child: dict, record: dict) -> None:
    """TRANSFER_BYTES over TCP from ocfpy's protected host to the peer's, then as much back,
    each checked with SHA-256 at both ends (ocfpy.lab.netlab.tcp_transfer), while tcpdump
    captures what each gateway sends on the link between them (parsed with scapy,
    tests/interop/capture.py). The wire must show nothing but ESP (raw, or in UDP 4500 where
    NAT-T was negotiated) and IKE on UDP 500/4500 (DPD may run meanwhile); every ESP packet
    from ocfpy carries ocfpy's outbound SPI, every one from the peer ocfpy's inbound SPI
    (RFC 4303 2.1: the SPI names the receiver's SA), each direction carries at least the
    transfer's bytes, and no packet of the inner flow appears in clear."""
    site = peer.site
    ours, theirs = site.ocfpy_addr, site.peer_addr
    spi_out, spi_in = _spi(child["spi_out"]), _spi(child["spi_in"])
    # Each gateway's egress, one capture at each end of the link: together, what the wire
    # carried. (Not the ingress: Linux shows each packet its XFRM input decrypted to a capture
    # on the interface it arrived on, as if the inner packet had crossed the link in clear;
    # measured, a capture of both directions in the peer's namespace "saw" every TCP segment
    # from ocfpy twice, as ESP and as plain TCP.)
    caps = [Capture(ns, peer.dir / f"wire-{side}.pcap", "ip", snaplen=96, buffer_kib=16384,
                    start_timeout=120, direction="out")
            for side, ns in (("ocfpy", peer.ns.hub_end), ("peer", peer.ns))]
    t0 = time.monotonic()
    with caps[0], caps[1]:
        there = tcp_transfer(istar.lab, istar.hub, OCFPY_HOST, peer.ns, site.peer_host,
                             TRANSFER_BYTES, port=5100 + site.index, timeout=180)
        back = tcp_transfer(istar.lab, peer.ns, site.peer_host, istar.hub, OCFPY_HOST,
                            TRANSFER_BYTES, port=5200 + site.index, timeout=180)
    seconds = time.monotonic() - t0
    for way, t in (("ocfpy -> peer", there), ("peer -> ocfpy", back)):
        assert t.ok, f"TCP {way}: sent {t.sent}, received {t.received}"
    inner = (OCFPY_HOST, site.peer_host)
    sums = [cap.summary(inner) for cap in caps]
    flows_all = {k: v for w in sums for k, v in w.esp_flows.items()}
    dropped = sum(cap.dropped for cap in caps)
    ike = sum(w.ike_500 + w.ike_4500 for w in sums)
    flows = {k: (v.packets, v.bytes, sorted(f"{x:08x}" for x in v.spis))
             for k, v in flows_all.items()}
    seen = (f"ESP {flows}; IKE {ike}; other {[w.other for w in sums]} (inner in clear "
            f"{[w.clear_inner for w in sums]}); tcpdump dropped {dropped}")
    assert not any(w.clear_inner for w in sums), f"the inner flow crossed in clear: {seen}"
    assert not any(w.other for w in sums), \
        f"packets other than ESP and IKE between the gateways: {seen}"
    assert set(sums[0].esp_flows) == {(ours, theirs)} and \
        set(sums[1].esp_flows) == {(theirs, ours)}, \
        f"ESP between other addresses than {ours} and {theirs}: {seen}"
    assert flows_all[(ours, theirs)].spis == {spi_out}, \
        f"ocfpy -> peer ESP not (only) under ocfpy's outbound SPI {spi_out:08x}: {seen}"
    assert flows_all[(theirs, ours)].spis == {spi_in}, \
        f"peer -> ocfpy ESP not (only) under ocfpy's inbound SPI {spi_in:08x}: {seen}"
    # A loaded capture may lose packets (tcpdump says how many): then half is enough to show
    # that the transfer went through this link.
    least = TRANSFER_BYTES if not dropped else TRANSFER_BYTES // 2
    for key in ((ours, theirs), (theirs, ours)):
        assert flows_all[key].bytes >= least, f"too little ESP {key}: {seen}"
    encap = "ESP-in-UDP" if any(w.esp_in_udp for w in sums) else "ESP"
    record["transfer"] = (f"{TRANSFER_BYTES // 1000} kB each way, SHA-256 equal "
                          f"({there.mbit_per_s:.1f} / {back.mbit_per_s:.1f} Mbit/s)")
    record["capture"] = (f"only {encap}: {flows_all[(ours, theirs)].packets} out under "
                         f"{spi_out:08x}, {flows_all[(theirs, ours)].packets} in under "
                         f"{spi_in:08x}; {ike} IKE; no clear text"
                         + (f"; tcpdump dropped {dropped}" if dropped else ""))
    record["traffic_seconds"] = round(seconds, 1)


def check_peer_listing(peer, sa: dict, child: dict, record: dict) -> None:
    """The peer's own tool (Peer.sa_view) lists what ``ocfpy sa list --json`` lists: IKE SPIs
    and algorithms, the CHILD_SA's SPIs crossed (the peer's inbound is ocfpy's outbound) and
    algorithms, ESN; each item the tool shows is compared. What it does not show, the peer's
    kernel state (check_kernel_view: SPIs, algorithms, ICV length, ESN) stands for."""
    # The peer's tool may list the CHILD_SA a moment after its kernel holds it: a few tries.
    deadline = time.monotonic() + 30
    while True:
        try:
            record["peer_listing"] = _compare_listing(peer, sa, child)
            return
        except (AssertionError, PeerError):
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def _compare_listing(peer, sa: dict, child: dict) -> str:
    from tests.interop.peers import ocfpy_algorithms

    view = peer.sa_view()
    shown = []
    if view.ike_spis is not None:
        assert view.ike_spis == (_spi(sa["spi_i"]), _spi(sa["spi_r"])), \
            (view.tool, view.ike_spis, sa["spi_i"], sa["spi_r"])
        shown.append("IKE SPIs")
    if view.ike is not None:  # what the tool names (libreswan's names no IKE integrity)
        ours = ocfpy_algorithms(sa)
        assert view.ike == {k: ours.get(k) for k in view.ike} and set(view.ike) >= \
            set(ours) - {"integ"}, (view.tool, view.ike, sa["algorithms"])
        shown.append("IKE algorithms (" + "/".join(view.ike) + ")")
    if view.child_spis is not None:
        assert view.child_spis == (_spi(child["spi_out"]), _spi(child["spi_in"])), \
            (view.tool, [f"{x:08x}" for x in view.child_spis], child)
        shown.append("CHILD SPIs")
    if view.child is not None:
        ours = {k: v for k, v in ocfpy_algorithms(child).items() if k in ("encr", "integ")}
        assert view.child == ours, (view.tool, view.child, child)
        shown.append("CHILD algorithms")
    if view.esn is not None:
        assert view.esn == bool(child["esn"]), (view.tool, view.esn, child)
        shown.append("ESN")
    assert shown, f"{view.tool} showed nothing to compare"
    return f"{view.tool}: {', '.join(shown)} equal"


def _establish(istar, peer, role: str) -> dict:
    conn = peer.site.conn
    if role == "ocfpy initiates":
        result = istar.ocfpy.call("initiate", name=conn, wait=90, timeout=150)
        assert result.get("state") == "established", (result, peer.log()[-3000:])
    else:
        peer.initiate()
    return wait_for(lambda: istar.established(conn), 120, f"{conn} established",
                    on_fail=lambda: istar.ocfpy.log_tail(3000) + "\n--- peer ---\n"
                    + peer.log()[-3000:])[0]


def run_tunnel_row(istar, peer, row: Row, record: dict) -> None:
    """Establish in the row's role, compare suites and kernel states, ping, delete."""
    log_mark = len(istar.ocfpy.log())
    peer.start(**row.peer)
    sa = _establish(istar, peer, row.role)
    record["ike"], record["esp"] = _suite(sa)
    if row.ike is not None:
        assert (record["ike"], record["esp"]) == (row.ike, row.esp), \
            (f"negotiated {record['ike']} / {record['esp']}, the row expects "
             f"{row.ike} / {row.esp}")
    child = sa["children"][0]
    wait_for(lambda: len(peer.kernel_states()) >= 2, 30, "the peer's kernel states",
             on_fail=peer.log)
    check_kernel_view(peer, child)
    check_peer_listing(peer, sa, child, record)
    ping = istar.ping(peer.site)
    assert ping.returncode == 0, (ping.stdout + ping.stderr, peer.listing()[-1500:],
                                  istar.ocfpy.log_tail(2000))
    check_traffic(istar, peer, child, record)
    alg = sa["algorithms"]
    weak = [w for w in ("sha1", "prfsha1", "modp1024", "modp1536")
            if w in (child["encr"], child["integ"], alg["prf"], alg["ke"])]
    new_log = istar.ocfpy.log()[log_mark:]
    for word in weak:
        assert f"weak transform {word}" in new_log, new_log[-3000:]
    # ... and `sa list --json` marks it (issue 15 item 3), on the SA that carries it
    assert sorted(sa.get("weak", []) + child.get("weak", [])) == \
        sorted(weak), (sa.get("weak"), child.get("weak"), weak)
    record["warnings"] = [f"weak transform {w} warned in ocfpy's log and marked in sa list"
                          for w in weak]
    record["listing"] = peer.listing()[-2000:]
    # Delete both ways: the side that initiated deletes. That is also what a libreswan
    # initiator needs: a connection it brought up with `whack --initiate` is "supposed to
    # remain up", so when ocfpy deletes it libreswan re-initiates at once (measured: "received
    # a Delete/Notify but must remain up per local policy"); its own --terminate ends that.
    conn = peer.site.conn
    if row.role == "peer initiates" and hasattr(peer, "terminate"):
        peer.terminate()
        wait_for(lambda: not istar.sas(conn), 60, f"ocfpy saw {peer.name}'s delete",
                 on_fail=lambda: istar.ocfpy.log_tail(3000) + "\n--- peer ---\n"
                 + peer.log()[-3000:])
    else:
        istar.clear(conn)
    _peer_removed(peer, child)


def _peer_removed(peer, child: dict) -> None:
    """The deleted CHILD_SA's states are gone from the peer's kernel. Only those: a peer whose
    policy is to keep the tunnel up may already have re-initiated (measured: an "active"
    OpenIKED 7.2 started a new IKE_SA 0.45 s after ocfpy's Delete was answered, as libreswan
    does for a connection it must keep up), and the new SA's states are not the old one's."""
    gone = {child["spi_in"], child["spi_out"]}
    wait_for(lambda: not gone & {st["spi"] for st in peer.kernel_states()}, 30,
             "the peer removed the deleted CHILD_SA's kernel states", on_fail=peer.log)


LIFECYCLE = ("rekey by ocfpy", "rekey by the peer", "DPD")


def _child_spis(sa: dict) -> set[str]:
    return {c[k] for c in sa.get("children", []) for k in ("spi_in", "spi_out")}


def _crossing(istar, peer, what: str) -> None:
    ping = istar.ping(peer.site)
    assert ping.returncode == 0, (what, ping.stdout + ping.stderr, peer.listing()[-1500:],
                                  istar.ocfpy.log_tail(2000))


def _rekeyed(istar, peer, conn: str, kind: str, before: dict) -> dict:
    """Wait until ocfpy's SA for ``conn`` shows new SPIs (``kind`` child: the CHILD_SA's, which
    the peer's kernel must then hold; ike: the IKE_SA's, with its CHILD_SA carried over,
    RFC 7296 2.8), and traffic still crosses."""
    def done():
        for sa in istar.established(conn):
            if kind == "child" and not _child_spis(sa) & _child_spis(before):
                return sa
            if kind == "ike" and (sa["spi_i"], sa["spi_r"]) != (before["spi_i"],
                                                                   before["spi_r"]):
                return sa
        return None

    sa = wait_for(done, 90, f"{conn}: {kind} rekeyed",
                  on_fail=lambda: istar.ocfpy.log_tail(3000) + "\n--- peer ---\n"
                  + peer.log()[-3000:])
    if kind == "child":
        child = sa["children"][0]
        wait_for(lambda: {child["spi_in"], child["spi_out"]} <=
                 {st["spi"] for st in peer.kernel_states()}, 30,
                 "the peer's kernel holds the new SPIs", on_fail=peer.log)
        check_kernel_view(peer, child)
    _crossing(istar, peer, f"after the {kind} rekey")
    return sa


def run_lifecycle_row(istar, peer, row: Row, record: dict) -> None:
    """ocfpy initiates (so that no libreswan "must remain up" policy revives what is deleted);
    then one of LIFECYCLE:

    - rekey by ocfpy: CHILD_SA rekey, then IKE_SA rekey (CREATE_CHILD_SA, RFC 7296 1.3.3 and
      2.8), each checked by new SPIs in ocfpy's list and the peer's kernel and a ping; after
      both, the peer's own listing (check_peer_listing) and the TCP transfer with its capture
      (check_traffic) must show the rekeyed SAs' SPIs only; then the *peer* deletes (the
      other direction of "delete both ways" from rekey by the peer);
    - rekey by the peer: the same, started by the peer's own tool; then ocfpy deletes;
    - DPD: the peer dies (SIGKILL); ocfpy's liveness checks (the matrix connections'
      dpd_delay) go unanswered and it closes the SA as a dead peer (RFC 7296 2.4)."""
    conn = peer.site.conn
    if row.kind == "rekey by the peer" and peer.REKEY_IMPOSSIBLE:
        raise RowImpossible(peer.REKEY_IMPOSSIBLE)
    log_mark = len(istar.ocfpy.log())
    peer.start(**row.peer)
    sa = _establish(istar, peer, "ocfpy initiates")
    record["ike"], record["esp"] = _suite(sa)
    wait_for(lambda: len(peer.kernel_states()) >= 2, 30, "the peer's kernel states",
             on_fail=peer.log)
    _crossing(istar, peer, "after establishing")
    steps = []
    if row.kind == "DPD":
        peer.crash()
        wait_for(lambda: not istar.sas(conn), 180, f"ocfpy's DPD to close {conn}",
                 on_fail=lambda: istar.ocfpy.log_tail(3000))
        assert "dead peer" in istar.ocfpy.log()[log_mark:], istar.ocfpy.log_tail(3000)
        record["warnings"] = ["ocfpy closed the SAs: dead peer (liveness checks unanswered)"]
        return
    by_peer = row.kind == "rekey by the peer"
    for kind in ("child", "ike"):
        if by_peer:
            (peer.rekey_child if kind == "child" else peer.rekey_ike)()
        else:
            istar.ocfpy.call("rekey", name=conn, kind=kind, timeout=60)
        sa = _rekeyed(istar, peer, conn, kind, sa)
        steps.append(f"{kind.upper()}_SA rekey by {'the peer' if by_peer else 'ocfpy'}")
    # What the rekeyed SAs carry: the peer's listing and the wire show the new SPIs only.
    check_peer_listing(peer, sa, sa["children"][0], record)
    check_traffic(istar, peer, sa["children"][0], record)
    if by_peer or not hasattr(peer, "terminate"):
        istar.clear(conn)
        steps.append("delete by ocfpy")
    else:
        peer.terminate()
        wait_for(lambda: not istar.sas(conn), 60, f"ocfpy saw {peer.name}'s delete",
                 on_fail=lambda: istar.ocfpy.log_tail(3000) + "\n--- peer ---\n"
                 + peer.log()[-3000:])
        steps.append(f"delete by {peer.name}")
    wait_for(lambda: not peer.kernel_states(), 30, "the peer removed its kernel states",
             on_fail=peer.log)
    record["warnings"] = [", ".join(steps)]


class RowImpossible(Exception):
    """The peer cannot do this row; the message is the peer's own reason."""


def run_failure_row(istar, peer, row: Row, record: dict) -> None:
    """The peer initiates and is refused with ``row.kind``; ocfpy's `sa why` names the cause."""
    conn = peer.site.conn
    before = istar.ocfpy.call("why", name=conn)
    peer.start(**row.peer)
    try:
        peer.initiate()
    except PeerError:
        pass  # the peer reports its own failure; ocfpy's side is what the row checks

    def explained():
        why = istar.ocfpy.call("why", name=conn)
        return why if why and why != before else None

    why = wait_for(explained, 90, "ocfpy to explain the failure",
                   on_fail=lambda: istar.ocfpy.log_tail(3000) + "\n--- peer ---\n"
                   + peer.log()[-3000:])
    record["warnings"] = [f"ocfpy sa why: {why[:300]}"]
    assert not istar.established(conn)
    assert row.kind in istar.ocfpy.log(), istar.ocfpy.log_tail(2000)
    if row.kind == "NO_PROPOSAL_CHOSEN":
        assert "key exchange" in why and "modp8192" in why, why
        # both vocabularies: ocfpy's (strongSwan's) keywords and libreswan's ike= words
        assert "in libreswan's words: ike=" in why and ";modp8192" in why, why
        if peer.name != "openiked":  # its offer may carry more than its one ikesa line
            assert "aes256gcm16-prfsha512-modp8192 (in libreswan's words: " \
                   "ike=aes_gcm256-sha2_512;modp8192)" in why, why
    elif row.kind == "AUTHENTICATION_FAILED":
        assert peer.site.peer_id in why and "pre-shared key" in why, why
    else:
        assert "traffic selectors" in why and "10.50.0.0/24" in why, why


def play(istar, table_key: str, rows: list[Row], outcomes: dict) -> None:
    """Play ``rows`` against one peer, in order; every row ends in an Outcome and a record.
    ``table_key`` is the peer's name, with ``/userspace`` when ``istar`` is the ocfpy daemon
    with the userspace dataplane (table.ROWS)."""
    from tests.kernel.interop.conftest import PeerUnavailable

    peer_name, _, dataplane = table_key.partition("/")
    for row in rows:
        record = {"peer": peer_name, "role": row.role, "row": row.label,
                  "dataplane": dataplane or "xfrm",
                  "peer_conf": _peer_conf(row), "ike": row.ike, "esp": row.esp,
                  "warnings": [], "reason": None, "version": None,
                  "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")}
        result, reason = "pass", None
        peer = None
        try:
            peer = istar.peer(peer_name, matrix=row.kind != "zero-config")
            record["version"] = peer.version()
            if row.impossible:
                result, reason = "impossible", row.impossible
            elif row.kind in ("zero-config", "matrix"):
                run_tunnel_row(istar, peer, row, record)
            elif row.kind in LIFECYCLE:
                run_lifecycle_row(istar, peer, row, record)
            else:
                run_failure_row(istar, peer, row, record)
        except PeerUnavailable as exc:
            result, reason = "skipped", str(exc)
        except RowImpossible as exc:
            result, reason = "impossible", str(exc)
        except Exception as exc:  # noqa: BLE001 - a row's crash is that row's failure
            result, reason = "fail", _short(f"{type(exc).__name__}: {exc}")
            # The guest's /tmp goes with the guest: what explains a failure travels here.
            record["traceback"] = traceback.format_exc()[-8000:]
            record["ocfpy_log"] = istar.ocfpy.log_tail(8000)
            record["peer_log"] = peer.log()[-8000:] if peer is not None else None
        finally:
            if peer is not None:
                try:
                    if hasattr(peer, "terminate"):
                        peer.terminate()  # first: a libreswan initiator would revive the SA
                    istar.clear(peer.site.conn)
                except Exception as exc:  # noqa: BLE001
                    if result == "pass":
                        result, reason = "fail", _short(f"cleanup: {exc}")
                finally:
                    peer.stop()
        record["result"], record["reason"] = result, reason
        outcomes[(table_key, row.key)] = Outcome(result, reason, record)
        _write(record)


def play_userspace(table_key: str, rows: list[Row], outcomes: dict) -> None:
    """The rows against a peer for ocfpy's userspace dataplane (ESP over TUN and a raw ESP
    socket, the peer's kernel doing its ESP): a second ocfpy daemon in its own star (prefix
    ``iou``, namespaces apart from the xfrm daemon's), started in this thread so that its
    start-up overlaps the xfrm rows."""
    from tests.kernel.interop.conftest import ocfpy_config, start_star

    try:
        with start_star("iou", ocfpy_config(dataplane="userspace")) as ustar:
            play(ustar, table_key, rows, outcomes)
    except Exception as exc:  # noqa: BLE001 - the daemon did not start: every row says so
        reason = _short(f"the userspace ocfpy daemon: {type(exc).__name__}: {exc}")
        for row in rows:
            if (table_key, row.key) not in outcomes:
                record = {"peer": table_key.partition("/")[0], "role": row.role,
                          "row": row.label, "dataplane": "userspace", "result": "fail",
                          "reason": reason, "peer_conf": _peer_conf(row), "ike": row.ike,
                          "esp": row.esp, "warnings": [], "version": None,
                          "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
                          "traceback": traceback.format_exc()[-8000:]}
                outcomes[(table_key, row.key)] = Outcome("fail", reason, record)
                _write(record)


def play_all(istar, table: dict[str, list[Row]]) -> dict:
    outcomes: dict = {}
    threads = [threading.Thread(target=play_userspace, args=(name, rows, outcomes),
                                name=f"interop-{name}") if name.endswith("/userspace") else
               threading.Thread(target=play, args=(istar, name, rows, outcomes),
                                name=f"interop-{name}") for name, rows in table.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def _peer_conf(row: Row) -> str:
    if row.kind == "zero-config":
        return "(defaults)"
    parts = [str(v) for k, v in row.peer.items() if v and k != "psk"]
    if "psk" in row.peer:
        parts.append("psk=<a different one>")
    return " / ".join(parts) or "-"


def _short(text: str, limit: int = 500) -> str:
    return re.sub(r"\s+", " ", text).strip()[:limit]


def _write(record: dict) -> None:
    out = results_dir()
    if out is None:
        return
    d = out / "interop"
    d.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_",
                  f"{record['peer']}-{record['dataplane']}-{record['role']}-{record['row']}"
                  )[:150]
    (d / f"{name}.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
