"""The configuration keys of public-key authentication (issue 14) and loading the
swanctl-style credentials beside the file, with errors as file:line: key: reason."""

from __future__ import annotations

import datetime as dt

import pytest

from ocfpy.iked.configfile import ConfigError, load, load_cert_store, loads
from ocfpy.lab import pki

CONF = """\
[connections.gw]
remote_addrs = ["192.0.2.2"]

[connections.gw.local]
auth = "pubkey"
id = "moon.example.org"
certs = ["moon.pem"]

[connections.gw.remote]
auth = "pubkey"
id = "sun.example.org"
cacerts = ["ca-0.pem"]
signatures = ["rsa/pss-sha256", "ecdsa-sha256"]

[connections.gw.children.net]
local_ts = ["10.1.0.0/16"]

[secrets.private-moon]
file = "moon.key.pem"
secret = "s3cret passphrase"
"""


def _layout(tmp_path, *, expired: bool = False, key: bool = True, passphrase=b"s3cret passphrase"):
    now = dt.datetime.now(dt.UTC)
    root = pki.issue("Lab Root", ca=True, now=now)
    kw = {"not_before": now - dt.timedelta(days=60),
          "not_after": now - dt.timedelta(days=1)} if expired else {}
    moon = pki.issue("moon.example.org", root, now=now, **kw)
    pki.write_layout(str(tmp_path), own=moon, cas=[root], name="moon", key_in_file=False)
    if key:
        (tmp_path / "private").mkdir(exist_ok=True)
        (tmp_path / "private" / "moon.key.pem").write_bytes(moon.key_pem(passphrase))
    path = tmp_path / "iked.toml"
    path.write_text(CONF)
    return path, moon, root


def test_keys_parse():
    conf = loads(CONF + '\n[secrets.token-hsm]\nhandle = "pkcs11:token=vpn;object=moon"\n'
                 'pin = "1234"\n', "/etc/ocfpy/iked.toml")
    c = conf.connections["gw"]
    assert (c.local.auth, c.local.certs) == ("pubkey", ["moon.pem"])
    assert (c.remote.cacerts, c.remote.signatures) == (["ca-0.pem"],
                                                        ["rsa/pss-sha256", "ecdsa-sha256"])
    assert [(k.name, k.file, k.secret) for k in conf.private_keys] == \
        [("moon", "moon.key.pem", b"s3cret passphrase")]
    assert [(t.name, t.handle, t.pin) for t in conf.tokens] == \
        [("hsm", "pkcs11:token=vpn;object=moon", "1234")]
    assert conf.base_dir == "/etc/ocfpy" and conf.uses_pubkey
    assert "s3cret" not in repr(conf.private_keys) and "1234" not in repr(conf.tokens)
    assert conf.secrets == []  # no PSK needed when both sides use certificates


@pytest.mark.parametrize("extra,where,reason", [
    ('[secrets.private-x]\nsecret = "a"\n', "secrets.private-x", "missing required key 'file'"),
    ('[secrets.token-x]\nhandle = "/dev/token"\n', "secrets.token-x.handle", "PKCS#11 URI"),
    ('[secrets.token-x]\nhandle = "pkcs11:object=a"\nfile = "a"\n', "secrets.token-x.file",
     "does not belong"),
    ('[secrets.eap-x]\nsecret = "a"\n', "secrets.eap-x", "not supported"),
])
def test_secret_kinds_are_checked(extra, where, reason):
    with pytest.raises(ConfigError) as e:
        loads(CONF + extra, "iked.toml")
    assert e.value.key == where and reason in e.value.reason
    assert e.value.line is not None


def test_unknown_signature_scheme_is_refused_with_its_line():
    with pytest.raises(ConfigError) as e:
        loads(CONF.replace('"ecdsa-sha256"]', '"ecdsa-sha1"]'), "iked.toml")
    assert e.value.key == "connections.gw.remote.signatures" and e.value.line == 13


