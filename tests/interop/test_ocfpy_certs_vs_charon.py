"""ocfpy (oss-moon) against strongSwan's charon (oss-sun) with X.509 certificates (issue 14),
both directions: ECDSA P-256, RSA-3072 with RSA-PSS (charon's rsa_pss = yes) and Ed25519, all
certificates made with `cryptography` (ocfpy.lab.pki). charon reads its certificates and key
from a swanctl layout (x509/, x509ca/, private/ beside the swanctl.conf that
`swanctl --load-all --file` is given), ocfpy from the same layout beside its iked.toml.
RFC 7427 off on both sides: RSA-2048 with method 1 and ECDSA P-384 with method 10.
Failure rows: each side refuses a certificate from a CA it does not trust; ocfpy refuses
charon's revoked or expired certificate and an identity charon's certificate does not hold."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocfpy.lab import pki
from ocfpy.lab.charon import LOAD, Charon, render_conf
from ocfpy.lab.iked_toml import config_toml, connection_table, daemon_table, token_table
from ocfpy.lab.netlab import HostPair

from .ocfpy_peer import Iked, userspace_dataplane_reason, wait_for

pytestmark = pytest.mark.interop

OCFPY_ID, CHARON_ID = "moon.oss.test", "sun.oss.test"
IKE, ESP = "aes128gcm16-prfsha256-x25519", "aes128gcm16"
# (key kind, the scheme both sides sign with under RFC 7427)
KINDS = [("ecdsa-p256", "ecdsa-sha256"), ("rsa-3072", "rsa/pss-sha256"), ("ed25519", "ed25519")]
CHARON_SCHEME = {"ecdsa-sha256": "ECDSA_WITH_SHA256_DER", "rsa/pss-sha256": "RSA_EMSA_PSS_SHA2_256_SALT_32",
                 "ed25519": "ED25519"}  # strongSwan's signature_scheme_names


@pytest.fixture
def both(ocfpy_ok: None, pair: HostPair, workdir: Path) -> Iterator[tuple[HostPair, Iked,
                                                                          Charon, Path]]:
    # pkcs8: swanctl's private/ keys are PKCS#8; rsa_pss: charon signs RSA with PSS (RFC 7427)
    iked = Iked(pair.left, workdir / "ocfpy")
    with Charon(pair.right, workdir / "charon", ike_log=2, load=LOAD + " pkcs8",
                settings={"rsa_pss": True}) as charon:
        try:
            yield pair, iked, charon, workdir
        finally:
            iked.stop()


def _setup(pair: HostPair, iked: Iked, charon: Charon, kind: str, *,
           ocfpy_foreign: bool = False, charon_foreign: bool = False,
           charon_revoked: bool = False, charon_expired: bool = False,
           rfc7427: bool = True) -> None:
    """Certificates for both, charon's swanctl layout loaded, ocfpy started. ``*_foreign``:
    that side's certificate comes from a CA the other does not trust; ``charon_revoked``:
    ocfpy holds a CRL of the root that revokes charon's certificate; ``charon_expired``:
    charon's certificate expired yesterday; ``rfc7427`` False: ocfpy neither sends nor
    honours SIGNATURE_HASH_ALGORITHMS, so both sides use the dedicated methods (1, 9-11)."""
    now = dt.datetime.now(dt.UTC)
    root = pki.issue("oss Root CA", kind=kind, ca=True, now=now)
    other = pki.issue("oss Other CA", kind=kind, ca=True, now=now)
    moon = pki.issue(OCFPY_ID, other if ocfpy_foreign else root, kind=kind, now=now)
    sun = pki.issue(CHARON_ID, other if charon_foreign else root, kind=kind, now=now,
                    **({"not_before": now - 30 * pki.DAY, "not_after": now - pki.DAY}
                       if charon_expired else {}))
    m, s = pair.left, pair.right
    if charon_revoked:
        pki.write_layout(str(iked.workdir), crls=[pki.crl(root, [sun], now=now)])

    _load_charon(charon, sun, root, m, s)

    pki.write_layout(str(iked.workdir), own=moon, cas=[root], name="moon")
    dataplane = "none" if userspace_dataplane_reason() else "userspace"
    iked.start(config_toml(
        daemon_table(backend="openssl", dataplane=dataplane, listen=[m.outer],
                    control_socket=str(iked.control),
                    **({} if rfc7427 else {"signature_authentication": False})),
        connection_table("t", local_addr=m.outer, remote_addr=s.outer, local_id=OCFPY_ID,
                        remote_id=CHARON_ID, proposals=[IKE], esp_proposals=[ESP],
                        children={"net": ([m.inner_net], [s.inner_net])},
                        auth=("pubkey", "pubkey"), certs=["moon.pem"], keyingtries=1,
                        retransmit={"timeout": "1s", "tries": 2, "base": 1.5})))


def _initiate(iked: Iked, charon: Charon, who: str) -> None:
    if who == "ocfpy":
        iked.call("initiate", name="t", child="net", wait=15, timeout=20)
    else:
        charon.initiate("t", "net", timeout_ms=15000)


def _logs(iked: Iked, charon: Charon) -> str:
    return (f"\n--- ocfpy ---\n{iked.log()[-3000:]}\n--- charon ---\n"
            f"{charon.log_text()[-3000:]}")


@pytest.mark.parametrize("who", ["ocfpy", "charon"], ids=lambda w: f"{w}-initiates")
@pytest.mark.parametrize("kind,scheme", KINDS, ids=[k[0] for k in KINDS])
def test_certificates_establish_and_carry_traffic(both, kind, scheme, who):
    pair, iked, charon, _workdir = both
    _setup(pair, iked, charon, kind)
    _initiate(iked, charon, who)

    def up():
        ours = [sa for sa in iked.sas() if sa["state"] == "established" and sa["children"]]
        theirs = [sa for _, sa in charon.list_sa_entries() if sa.get("state") == "ESTABLISHED"]
        return (ours[0], theirs[0]) if ours and theirs else None

    ours, theirs = wait_for(up, 10, "established on both sides",
                            on_fail=lambda: _logs(iked, charon))
    assert ours["auth"]["local"] == f"digital-signature ({scheme})", ours["auth"]
    assert ours["auth"]["remote"] == f"digital-signature ({scheme})", _logs(iked, charon)
    assert ours["auth"]["peer_cert"] == f"CN={CHARON_ID},O=ocfpy lab,C=CH"
    assert theirs["remote-id"] == OCFPY_ID and theirs["local-id"] == CHARON_ID
    # charon's log names the scheme it verified our signature with, and its own
    log = charon.log_text()
    theirs_name = CHARON_SCHEME[scheme]
    assert f"authentication of '{OCFPY_ID}' with {theirs_name} successful" in log, log[-3000:]
    assert f"authentication of '{CHARON_ID}' (myself) with {theirs_name} successful" in log
    if userspace_dataplane_reason():
        pytest.skip("established and checked; no userspace dataplane for traffic")
    ping = pair.left.run("ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", pair.left.inner,
                         pair.right.inner, timeout=20)
    assert ping.returncode == 0, ping.stdout + _logs(iked, charon)


@pytest.fixture
def dedicated(ocfpy_ok: None, pair: HostPair, workdir: Path) -> Iterator[tuple[HostPair, Iked,
                                                                               Charon, Path]]:
    """As ``both``, but charon with signature_authentication = no: neither side announces
    SIGNATURE_HASH_ALGORITHMS, so IKE_AUTH uses RFC 7296's method 1 (RSA PKCS#1 v1.5 with
    SHA-1) or RFC 4754's methods 9-11 (ECDSA by curve)."""
    iked = Iked(pair.left, workdir / "ocfpy")
    with Charon(pair.right, workdir / "charon", ike_log=2, load=LOAD + " pkcs8",
                settings={"signature_authentication": False}) as charon:
        try:
            yield pair, iked, charon, workdir
        finally:
            iked.stop()


