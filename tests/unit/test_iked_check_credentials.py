"""`ocfpy iked --check` loads the credentials (certificates, keys, CAs, CRLs, tokens) with the
daemon's own call (configfile.open_cert_store) and refuses, with file:line: key: reason and
EX_CONFIG, what start would refuse; `[daemon] pkcs11_module` names the PKCS#11 module."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ocfpy.cli.main import main
from ocfpy.iked.configfile import ConfigError, loads
from ocfpy.lab import pki
from plugins.pkcs11 import MODULE_CANDIDATES

EX_CONFIG = 78
CONF = """\
[daemon]
crypto_backend = "openssl"
dataplane = "none"
listen = ["127.0.0.1"]
port = 15000
port_nat_t = 15001
control_socket = "{sock}"
{daemon_extra}
[connections.gw]
remote_addrs = ["192.0.2.2"]

[connections.gw.local]
auth = "pubkey"
id = "moon.example.org"
certs = ["moon.pem"]

[connections.gw.remote]
auth = "pubkey"
id = "sun.example.org"

[connections.gw.children.net]
local_ts = ["10.1.0.0/16"]
{secrets}"""


def _write(tmp_path: Path, *, expired: bool = False, key: bool = True, crl: bool = False,
           daemon_extra: str = "", secrets: str = "") -> Path:
    now = dt.datetime.now(dt.UTC)
    root = pki.issue("Lab Root", ca=True, now=now)
    kw = {"not_before": now - 60 * pki.DAY, "not_after": now - pki.DAY} if expired else {}
    moon = pki.issue("moon.example.org", root, now=now, **kw)
    pki.write_layout(str(tmp_path), own=moon, cas=[root], name="moon", key_in_file=key,
                     crls=[pki.crl(root, [])] if crl else [])
    path = tmp_path / "iked.toml"
    path.write_text(CONF.format(sock=tmp_path / "c.sock", daemon_extra=daemon_extra,
                                secrets=secrets))
    path.chmod(0o600)
    return path


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_check_loads_the_credentials_and_says_what_it_found(tmp_path, capsys):
    conf = _write(tmp_path)
    assert main(["iked", "--config", str(conf), "--check"]) == 0
    out = capsys.readouterr().out
    assert "credentials: 1 certificate(s) with keys [moon.pem (" in out, out
    assert "1 CA certificate(s), 0 CRL(s) (revocation: not checked" in out, out
    conf = _write(tmp_path, crl=True)
    assert main(["iked", "--config", str(conf), "--check"]) == 0
    out = capsys.readouterr().out
    assert "1 CRL(s)" in out and "not checked" not in out, out


@pytest.mark.parametrize("kind,reason", [("expired", "expired on"),
                                         ("no key", "no private key")])
def test_check_refuses_what_start_refuses(tmp_path, capsys, kind, reason):
    """An expired certificate of ours, a certificate whose key is missing: start refuses
    (tests/net/test_ike_certs.py), and so does --check, with the file, the line of the
    `certs` key that names the certificate, and the reason."""
    conf = _write(tmp_path, expired=kind == "expired", key=kind != "no key")
    assert main(["iked", "--config", str(conf), "--check"]) == EX_CONFIG
    err = capsys.readouterr().err
    where = f"{conf}:{_line_of(conf, 'certs = ')}: connections.gw.local.certs: "
    assert where in err and reason in err, err


def test_pkcs11_module_is_checked_at_load(tmp_path):
    text = CONF.format(sock="/run/x.sock", daemon_extra='pkcs11_module = "lib/none.so"\n',
                       secrets="")
    with pytest.raises(ConfigError) as e:
        loads(text, str(tmp_path / "iked.toml"))
    assert e.value.key == "daemon.pkcs11_module" and e.value.line == 8
    assert f"PKCS#11 module {tmp_path}/lib/none.so does not exist" in e.value.reason
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "none.so").write_bytes(b"")
    conf = loads(text, str(tmp_path / "iked.toml"))  # relative to the config's folder
    assert conf.daemon.pkcs11_module == str(tmp_path / "lib" / "none.so")


MODULE = next((p for p in MODULE_CANDIDATES[:3] if os.path.exists(p)), None)


@pytest.mark.skipif(MODULE is None or shutil.which("softhsm2-util") is None,
                    reason="softhsm2 is not installed (Debian: apt install softhsm2)")
def test_check_opens_the_token_of_the_configured_module(tmp_path):
    """The key in a SoftHSM2 token, the module named by [daemon] pkcs11_module only (the
    environment names a module that does not exist: the file wins); --check signs in the
    token as start does, and refuses a wrong PIN with the secret's line."""
    pkcs11 = pytest.importorskip("pkcs11")
    from cryptography.hazmat.primitives.serialization import load_der_public_key
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

    (tmp_path / "tokens").mkdir()
    hsm_conf = tmp_path / "softhsm2.conf"
    hsm_conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\n"
                        "objectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(hsm_conf),
           "OCFPY_PKCS11_MODULE": "/nonexistent/libp11.so"}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "vpn", "--pin",
                    "1234", "--so-pin", "5678"], check=True, capture_output=True, env=env)
    # made in a child process: SoftHSM2 reads SOFTHSM2_CONF once per process (C_Initialize)
    make = (
        "import sys, pkcs11\n"
        "from pkcs11 import Attribute, KeyType\n"
        "from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters\n"
        f"lib = pkcs11.lib({MODULE!r})\n"
        "with lib.get_token(token_label='vpn').open(user_pin='1234', rw=True) as s:\n"
        "    p = s.create_domain_parameters(KeyType.EC, {Attribute.EC_PARAMS:"
        " encode_named_curve_parameters('secp256r1')}, local=True)\n"
        "    pub, _ = p.generate_keypair(store=True, label='moon', id=b'\\x01',"
        " private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})\n"
        "    sys.stdout.buffer.write(encode_ec_public_key(pub))\n")
    del pkcs11, Attribute, KeyType, encode_ec_public_key, encode_named_curve_parameters
    spki = subprocess.run([sys.executable, "-c", make], check=True, capture_output=True,
                          env=env).stdout
    now = dt.datetime.now(dt.UTC)
    root = pki.issue("Lab Root", ca=True, now=now)

    class _Public:  # pki.issue needs only the end entity's public key (the CA signs)
        def public_key(self):
            return load_der_public_key(spki)

    moon = pki.issue("moon.example.org", root, now=now, key=_Public())
    pki.write_layout(str(tmp_path), own=moon, cas=[root], name="moon", key_in_file=False)

    def check(pin: str) -> subprocess.CompletedProcess:
        conf = tmp_path / "iked.toml"
        conf.write_text(CONF.format(
            sock=tmp_path / "c.sock",
            daemon_extra=f'pkcs11_module = "{MODULE}"\nstrict_backend = false\n',
            secrets=f'\n[secrets.token-moon]\nhandle = "pkcs11:token=vpn;object=moon"\n'
                    f'pin = "{pin}"\n'))
        conf.chmod(0o600)
        return subprocess.run([sys.executable, "-m", "ocfpy.cli.main", "iked", "--config",
                               str(conf), "--check", "--crypto-backend", "auto"],
                              capture_output=True, text=True, env=env, timeout=120)

    ok = check("1234")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "moon.pem (pkcs11:token=vpn;object=moon" in ok.stdout, ok.stdout
    assert f"pkcs11 module: {MODULE}" in ok.stdout, ok.stdout
    bad = check("9999")
    assert bad.returncode == EX_CONFIG, bad.stdout + bad.stderr
    assert "secrets.token-moon" in bad.stderr and "iked.toml:" in bad.stderr, bad.stderr