def test_credentials_load_beside_the_file(tmp_path, dispatcher):
    path, moon, root = _layout(tmp_path)
    conf = load(path)
    store, warnings = load_cert_store(conf, now=dt.datetime.now(dt.UTC), dispatcher=dispatcher)
    assert warnings == []
    (cred,) = store.local
    assert cred.path == "x509/moon.pem" and cred.certificate == moon.cert
    assert cred.where == "private/moon.key.pem"
    assert store.anchors_for(["ca-0.pem"]) == [root.cert] and store.anchors_for(["x.pem"]) == []
    assert store.local_for(["moon.pem"]) == [cred] and store.local_for(["sun.pem"]) == []
    # the passphrase-protected key signs through the dispatcher
    assert store.open_signers(dispatcher) == []


def test_expired_local_certificate_fails_at_load_with_file_and_line(tmp_path, dispatcher):
    path, _moon, _root = _layout(tmp_path, expired=True)
    with pytest.raises(ConfigError) as e:
        load_cert_store(load(path), now=dt.datetime.now(dt.UTC), dispatcher=dispatcher)
    assert e.value.key == "connections.gw.local.certs" and e.value.line == 7
    assert "x509/moon.pem" in e.value.reason and "expired on" in e.value.reason
    assert str(e.value).startswith(f"{path}:7: connections.gw.local.certs: ")


def test_wrong_passphrase_names_the_secret(tmp_path, dispatcher):
    path, _moon, _root = _layout(tmp_path, passphrase=b"another passphrase")
    with pytest.raises(ConfigError) as e:
        load_cert_store(load(path), now=dt.datetime.now(dt.UTC), dispatcher=dispatcher)
    assert e.value.key == "secrets.private-moon" and "wrong passphrase" in e.value.reason


def test_certificate_without_key(tmp_path, dispatcher):
    path, _moon, _root = _layout(tmp_path, key=False)
    path.write_text(CONF.split("[secrets")[0])
    with pytest.raises(ConfigError) as e:
        load_cert_store(load(path), now=dt.datetime.now(dt.UTC), dispatcher=dispatcher)
    assert "no private key" in e.value.reason and e.value.key == "connections.gw.local.certs"


def test_psk_only_config_loads_no_credentials(tmp_path):
    conf = loads('[connections.a]\nremote_addrs = ["192.0.2.2"]\n[secrets.ike]\nsecret = "x"\n',
                 str(tmp_path / "iked.toml"))
    assert load_cert_store(conf, now=dt.datetime.now(dt.UTC)) == (None, [])


def test_certs_list_cli(tmp_path, capsys, monkeypatch):
    """`ocfpy certs list --json`: one row per certificate, with where its key lives."""
    import json

    monkeypatch.setenv("COLUMNS", "250")  # a wide terminal: rich keeps words whole
    from ocfpy.cli.main import main

    path, moon, _root = _layout(tmp_path)
    assert main(["certs", "list", "--config", str(path), "--json"]) == 0
    rows = {r["file"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"x509/moon.pem", "x509ca/ca-0.pem"}
    mine = rows["x509/moon.pem"]
    assert mine["subject"] == "CN=moon.example.org,O=ocfpy lab,C=CH"
    assert mine["sans"] == ["moon.example.org"]
    assert mine["key"] == "ECDSA secp256r1" and mine["private_key"] == "private/moon.key.pem"
    assert rows["x509ca/ca-0.pem"]["ca"] is True and rows["x509ca/ca-0.pem"]["private_key"] == ""
    assert main(["certs", "list", "--config", str(path)]) == 0
    assert "moon.example.org" in capsys.readouterr().out


def test_certs_list_cli_reports_problems(tmp_path, capsys):
    from ocfpy.cli.main import main

    path, _moon, _root = _layout(tmp_path, expired=True)
    assert main(["certs", "list", "--config", str(path)]) == 1
    assert "expired on" in capsys.readouterr().err