# (key kind, ocfpy's name for the method, charon's (auth_method_names) as its log writes it)
DEDICATED = [("rsa-2048", "rsa-sig", "RSA signature"),
             ("ecdsa-p384", "ecdsa-384", "ECDSA-384 signature")]


@pytest.mark.parametrize("who", ["ocfpy", "charon"], ids=lambda w: f"{w}-initiates")
@pytest.mark.parametrize("kind,method,charon_name", DEDICATED, ids=[k[0] for k in DEDICATED])
def test_dedicated_methods_establish_and_carry_traffic(dedicated, kind, method, charon_name,
                                                       who):
    """RSA-2048 with method 1 and ECDSA P-384 with method 10, both ways, then traffic."""
    pair, iked, charon, _workdir = dedicated
    _setup(pair, iked, charon, kind, rfc7427=False)
    _initiate(iked, charon, who)

    def up():
        ours = [sa for sa in iked.sas() if sa["state"] == "established" and sa["children"]]
        theirs = [sa for _, sa in charon.list_sa_entries() if sa.get("state") == "ESTABLISHED"]
        return (ours[0], theirs[0]) if ours and theirs else None

    ours, theirs = wait_for(up, 10, "established on both sides",
                            on_fail=lambda: _logs(iked, charon))
    assert ours["auth"]["local"] == method, ours["auth"]
    assert ours["auth"]["remote"] == method, _logs(iked, charon)
    assert ours["auth"]["peer_cert"] == f"CN={CHARON_ID},O=ocfpy lab,C=CH"
    assert theirs["remote-id"] == OCFPY_ID and theirs["local-id"] == CHARON_ID
    log = charon.log_text()
    assert f"authentication of '{OCFPY_ID}' with {charon_name} successful" in log, log[-3000:]
    assert f"authentication of '{CHARON_ID}' (myself) with {charon_name} successful" in log
    if userspace_dataplane_reason():
        pytest.skip("established and checked; no userspace dataplane for traffic")
    ping = pair.left.run("ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", pair.left.inner,
                         pair.right.inner, timeout=20)
    assert ping.returncode == 0, ping.stdout + _logs(iked, charon)


