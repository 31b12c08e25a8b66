"""Two real `ocfpy iked` daemons in namespaces authenticating with X.509 certificates
(issue 14): credentials in swanctl's layout beside each config file, traffic through the
tunnel, `ocfpy sa list` showing the methods and the peer's certificate, and a failure that
`ocfpy sa why` explains. Hold /tmp/ocfpy-root-lane.lock when running this file."""

from __future__ import annotations

import datetime as dt

import pytest

from ocfpy.lab.netlab import can_build_lab

pytestmark = pytest.mark.net

_why = can_build_lab()
if _why:
    pytest.skip(f"namespace lab unavailable: {_why}", allow_module_level=True)

from ike_harness import IDS, INNER, OUTER, Iked, Pair, have_nft, ike_lab, wait_for  # noqa: E402

from ocfpy.iked.control import ControlError  # noqa: E402
from ocfpy.lab import pki  # noqa: E402
from ocfpy.lab.iked_toml import (  # noqa: E402
    config_toml,
    connection_table,
    daemon_table,
    private_key_table,
    secret_table,
)

IKE = ["aes128gcm16-prfsha256-x25519"]
ESP = ["aes128gcm16"]


@pytest.fixture(scope="module")
def lab():
    with ike_lab("oic") as pair:
        yield pair


@pytest.fixture
def gws(lab: Pair):
    """Each daemon in its own folder (its credentials beside its config), stopped after."""
    a = Iked(lab.lab, lab.a.ns, lab.workdir / "a", "a")
    b = Iked(lab.lab, lab.b.ns, lab.workdir / "b", "b")
    try:
        yield lab, a, b
    finally:
        for d in (a, b):
            if d.proc is not None and d.proc.poll() is None:
                d.stop()


def _conf(side: int, *, auth=("pubkey", "pubkey"), passphrase: str | None = None,
          dataplane: str = "userspace", fragmentation: str | None = None) -> str:
    me, peer = side, 1 - side
    sections = [
        daemon_table(backend="openssl", dataplane=dataplane, listen=[OUTER[me]],
                    half_open_timeout="5s"),
        connection_table("t", local_addr=OUTER[me], remote_addr=OUTER[peer], local_id=IDS[me],
                        remote_id=IDS[peer], proposals=IKE, esp_proposals=ESP,
                        children={"net": ([INNER[me]], [INNER[peer]])}, auth=auth,
                        certs=["gw.pem"] if auth[0] == "pubkey" else None,
                        fragmentation=fragmentation,
                        retransmit={"timeout": 0.5, "tries": 3, "base": 1.4}),
    ]
    if passphrase is not None:
        sections.append(private_key_table("gw", "gw.key.pem", passphrase))
    if "psk" in auth:
        sections.append(secret_table("ike-t", "0sb2lkLXRlc3QtcHNrLW5vdC1hLXJlYWwtc2VjcmV0", IDS))
    return config_toml(*sections)


def _pki(a: Iked, b: Iked, *, kind: str = "ecdsa-p256", revoke_b: bool = False,
         passphrase: bytes | None = None) -> None:
    now = dt.datetime.now(dt.UTC)
    root = pki.issue("oic Root CA", kind=kind, ca=True, now=now)
    certs = {d: pki.issue(IDS[i], root, kind=kind, now=now) for i, d in enumerate((a, b))}
    crls = [pki.crl(root, [certs[b]], now=now)] if revoke_b else []
    for d, own in certs.items():
        pki.write_layout(str(d.workdir), own=own, cas=[root], crls=crls if d is a else [],
                         key_in_file=passphrase is None)
        if passphrase is not None:
            (d.workdir / "private").mkdir(parents=True, exist_ok=True)
            (d.workdir / "private" / "gw.key.pem").write_bytes(own.key_pem(passphrase))


@pytest.mark.parametrize("kind", ["ecdsa-p256", "rsa-3072", "ed25519"])
def test_certificates_between_two_daemons_carry_traffic(gws, kind):
    lab, a, b = gws
    _pki(a, b, kind=kind, passphrase=b"lab passphrase" if kind == "rsa-3072" else None)
    secret = "lab passphrase" if kind == "rsa-3072" else None
    a.start(_conf(0, passphrase=secret))
    b.start(_conf(1, passphrase=secret))
    assert b.call("initiate", name="t", wait=15, timeout=20)["state"] == "established"
    wait_for(a.established, 5, "a established")
    ping = lab.lab.run(lab.a.ns, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "-I",
                                  "10.177.1.1", "10.177.2.1"], timeout=20)
    assert ping.returncode == 0, ping.stdout + ping.stderr + a.log_tail() + b.log_tail()
    scheme = {"ecdsa-p256": "ecdsa-sha256", "rsa-3072": "rsa/pss-sha256",
              "ed25519": "ed25519"}[kind]
    for d, peer in ((a, IDS[1]), (b, IDS[0])):
        (sa,) = d.established()  # counters read after the ping
        assert sa["auth"]["local"] == sa["auth"]["remote"] == f"digital-signature ({scheme})"
        assert sa["auth"]["peer_cert"] == f"CN={peer},O=ocfpy lab,C=CH"
        assert sa["children"][0]["dataplane"]["packets_in"] >= 3
    shown = a.sa_cli("list")
    assert shown.returncode == 0, shown.stderr
    for word in ("auth:", "digital-signature", scheme, "cert:", IDS[1]):
        assert word in shown.stdout, shown.stdout


