"""ocfpy against charon when things go wrong, or away: each failure in both directions, with
the notify on the wire checked in charon's log and ocfpy's explanation checked through its
control socket (`ocfpy sa why`); deletes from either side; charon rekeying the CHILD_SA; and
the ESN row that charon's kernel-libipsec must refuse."""

from __future__ import annotations

import re

import pytest

from .ocfpy_peer import wait_for
from .peers import CHARON_ID, Peers, ocfpy_child_spis, spi

pytestmark = pytest.mark.interop

IKE, ESP = "aes128gcm16-prfsha256-x25519", "aes128gcm16"
WHO = pytest.mark.parametrize("who", ["ocfpy", "charon"], ids=lambda w: f"{w}-initiates")


def _fails(peers: Peers, who: str) -> str:
    """Initiate from ``who``, expecting a failure; the initiator's error text."""
    from vici.exception import CommandException

    from ocfpy.iked.control import ControlError

    try:
        result = peers.initiate(who, wait=6)
    except (ControlError, CommandException) as exc:
        return str(exc)
    if who == "ocfpy" and isinstance(result, dict) and result.get("state") == "failed":
        return str(result)
    # The IKE_SA may come up while the CHILD_SA fails (TS, ESN): the caller checks that.
    return ""


def _why(peers: Peers) -> str:
    """ocfpy's explanation of the last failure, as `ocfpy sa why t` prints it."""
    out = peers.iked.sa_cli("why", "t")
    assert out.returncode == 0, out.stderr
    return out.stdout


def _ocfpy_reports(peers: Peers, notify: str) -> str:
    """ocfpy logged the failure with the notify on the wire and explains it via `sa why`."""
    wait_for(lambda: re.search(rf"negotiation failed \({notify}\)", peers.iked.log()), 5,
             f"ocfpy's log to report {notify}", on_fail=peers.logs)
    return wait_for(lambda: _why(peers).strip(), 5, "ocfpy to explain the failure")


def _charon_log_has(peers: Peers, pattern: str, timeout: float = 5.0) -> None:
    wait_for(lambda: re.search(pattern, peers.charon.log_text()), timeout,
             f"charon's log to show /{pattern}/", on_fail=peers.logs)


def _no_ike_sas(peers: Peers) -> bool:
    return not peers.ocfpy_sas() and not peers.charon_sas()


def _no_children(peers: Peers) -> bool:
    ours = [c for sa in peers.ocfpy_sas() for c in sa.get("children", [])]
    theirs = [c for sa in peers.charon_sas() for c in sa.get("child-sas", {}).values()
              if c.get("state") == "INSTALLED"]
    return not ours and not theirs


@WHO
def test_proposal_mismatch_is_no_proposal_chosen(peers: Peers, who: str) -> None:
    # Only the cipher differs: the explanation has to say which transform did not match.
    peers.configure("aes256gcm16-prfsha256-x25519", ESP, ocfpy_ike="aes128gcm16-prfsha256-x25519")
    _fails(peers, who)
    if who == "ocfpy":
        _charon_log_has(peers, r"generating IKE_SA_INIT response 0 \[ N\(NO_PROP\) \]")
    else:
        _charon_log_has(peers, r"received NO_PROPOSAL_CHOSEN notify error")
    why = _ocfpy_reports(peers, "NO_PROPOSAL_CHOSEN")
    if who == "ocfpy":
        # charon's bare N(NO_PROP) does not say what it wanted: we can only name our offer.
        assert "aes128gcm16" in why, f"explanation names no transform: {why}"
    else:
        # As responder ocfpy saw both offers: it must name the one transform that differs.
        assert "aes256gcm16" in why and "aes128gcm16" in why and "encryption" in why, why
    wait_for(lambda: _no_ike_sas(peers), 5, "no IKE_SA left on either side", on_fail=peers.logs)


@WHO
def test_wrong_psk_is_authentication_failed(peers: Peers, who: str) -> None:
    peers.configure(IKE, ESP, ocfpy_psk="the ocfpy side's secret",
                    charon_psk="charon's different secret")
    _fails(peers, who)
    if who == "ocfpy":  # charon verifies our AUTH and refuses it
        _charon_log_has(peers, r"generating IKE_AUTH response 1 \[ N\(AUTH_FAILED\) \]")
    else:  # we verify charon's AUTH and refuse it
        _charon_log_has(peers, r"received AUTHENTICATION_FAILED notify error")
    why = _ocfpy_reports(peers, "AUTHENTICATION_FAILED")
    if who == "charon":  # we verified charon's AUTH: say whose and what to check
        assert CHARON_ID in why and "pre-shared key" in why, why
    wait_for(lambda: _no_ike_sas(peers), 5, "no IKE_SA left on either side", on_fail=peers.logs)