@pytest.mark.parametrize("who", ["ocfpy", "charon"], ids=lambda w: f"{w}-initiates")
def test_ocfpy_refuses_charons_expired_certificate(both, who):
    """charon still sends a certificate of its own that expired (it checks only the peer's):
    ocfpy refuses it whichever side initiates, says why, and charon hears
    AUTHENTICATION_FAILED (RFC 7296 2.21.2: as initiator ocfpy tells it in an INFORMATIONAL)."""
    pair, iked, charon, _workdir = both
    _setup(pair, iked, charon, "ecdsa-p256", charon_expired=True)
    with pytest.raises(Exception):  # noqa: B017 - ControlError or vici's CommandException
        _initiate(iked, charon, who)
    wait_for(lambda: iked.call("why", name="t"), 5, "ocfpy explains")
    why = iked.sa_cli("why", "t")
    assert f"the peer's certificate 'CN={CHARON_ID},O=ocfpy lab,C=CH' expired on" in why.stdout, \
        why.stdout + _logs(iked, charon)
    assert iked.sas() == []
    if who == "charon":
        assert "received AUTHENTICATION_FAILED notify" in charon.log_text(), \
            charon.log_text()[-3000:]


@pytest.mark.parametrize("who", ["ocfpy", "charon"], ids=lambda w: f"{w}-initiates")
def test_ocfpy_refuses_an_identity_charons_certificate_does_not_hold(both, who):
    """charon claims 'gw.oss.test' with a certificate whose only SAN is sun.oss.test (charon
    signs with the configured certificate's key whatever identity it claims): ocfpy refuses
    the IDr/IDi (RFC 7296 3.5, RFC 4945 3.1) in either role and names the SANs it found."""
    pair, iked, charon, _workdir = both
    now = dt.datetime.now(dt.UTC)
    root = pki.issue("oss Root CA", ca=True, now=now)
    moon = pki.issue(OCFPY_ID, root, now=now)
    sun = pki.issue(CHARON_ID, root, now=now)
    m, s = pair.left, pair.right
    claimed = "gw.oss.test"
    _load_charon(charon, sun, root, m, s,
                 local={"auth": "pubkey", "certs": "sun.pem", "id": claimed})
    pki.write_layout(str(iked.workdir), own=moon, cas=[root], name="moon")
    iked.start(config_toml(
        daemon_table(backend="openssl", dataplane="none", listen=[m.outer],
                    control_socket=str(iked.control)),
        connection_table("t", local_addr=m.outer, remote_addr=s.outer, local_id=OCFPY_ID,
                        remote_id=claimed, proposals=[IKE], esp_proposals=[ESP],
                        children={"net": ([m.inner_net], [s.inner_net])},
                        auth=("pubkey", "pubkey"), certs=["moon.pem"], keyingtries=1,
                        retransmit={"timeout": "1s", "tries": 2, "base": 1.5})))
    with pytest.raises(Exception):  # noqa: B017 - ControlError or vici's CommandException
        _initiate(iked, charon, who)
    wait_for(lambda: iked.call("why", name="t"), 5, "ocfpy explains")
    why = iked.sa_cli("why", "t")
    label = "IDr" if who == "ocfpy" else "IDi"
    assert f"{label} '{claimed}' is not in the certificate" in why.stdout, \
        why.stdout + _logs(iked, charon)
    assert CHARON_ID in why.stdout  # the SANs it does hold
    assert iked.sas() == []


