"""Attacker lane against ocfpy with strongSwan's charon as the genuine peer (issue 13 finding 1),
ocfpy in each role.

The forger (tests/net/attacker.py) sends from charon's side of the link (oss-sun), with a
spoofed source address that no host has and a port no daemon uses, nothing but the SA's two
SPIs in hand: it never touches charon's keys or sockets. The forged packets reach ocfpy
exactly as a third party's on that segment would.

Run with the shared lock: flock /tmp/ocfpy-root-lane.lock .venv/bin/python -m pytest \
    tests/interop/test_attacker_charon.py
"""

from __future__ import annotations

import ipaddress
import sys
import time
from pathlib import Path

import pytest

from ocfpy.lab.iked_runner import wait_for

from .peers import Peers

pytestmark = pytest.mark.interop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "net"))
from attacker import (  # noqa: E402
    CREATE_CHILD_SA,
    IKE_AUTH,
    INFORMATIONAL,
    Forger,
    informational_no_sk,
    short_sk,
)

IKE, ESP = "aes128gcm16-prfsha256-x25519", "aes128gcm16"


def _identity(sa: dict) -> tuple:
    return sa["id"], sa["spi_i"], sa["spi_r"], sa["remote"]["addr"], sa["remote"]["port"]


# Today: ocfpy moves its SA's remote to the forger's spoofed address and port (and answers it
# there); DPD and every later request then go to that address, and the tunnel dies.
@pytest.mark.parametrize("initiator", ["ocfpy", "charon"])
def test_finding1_forged_messages_change_nothing_vs_charon(peers: Peers, initiator: str):
    peers.configure(IKE, ESP)
    peers.initiate(initiator)
    ours, _ = peers.wait_established()
    before = _identity(ours)
    spi_i, spi_r = bytes.fromhex(ours["spi_i"]), bytes.fromhex(ours["spi_r"])
    # the peer that sends requests "as initiator" is charon iff charon initiated
    charon_is_initiator = initiator == "charon"
    net = ipaddress.ip_interface(f"{peers.sun.outer}/24").network
    spoof = (str(net.network_address + 66), 40500)
    with Forger(peers.sun.name) as forger:
        # to 500, and to 4500 behind the non-ESP marker (RFC 3948 2.2)
        for port, marker in ((500, False), (4500, True)):
            ocfpy = (peers.moon.outer, port)
            for mid in range(0, 6):
                for exchange in (INFORMATIONAL, CREATE_CHILD_SA, IKE_AUTH):
                    for flag in (charon_is_initiator, not charon_is_initiator):
                        for forged in (
                                informational_no_sk(spi_i, spi_r, mid, initiator=flag,
                                                    exchange=exchange),
                                short_sk(spi_i, spi_r, mid, initiator=flag, exchange=exchange),
                                short_sk(spi_i, spi_r, mid, initiator=flag, exchange=exchange,
                                         plaintext_first=True)):
                            forger.send(spoof, ocfpy, forged, non_esp_marker=marker)
    time.sleep(0.5)
    (after,) = peers.ocfpy_sas()
    assert _identity(after) == before, (after, peers.logs())
    # charon, the genuine peer, is still heard and answered on the attacked SA: it rekeys the
    # CHILD_SA there (CREATE_CHILD_SA; a second 'net' child would be refused by charon itself
    # as a duplicate), and the IKE SA stays the same
    old_child = {c["spi-in"] for sa in peers.charon_sas() for c in sa.get("child-sas", {}).values()}
    list(peers.charon.vici.rekey({"child": "net", "timeout": 3000}))

    def rekeyed() -> bool:
        kids = [c for sa in peers.charon_sas() for c in sa.get("child-sas", {}).values()
                if c.get("state") == "INSTALLED"]
        return len(kids) == 1 and kids[0]["spi-in"] not in old_child

    wait_for(rekeyed, 10, "charon's CHILD_SA rekey on the attacked IKE SA", on_fail=peers.logs)
    (after,) = peers.ocfpy_established()
    assert _identity(after) == before