@WHO
def test_ts_mismatch_is_ts_unacceptable(peers: Peers, who: str) -> None:
    # charon only protects traffic from 10.50.0.0/24, which ocfpy's side does not have.
    peers.configure(IKE, ESP, charon_remote_ts=["10.50.0.0/24"])
    _fails(peers, who)
    if who == "ocfpy":
        _charon_log_has(peers, r"generating IKE_AUTH response 1 \[.*N\(TS_UNACCEPT\).*\]")
    else:
        _charon_log_has(peers, r"received TS_UNACCEPTABLE notify")
    why = _ocfpy_reports(peers, "TS_UNACCEPTABLE")
    assert "traffic selectors" in why, why
    if who == "charon":  # we saw charon's selectors: name them
        assert "10.50.0.0/24" in why, why
    assert _no_children(peers), peers.logs()


@WHO
def test_delete_from_either_side_is_honoured(peers: Peers, who: str) -> None:
    peers.configure(IKE, ESP)
    peers.initiate("ocfpy" if who == "charon" else "charon")  # the other side starts it
    peers.wait_established()
    if who == "ocfpy":
        peers.iked.call("terminate", name="t")
    else:
        list(peers.charon.vici.terminate({"ike": "t", "timeout": 3000}))
    wait_for(lambda: _no_ike_sas(peers), 5, f"both sides to forget the IKE_SA {who} deleted",
             on_fail=peers.logs)


def test_child_delete_by_charon_keeps_ike_sa(peers: Peers) -> None:
    peers.configure(IKE, ESP)
    peers.initiate("ocfpy")
    peers.wait_established()
    list(peers.charon.vici.terminate({"child": "net", "timeout": 3000}))
    wait_for(lambda: _no_children(peers), 5, "the CHILD_SA gone on both sides",
             on_fail=peers.logs)
    assert len(peers.ocfpy_established()) == 1 and len(peers.charon_sas()) == 1


@WHO
def test_esn_refused_by_libipsec_is_reported(peers: Peers, who: str) -> None:
    """charon's kernel-libipsec has no ESN: the IKE_SA stays, the CHILD_SA cannot be made.

    Measured charon <-> charon: as responder charon selects the ESN proposal, fails to install
    it ("IPsec SA: ESN not supported") and answers IKE_AUTH with N(NO_PROP); as initiator it
    fails the same way after the response and deletes the CHILD_SA the peer installed.
    """
    peers.configure("aes256gcm16-prfsha384-ecp384", "aes256gcm16-esn")
    _fails(peers, who)
    _charon_log_has(peers, r"IPsec SA: ESN not supported")
    _charon_log_has(peers, r"failed to establish CHILD_SA, keeping IKE_SA")
    if who == "ocfpy":
        _charon_log_has(peers, r"generating IKE_AUTH response 1 \[ IDr AUTH N\(NO_PROP\) \]")
    wait_for(lambda: _no_children(peers), 5, "no CHILD_SA on either side", on_fail=peers.logs)
    ours = peers.ocfpy_established()
    theirs = [sa for sa in peers.charon_sas() if sa.get("state") == "ESTABLISHED"]
    assert len(ours) == 1 and len(theirs) == 1, peers.logs()
    if who == "ocfpy":
        # The peer refused the CHILD_SA in IKE_AUTH: ocfpy must say which and why.
        why = _ocfpy_reports(peers, "NO_PROPOSAL_CHOSEN")
        assert "net" in why and "aes256gcm16-esn" in why, why
    else:
        # We accepted and installed it; charon then deleted it: our log must say so.
        wait_for(lambda: re.search(r"CHILD_SA \S+ \(IKE_SA #\d+\) closed: deleted by peer",
                                   peers.iked.log()),
                 5, "ocfpy's log to report the CHILD_SA deleted by charon", on_fail=peers.logs)


def test_child_rekey_by_charon(peers: Peers) -> None:
    peers.configure(IKE, ESP)
    peers.initiate("ocfpy")
    ours, theirs = peers.wait_established()
    (old,) = theirs["child-sas"].values()
    ike_spis = (theirs["initiator-spi"], theirs["responder-spi"])
    list(peers.charon.vici.rekey({"child": "net", "timeout": 3000}))

    def rekeyed() -> dict | None:
        # A rekey, not charon's fallback (reauthentication: a new IKE_SA) when the peer
        # answers CREATE_CHILD_SA with NO_ADDITIONAL_SAS.
        sas = peers.charon_sas()
        if len(sas) != 1 or (sas[0]["initiator-spi"], sas[0]["responder-spi"]) != ike_spis:
            return None
        kids = list(sas[0].get("child-sas", {}).values())
        if len(kids) == 1 and kids[0]["state"] == "INSTALLED" and kids[0]["spi-in"] != old["spi-in"]:
            return kids[0]
        return None

    new = wait_for(rekeyed, 6, "charon's CHILD_SA rekeyed (new SPIs, old one deleted)",
                   on_fail=peers.logs)
    (ours,) = peers.ocfpy_established()
    (child,) = ours["children"]
    assert ocfpy_child_spis(child) == (spi(new["spi-out"]), spi(new["spi-in"]))
    if peers.dataplane() == "userspace":
        ping = peers.ping()
        assert ping.returncode == 0, ping.stdout + peers.logs()