def test_charon_refuses_a_certificate_from_an_unknown_ca(both):
    pair, iked, charon, _workdir = both
    _setup(pair, iked, charon, "ecdsa-p256", ocfpy_foreign=True)
    with pytest.raises(Exception, match="AUTHENTICATION_FAILED"):  # noqa: B017 - ControlError
        _initiate(iked, charon, "ocfpy")
    why = iked.sa_cli("why", "t")
    assert "AUTHENTICATION_FAILED" in why.stdout and "CA of our certificate" in why.stdout, why
    assert "no trusted" in charon.log_text() or "constraint check failed" in charon.log_text() \
        or "no issuer certificate found" in charon.log_text(), charon.log_text()[-3000:]


@pytest.mark.parametrize("row,expected", [
    ("unknown-ca", "no trusted CA for issuer 'CN=oss Other CA"),
    ("revoked", f"'CN={CHARON_ID},O=ocfpy lab,C=CH' was revoked by the CRL of 'CN=oss Root CA"),
])
def test_ocfpy_refuses_charons_certificate(both, row, expected):
    pair, iked, charon, _workdir = both
    _setup(pair, iked, charon, "ecdsa-p256", charon_foreign=row == "unknown-ca",
           charon_revoked=row == "revoked")
    with pytest.raises(Exception):  # noqa: B017 - vici's CommandException: charon gives up
        _initiate(iked, charon, "charon")
    wait_for(lambda: iked.call("why", name="t"), 5, "ocfpy explains")
    why = iked.sa_cli("why", "t")
    assert expected in why.stdout, why
    assert "received AUTHENTICATION_FAILED notify" in charon.log_text(), charon.log_text()[-3000:]
    assert iked.sas() == []


# -- the private key in a PKCS#11 token (SoftHSM2) ------------------------------------------------
SOFTHSM = next((p for p in ("/usr/lib/softhsm/libsofthsm2.so",
                            "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so") if Path(p).exists()),
               None)