def test_mixed_psk_and_certificate(gws):
    _lab, a, b = gws
    _pki(a, b)
    a.start(_conf(0, auth=("pubkey", "psk"), dataplane="none"))  # a signs, b uses the PSK
    b.start(_conf(1, auth=("psk", "pubkey"), dataplane="none"))
    assert b.call("initiate", name="t", wait=15, timeout=20)["state"] == "established"
    (sa_b,) = b.established()
    assert (sa_b["auth"]["local"], sa_b["auth"]["remote"]) == \
        ("psk", "digital-signature (ecdsa-sha256)")
    assert sa_b["auth"]["peer_cert"].startswith(f"CN={IDS[0]}")


def test_revoked_certificate_is_refused_and_explained(gws):
    _lab, a, b = gws
    _pki(a, b, revoke_b=True)
    a.start(_conf(0, dataplane="none"))
    b.start(_conf(1, dataplane="none"))
    with pytest.raises(ControlError, match="AUTHENTICATION_FAILED"):
        b.call("initiate", name="t", wait=10, timeout=15)
    wait_for(lambda: "revoked" in (a.call("why", name="t") or ""), 5, "a explains")
    why_a = a.sa_cli("why", "t")
    assert "revoked by" in why_a.stdout and f"CN={IDS[1]}" in why_a.stdout, why_a
    why_b = b.call("why", name="t")
    assert "AUTHENTICATION_FAILED" in why_b
    assert a.sas() == [] and b.sas() == []


def test_expired_own_certificate_stops_the_daemon_at_start(gws):
    _lab, a, _b = gws
    now = dt.datetime.now(dt.UTC)
    root = pki.issue("oic Root CA", ca=True, now=now)
    old = pki.issue(IDS[0], root, now=now, not_before=now - dt.timedelta(days=30),
                    not_after=now - dt.timedelta(days=1))
    pki.write_layout(str(a.workdir), own=old, cas=[root])
    with pytest.raises(RuntimeError) as e:  # IkedRunner's error, with the daemon's words
        a.start(_conf(0, dataplane="none"))
    text = str(e.value) + a.log()
    assert "connections.t.local.certs" in text and "expired on" in text, text


# every IP fragment (MF set or a non-zero offset) dropped before reassembly: only IKE's own
# fragmentation (RFC 7383) can carry a message bigger than the link's MTU
DROP_IP_FRAGMENTS = """
table inet oicfrag {
  chain pre {
    type filter hook prerouting priority -500; policy accept;
    ip frag-off & 0x3fff != 0 counter drop
  }
}
"""


@pytest.mark.skipif(not have_nft(), reason="nftables (nft) not installed")
def test_fragmentation_over_a_path_that_drops_ip_fragments(gws):
    """A 3-level chain under a 4096-bit RSA root makes IKE_AUTH ~3 kB: without RFC 7383 it
    needs IP fragments, which this path drops; with it, it gets through."""
    lab, a, b = gws
    now = dt.datetime.now(dt.UTC)
    root = pki.issue("oic Root CA", kind="rsa-4096", ca=True, path_length=1, now=now)
    inter = pki.issue("oic Intermediate CA", root, kind="rsa-3072", ca=True, path_length=0,
                      now=now)
    for i, d in enumerate((a, b)):
        own = pki.issue(IDS[i], inter, kind="rsa-3072", now=now)
        pki.write_layout(str(d.workdir), own=own, cas=[root, inter])
    try:
        for ns in (lab.a.ns, lab.b.ns):
            lab.nft(ns, DROP_IP_FRAGMENTS)
        # first without IKE fragmentation: the path must really drop IP fragments
        a.start(_conf(0, dataplane="none", fragmentation="no"))
        b.start(_conf(1, dataplane="none", fragmentation="no"))
        with pytest.raises(ControlError):
            b.call("initiate", name="t", wait=8, timeout=12)
        assert "did not answer" in (b.call("why", name="t") or "")
        a.stop()
        b.stop()
        a.start(_conf(0, dataplane="userspace"))
        b.start(_conf(1, dataplane="userspace"))
        assert b.call("initiate", name="t", wait=15, timeout=20)["state"] == "established"
        wait_for(a.established, 5, "a established")
        for d in (a, b):
            stats = d.stats()
            text = str(stats)
            assert "fragmented_messages" in text and "fragments_completed" in text, stats
        ping = lab.lab.run(lab.a.ns, ["ping", "-c", "2", "-i", "0.2", "-W", "2", "-I",
                                      "10.177.1.1", "10.177.2.1"], timeout=20)
        assert ping.returncode == 0, ping.stdout + a.log_tail() + b.log_tail()
        dropped = lab.lab.run(lab.a.ns, ["nft", "list", "table", "inet", "oicfrag"]).stdout
        assert "packets 0 " not in dropped, dropped  # the first attempt's fragments died here
    finally:
        for ns in (lab.a.ns, lab.b.ns):
            lab.lab.run(ns, ["nft", "delete", "table", "inet", "oicfrag"])