TOKEN, PIN = "ocfpy-ike", "1234"


def _token_key(workdir: Path, monkeypatch) -> tuple[object, object]:
    """A SoftHSM2 token of this test's own with an EC P-256 key pair made in it (sensitive,
    never extractable); the daemon finds it through SOFTHSM2_CONF / OCFPY_PKCS11_MODULE.
    Returns (the pkcs11 lib, the public key as a cryptography object)."""
    pkcs11 = pytest.importorskip("pkcs11", reason="python-pkcs11 not installed")
    from cryptography.hazmat.primitives.serialization import load_der_public_key
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

    (workdir / "tokens").mkdir(parents=True)
    conf = workdir / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {workdir / 'tokens'}\n"
                    "objectstore.backend = file\nlog.level = ERROR\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))  # the daemon inherits both
    monkeypatch.setenv("OCFPY_PKCS11_MODULE", SOFTHSM)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", TOKEN, "--pin", PIN,
                    "--so-pin", "5678"], check=True, capture_output=True)
    lib = pkcs11.lib(SOFTHSM)
    lib.reinitialize()
    private = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False}
    with lib.get_token(token_label=TOKEN).open(user_pin=PIN, rw=True) as s:
        params = s.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True)
        pub, _priv = params.generate_keypair(store=True, label="gw", id=b"\x01",
                                             private_template=private)
        spki = encode_ec_public_key(pub)
    return lib, load_der_public_key(spki)


@pytest.mark.skipif(SOFTHSM is None or subprocess.run(["which", "softhsm2-util"],
                                                      capture_output=True).returncode != 0,
                    reason="softhsm2 is not installed (Debian: apt install softhsm2)")
@pytest.mark.parametrize("who", ["ocfpy", "charon"], ids=lambda w: f"{w}-initiates")
def test_private_key_in_softhsm2_token(both, monkeypatch, who):
    """ocfpy signs IKE_AUTH in the token (the pkcs11 driver) and charon accepts it; the key
    object is non-extractable and sensitive, so the daemon can only ever hold a handle."""
    from pkcs11 import Attribute, ObjectClass
    from pkcs11.exceptions import AttributeSensitive

    pair, iked, charon, workdir = both
    lib, public = _token_key(workdir / "hsm", monkeypatch)
    now = dt.datetime.now(dt.UTC)
    root = pki.issue("oss Root CA", ca=True, now=now)
    moon = pki.issue(OCFPY_ID, root, now=now, key=_PublicOnly(public))
    sun = pki.issue(CHARON_ID, root, now=now)
    m, s = pair.left, pair.right
    _load_charon(charon, sun, root, m, s)
    pki.write_layout(str(iked.workdir), own=moon, cas=[root], name="moon", key_in_file=False)
    dataplane = "none" if userspace_dataplane_reason() else "userspace"
    iked.start(config_toml(
        # auto: the token's driver signs (a strict openssl backend could not reach the key)
        daemon_table(backend="auto", dataplane=dataplane, listen=[m.outer],
                    control_socket=str(iked.control), strict_backend=False),
        connection_table("t", local_addr=m.outer, remote_addr=s.outer, local_id=OCFPY_ID,
                        remote_id=CHARON_ID, proposals=[IKE], esp_proposals=[ESP],
                        children={"net": ([m.inner_net], [s.inner_net])},
                        auth=("pubkey", "pubkey"), certs=["moon.pem"], keyingtries=1,
                        retransmit={"timeout": "1s", "tries": 2, "base": 1.5}),
        token_table("gw", f"pkcs11:token={TOKEN};object=gw", PIN)))
    _initiate(iked, charon, who)
    (ours,) = wait_for(lambda: [sa for sa in iked.sas() if sa["state"] == "established"], 10,
                       "ocfpy established", on_fail=lambda: _logs(iked, charon))
    assert ours["auth"]["signed_by"] == "pkcs11", ours["auth"]
    assert ours["auth"]["local"] == "digital-signature (ecdsa-sha256)"
    assert f"authentication of '{OCFPY_ID}' with ECDSA_WITH_SHA256_DER successful" in \
        charon.log_text()
    # the key the daemon signed with cannot be read out of the token by anyone
    with lib.get_token(token_label=TOKEN).open(user_pin=PIN) as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="gw")
        assert key[Attribute.EXTRACTABLE] is False and key[Attribute.NEVER_EXTRACTABLE] is True
        assert key[Attribute.SENSITIVE] is True
        with pytest.raises(AttributeSensitive):
            key[Attribute.VALUE]
    assert not (iked.workdir / "private").exists()  # no key file beside the config


class _PublicOnly:
    """A private-key stand-in for pki.issue: only its public key is used for an end entity
    (the CA signs), so a token key's public half is enough to certify it."""

    def __init__(self, public):
        self._public = public

    def public_key(self):
        return self._public


def _load_charon(charon: Charon, sun, root, m, s, *, cas=None, **extra) -> None:
    swanctl = charon.dir / "swanctl"
    pki.write_layout(str(swanctl), own=sun, cas=cas or [root], name="sun")
    conn = {
        "version": 2, "mobike": "no", "local_addrs": s.outer, "remote_addrs": m.outer,
        "proposals": IKE,
        "local": {"auth": "pubkey", "certs": "sun.pem", "id": CHARON_ID},
        "remote": {"auth": "pubkey", "id": OCFPY_ID},
        "children": {"net": {"local_ts": s.inner_net, "remote_ts": m.inner_net,
                             "esp_proposals": ESP, "mode": "tunnel"}},
    }
    conn.update(extra)
    (swanctl / "swanctl.conf").write_text(render_conf({"connections": {"t": conn}}) + "\n")
    out = subprocess.run(["swanctl", "--load-all", "--noprompt", "--file",
                          str(swanctl / "swanctl.conf"), "--uri", f"unix://{charon.vici_path}"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "loaded certificate from" in out.stdout and "loaded connection 't'" in out.stdout, \
        out.stdout


DROP_IP_FRAGMENTS = """
table inet ossfrag {
  chain pre {
    type filter hook prerouting priority -500; policy accept;
    ip frag-off & 0x3fff != 0 counter drop
  }
}
"""


@pytest.mark.skipif(shutil.which("nft") is None, reason="nftables (nft) not installed")
@pytest.mark.parametrize("who", ["ocfpy", "charon"], ids=lambda w: f"{w}-initiates")
def test_fragmentation_with_charon_over_a_path_that_drops_ip_fragments(both, who):
    """A 3-level chain under a 4096-bit RSA root: both IKE_AUTH messages exceed 1280 bytes and
    the path drops IP fragments, so only RFC 7383 fragments (charon: fragmentation = yes)
    carry them."""
    pair, iked, charon, _workdir = both
    now = dt.datetime.now(dt.UTC)
    root = pki.issue("oss Root CA", kind="rsa-4096", ca=True, path_length=1, now=now)
    inter = pki.issue("oss Intermediate CA", root, kind="rsa-3072", ca=True, path_length=0,
                      now=now)
    moon = pki.issue(OCFPY_ID, inter, kind="rsa-3072", now=now)
    sun = pki.issue(CHARON_ID, inter, kind="rsa-3072", now=now)
    m, s = pair.left, pair.right
    for host in (m, s):
        out = subprocess.run(host.argv("nft", "-f", "-"), input=DROP_IP_FRAGMENTS, text=True,
                             capture_output=True, timeout=10)
        assert out.returncode == 0, out.stderr
    _load_charon(charon, sun, root, m, s, cas=[root, inter], fragmentation="yes")
    pki.write_layout(str(iked.workdir), own=moon, cas=[root, inter], name="moon")
    dataplane = "none" if userspace_dataplane_reason() else "userspace"
    iked.start(config_toml(
        daemon_table(backend="openssl", dataplane=dataplane, listen=[m.outer],
                    control_socket=str(iked.control)),
        connection_table("t", local_addr=m.outer, remote_addr=s.outer, local_id=OCFPY_ID,
                        remote_id=CHARON_ID, proposals=[IKE], esp_proposals=[ESP],
                        children={"net": ([m.inner_net], [s.inner_net])},
                        auth=("pubkey", "pubkey"), certs=["moon.pem"], keyingtries=1,
                        fragmentation="yes",
                        retransmit={"timeout": "1s", "tries": 2, "base": 1.5})))
    _initiate(iked, charon, who)
    (ours,) = wait_for(lambda: [sa for sa in iked.sas() if sa["state"] == "established"], 10,
                       "ocfpy established", on_fail=lambda: _logs(iked, charon))
    assert ours["auth"]["peer_cert"] == f"CN={CHARON_ID},O=ocfpy lab,C=CH"
    stats = iked.call("stats")
    assert "fragments_completed" in str(stats) and "fragmented_messages" in str(stats), stats
    log = charon.log_text()
    assert "received fragment #1 of" in log or "received fragment #" in log, log[-3000:]
    assert "splitting IKE message" in log, log[-3000:]
    if not userspace_dataplane_reason():
        ping = m.run("ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", m.inner, s.inner,
                     timeout=20)
        assert ping.returncode == 0, ping.stdout + _logs(iked, charon)


def _pki(*args: str, stdin: bytes | None = None) -> bytes:
    out = subprocess.run(["pki", *args], input=stdin, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return out.stdout


def _pki_made(cn: str, ca_key: bytes | None = None, ca_cert: bytes | None = None):
    """A key and certificate made by strongSwan's `pki` (ECDSA P-256), as docs/certificates.md
    shows: self-signed CA when ``ca_key`` is None, else an end entity with ``cn`` as its SAN.
    Returned as pki.Cert (the certificate's bytes are pki's; write_layout re-encodes only the
    key, as PKCS#8, which both daemons read)."""
    import tempfile

    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = _pki("--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem")
    dn = f"C=CH, O=ocfpy lab, CN={cn}"
    if ca_key is None:
        cert = _pki("--self", "--ca", "--lifetime", "30", "--type", "ecdsa", "--dn", dn,
                    "--outform", "pem", stdin=key)
    else:
        with tempfile.TemporaryDirectory(prefix="oss-pki-") as d:
            Path(d, "ca.key").write_bytes(ca_key)
            Path(d, "ca.pem").write_bytes(ca_cert or b"")
            pub = _pki("--pub", "--type", "ecdsa", "--outform", "pem", stdin=key)
            cert = _pki("--issue", "--lifetime", "30", "--cacert", f"{d}/ca.pem", "--cakey",
                        f"{d}/ca.key", "--dn", dn, "--san", cn, "--type", "pub",
                        "--outform", "pem", stdin=pub)
    return pki.Cert(cx509.load_pem_x509_certificate(cert), load_pem_private_key(key, None)), key


@pytest.mark.skipif(shutil.which("pki") is None, reason="strongSwan's pki tool not installed "
                    "(Debian: apt install strongswan-pki)")
@pytest.mark.parametrize("who", ["ocfpy", "charon"], ids=lambda w: f"{w}-initiates")
def test_certificates_made_with_strongswans_pki(both, who):
    """The CA and both end-entity certificates made by strongSwan's `pki` (no keyUsage, no
    EKU: pki --issue adds neither without flags), ECDSA P-256, then traffic."""
    pair, iked, charon, _workdir = both
    (root, root_key) = _pki_made("oss pki Root CA")
    moon, _ = _pki_made(OCFPY_ID, root_key, root.pem)
    sun, _ = _pki_made(CHARON_ID, root_key, root.pem)
    m, s = pair.left, pair.right
    _load_charon(charon, sun, root, m, s)
    pki.write_layout(str(iked.workdir), own=moon, cas=[root], name="moon")
    dataplane = "none" if userspace_dataplane_reason() else "userspace"
    iked.start(config_toml(
        daemon_table(backend="openssl", dataplane=dataplane, listen=[m.outer],
                    control_socket=str(iked.control)),
        connection_table("t", local_addr=m.outer, remote_addr=s.outer, local_id=OCFPY_ID,
                        remote_id=CHARON_ID, proposals=[IKE], esp_proposals=[ESP],
                        children={"net": ([m.inner_net], [s.inner_net])},
                        auth=("pubkey", "pubkey"), certs=["moon.pem"], keyingtries=1,
                        retransmit={"timeout": "1s", "tries": 2, "base": 1.5})))
    _initiate(iked, charon, who)
    (ours,) = wait_for(lambda: [sa for sa in iked.sas() if sa["state"] == "established"], 10,
                       "ocfpy established", on_fail=lambda: _logs(iked, charon))
    assert ours["auth"]["peer_cert"] == f"CN={CHARON_ID},O=ocfpy lab,C=CH"
    assert ours["auth"]["remote"] == "digital-signature (ecdsa-sha256)", ours["auth"]
    assert f"authentication of '{OCFPY_ID}' with ECDSA_WITH_SHA256_DER successful" in \
        charon.log_text()
    if not userspace_dataplane_reason():
        ping = m.run("ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", m.inner, s.inner,
                     timeout=20)
        assert ping.returncode == 0, ping.stdout + _logs(iked, charon)


@pytest.mark.parametrize("who", ["ocfpy", "charon"], ids=lambda w: f"{w}-initiates")
def test_distinguished_names_as_identities(both, who):
    """charon's default identity with a certificate is its subject DN; ocfpy names both DNs
    as strongSwan writes them ("C=CH, O=..., CN=..."), and they match the certificates."""
    pair, iked, charon, _workdir = both
    now = dt.datetime.now(dt.UTC)
    root = pki.issue("oss Root CA", ca=True, now=now)
    moon = pki.issue(OCFPY_ID, root, now=now)
    sun = pki.issue(CHARON_ID, root, now=now)
    m, s = pair.left, pair.right
    moon_dn, sun_dn = f"C=CH, O=ocfpy lab, CN={OCFPY_ID}", f"C=CH, O=ocfpy lab, CN={CHARON_ID}"
    _load_charon(charon, sun, root, m, s, local={"auth": "pubkey", "certs": "sun.pem"},
                 remote={"auth": "pubkey", "id": moon_dn})
    pki.write_layout(str(iked.workdir), own=moon, cas=[root], name="moon")
    iked.start(config_toml(
        daemon_table(backend="openssl", dataplane="none", listen=[m.outer],
                    control_socket=str(iked.control)),
        connection_table("t", local_addr=m.outer, remote_addr=s.outer, local_id=moon_dn,
                        remote_id=sun_dn, proposals=[IKE], esp_proposals=[ESP],
                        children={"net": ([m.inner_net], [s.inner_net])},
                        auth=("pubkey", "pubkey"), certs=["moon.pem"], keyingtries=1,
                        retransmit={"timeout": "1s", "tries": 2, "base": 1.5})))
    _initiate(iked, charon, who)
    (ours,) = wait_for(lambda: [sa for sa in iked.sas() if sa["state"] == "established"], 10,
                       "ocfpy established", on_fail=lambda: _logs(iked, charon))
    assert ours["remote"]["id"] == f"CN={CHARON_ID}, O=ocfpy lab, C=CH"
    (theirs,) = [sa for _, sa in charon.list_sa_entries() if sa.get("state") == "ESTABLISHED"]
    assert theirs["remote-id"] == moon_dn and theirs["local-id"] == sun_dn, theirs
