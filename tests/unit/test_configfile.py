"""The TOML loader: every accepted form becomes the right dataclass value, and every rejected
file is reported with its file name, line, dotted key and a reason a person can act on."""

from __future__ import annotations

import base64
import textwrap

import pytest

from ocfpy.ike.config import DEFAULT_ESP_PROPOSALS, IkeConfig
from ocfpy.iked.configfile import ConfigError, KeyLines, load, loads

GOOD = textwrap.dedent("""\
    [daemon]
    crypto_backend = "openssl"
    dataplane = "none"
    listen = ["10.0.0.1", "::1"]
    control_socket = "/tmp/oid-test.sock"
    half_open_timeout = "1m"

    [connections.home]
    local_addrs = ["10.0.0.1"]
    remote_addrs = ["10.0.0.2"]
    proposals = ["aes128gcm16-prfsha256-x25519", "aes256-sha256-modp2048"]
    dpd_delay = "30s"
    rekey_time = "4h"
    retransmit = { timeout = 1.5, tries = 3 }

    [connections.home.local]
    auth = "psk"
    id = "moon.example.org"

    [connections.home.remote]
    id = "sun.example.org"

    [connections.home.children.net]
    local_ts = ["10.1.0.0/16"]
    remote_ts = ["10.2.0.0/16[tcp/443]", "10.3.0.0/24"]
    esp_proposals = ["aes128gcm16", "aes256-sha256-esn"]
    start_action = "start"
    life_bytes = "1G"

    [secrets.ike-home]
    id = ["moon.example.org", "sun.example.org"]
    secret = "0sc2VjcmV0LXNlY3JldA=="
""")


def test_good_file_becomes_dataclasses():
    conf = loads(GOOD, "home.conf")
    assert isinstance(conf, IkeConfig)
    assert conf.daemon.crypto_backend == "openssl"
    assert conf.daemon.dataplane == "none"
    assert conf.daemon.listen == ["10.0.0.1", "::1"]
    assert conf.daemon.half_open_timeout == 60.0
    home = conf.connections["home"]
    assert home.name == "home"
    assert home.remote_addrs == ["10.0.0.2"]
    assert home.proposals == ["aes128gcm16-prfsha256-x25519", "aes256-sha256-modp2048"]
    assert home.dpd_delay == 30.0
    assert home.rekey_time == 4 * 3600.0
    assert (home.retransmit.timeout, home.retransmit.tries, home.retransmit.base) == (1.5, 3, 1.8)
    assert home.local.id == "moon.example.org" and home.remote.id == "sun.example.org"
    assert home.remote.auth == "psk"  # default
    net = home.children["net"]
    assert net.name == "net"
    assert net.remote_ts == ["10.2.0.0/16[tcp/443]", "10.3.0.0/24"]
    assert net.start_action == "start"
    assert net.life_bytes == 1 << 30
    assert conf.secrets[0].ids == ["moon.example.org", "sun.example.org"]
    assert conf.secrets[0].secret == b"secret-secret"
    from ocfpy.ike.credentials import Credentials

    assert Credentials(conf.secrets).psk_for("moon.example.org", "sun.example.org") == \
        b"secret-secret"


@pytest.mark.parametrize("encoded, raw", [
    ('"0x736563726574"', b"secret"),
    ('"0s' + base64.b64encode(b"\x00\xffbin").decode() + '"', b"\x00\xffbin"),
    ('"plain text with spaces"', b"plain text with spaces"),
])
def test_secret_encodings(encoded, raw):
    text = f'[secrets.ike]\nsecret = {encoded}\n'
    assert loads(text).secrets[0].secret == raw


def test_defaults_when_sections_are_short():
    conf = loads('[connections.c]\nremote_addrs = ["10.0.0.2"]\n[connections.c.children.x]\n'
                 '[secrets.ike-any]\nsecret = "k"\n')
    c = conf.connections["c"]
    assert c.children["x"].esp_proposals == DEFAULT_ESP_PROPOSALS
    assert c.local_port == 500 and c.keyingtries == 1
    assert conf.daemon.port == 500 and conf.daemon.port_nat_t == 4500


def test_default_keyword_expands():
    conf = loads('[connections.c.children.x]\nesp_proposals = ["aes256gcm16", "default"]\n'
                 '[secrets.ike]\nsecret = "k"\n')
    assert conf.connections["c"].children["x"].esp_proposals == ["aes256gcm16",
                                                                 *DEFAULT_ESP_PROPOSALS]


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        loads(text, "home.conf")
    return info.value


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_unknown_algorithm_names_file_line_key():
    text = GOOD.replace("aes256-sha256-modp2048", "aes129-sha256-modp2048")
    err = _error(text)
    assert err.path == "home.conf"
    assert err.line == _line_of(text, "aes129")
    assert err.key == "connections.home.proposals"
    assert "aes129" in err.reason
    assert str(err).startswith(f"home.conf:{err.line}: connections.home.proposals: ")


def test_unknown_key_suggests_nearest():
    text = GOOD.replace("dpd_delay", "dpd_dealy")
    err = _error(text)
    assert err.key == "connections.home.dpd_dealy"
    assert err.line == _line_of(text, "dpd_dealy")
    assert "did you mean 'dpd_delay'" in err.reason


def test_unknown_section_suggests_nearest():
    err = _error('[connection.home]\nremote_addrs = ["10.0.0.2"]\n')
    assert err.key == "connection" and err.line == 1
    assert "did you mean 'connections'" in err.reason


def test_unknown_child_key_reports_its_line():
    text = GOOD.replace("start_action", "start_actoin")
    err = _error(text)
    assert err.key == "connections.home.children.net.start_actoin"
    assert err.line == _line_of(text, "start_actoin")


@pytest.mark.parametrize("old, new, key, words", [
    ('remote_addrs = ["10.0.0.2"]', 'remote_addrs = ["10.0.0.300"]',
     "connections.home.remote_addrs", "not an IP address"),
    ('local_ts = ["10.1.0.0/16"]', 'local_ts = ["10.1.0.0/33"]',
     "connections.home.children.net.local_ts", "not a subnet"),
    ('"10.2.0.0/16[tcp/443]"', '"10.2.0.0/16[tcp/99999]"',
     "connections.home.children.net.remote_ts", "port"),
    ('"10.3.0.0/24"]', '"10.3.0.1-10.3.0.9"]', "connections.home.children.net.remote_ts",
     "ranges"),
    ('dpd_delay = "30s"', 'dpd_delay = "30 seconds"', "connections.home.dpd_delay",
     "not a duration"),
    ('start_action = "start"', 'start_action = "always"',
     "connections.home.children.net.start_action", "not one of"),
    ('dataplane = "none"', 'dataplane = "kernel"', "daemon.dataplane", "not one of"),
    ('"aes128gcm16", "aes256-sha256-esn"', '"aes128gcm16-aes256-sha256"',
     "connections.home.children.net.esp_proposals", "AEAD"),
    ('"aes128gcm16-prfsha256-x25519"', '"aes128gcm16-prfsha256"',
     "connections.home.proposals", "key exchange"),
    ('secret = "0sc2VjcmV0LXNlY3JldA=="', 'secret = "0s***"', "secrets.ike-home.secret",
     "base64"),
    ('secret = "0sc2VjcmV0LXNlY3JldA=="', 'secret = "0xabc"', "secrets.ike-home.secret", "hex"),
    ('retransmit = { timeout = 1.5, tries = 3 }', 'retransmit = { timeout = 1.5, tris = 3 }',
     "connections.home.retransmit.tris", "did you mean 'tries'"),
    ('life_bytes = "1G"', 'life_bytes = -1', "connections.home.children.net.life_bytes",
     "negative"),
    ('listen = ["10.0.0.1", "::1"]', 'listen = "10.0.0.1"', None, None),  # one item is fine
])
def test_bad_values(old, new, key, words):
    assert old in GOOD
    text = GOOD.replace(old, new)
    if key is None:
        loads(text)
        return
    err = _error(text)
    assert err.key == key, str(err)
    assert words in err.reason, str(err)
    # the line is the key's own line, or the inline table's line
    needle = new.split(" = ")[0] + " = " if " = " in new else new
    assert err.line == _line_of(text, needle), str(err)


def test_wrong_type_is_named():
    err = _error(GOOD.replace('port_nat_t', 'x') if False else
                 GOOD.replace('crypto_backend = "openssl"', 'crypto_backend = 5'))
    assert err.key == "daemon.crypto_backend" and "expected a string, got an integer" in err.reason
    assert err.line == 2


def test_missing_psk_is_reported_at_load():
    text = GOOD.replace('id = ["moon.example.org", "sun.example.org"]', 'id = ["other"]')
    err = _error(text)
    assert err.key == "connections.home"
    assert "sun.example.org" in err.reason and "secrets" in err.reason
    assert err.line == _line_of(text, "[connections.home]")


def test_start_needs_remote_address():
    text = GOOD.replace('remote_addrs = ["10.0.0.2"]', 'remote_addrs = ["%any"]')
    err = _error(text)
    assert err.key == "connections.home.children.net.start_action"


def test_non_ike_secret_refused():
    err = _error('[secrets.eap-x]\nsecret = "k"\n')
    assert err.key == "secrets.eap-x" and "is not supported" in err.reason
    assert "ike[-NAME]" in err.reason and "private-NAME" in err.reason  # what is, since issue 14


def test_toml_syntax_error_has_line():
    err = _error('[daemon]\ndataplane = "none"\nport = \n')
    assert err.line == 3 and err.key is None and "not valid TOML" in err.reason


def test_load_reads_files(tmp_path):
    f = tmp_path / "oid.conf"
    f.write_text(GOOD)
    assert load(f).connections["home"].remote_addrs == ["10.0.0.2"]
    with pytest.raises(ConfigError, match="cannot read the file"):
        load(tmp_path / "missing.conf")


def test_key_lines_understands_toml_forms():
    text = textwrap.dedent('''\
        top = 1
        [a.b]
        x = [
          "one", # comment ]
          "two",
        ]
        "quoted.key" = 2
        y.z = 3
        s = """multi
        line = 4
        """
        after = 5
        [[arr]]
        k = 6
    ''')
    lines = KeyLines(text).lines
    assert lines[("top",)] == 1
    assert lines[("a", "b")] == 2
    assert lines[("a", "b", "x")] == 3
    assert lines[("a", "b", "quoted.key")] == 7
    assert lines[("a", "b", "y", "z")] == 8
    assert ("a", "b", "line") not in lines  # inside a multi-line string
    assert lines[("a", "b", "after")] == 12
    assert lines[("arr", "k")] == 14


def test_iked_reports_config_errors_and_exits_78(tmp_path, capsys):
    from ocfpy.cli.main import main

    f = tmp_path / "oid-bad.toml"
    f.write_text(GOOD.replace("dpd_delay", "dpd_dealy"))
    assert main(["iked", "--config", str(f), "--foreground"]) == 78
    err = capsys.readouterr().err
    assert f"{f}:{_line_of(f.read_text(), 'dpd_dealy')}: connections.home.dpd_dealy: " in err


def test_iked_refuses_unavailable_backend(tmp_path, capsys):
    from ocfpy.cli.main import main

    f = tmp_path / "oid.toml"
    f.write_text(GOOD)
    assert main(["iked", "--config", str(f), "--crypto-backend", "nosuchdriver", "--check"]) == 1
    err = capsys.readouterr().err
    assert "nosuchdriver" in err and "no such driver is registered" in err and "openssl" in err
    assert main(["iked", "--config", str(f), "--check"]) == 0
    assert "config OK: 1 connection(s), 1 secret(s)" in capsys.readouterr().out


# -- any value in any place: a ConfigError naming the key, never another exception ----------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ocfpy.iked import configfile  # noqa: E402

_SCALARS = st.one_of(
    st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
    st.text(max_size=30), st.sampled_from(["30s", "4h", "0x00", "0s", "%any", "::", "10.0.0.0/8",
                                           "aes128gcm16", "default", "dynamic", "tunnel", "1G"]),
)
_VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3),
                    st.dictionaries(st.sampled_from(["timeout", "tries", "base", "x"]), _SCALARS,
                                    max_size=3))


def _places() -> list[tuple[str, str]]:
    """(table, key) for every key of the schema, and one unknown key per table."""
    tables = {"daemon": configfile.DAEMON, "connections.c": configfile.CONNECTION,
              "connections.c.local": configfile.AUTH, "connections.c.children.x": configfile.CHILD,
              "secrets.ike-s": configfile.SECRET}
    out = []
    for table, schema in tables.items():
        out += [(table, k) for k, v in schema.keys.items() if not isinstance(v, configfile.TableOf)]
        out.append((table, "no_such_key"))
    return out


def _toml_value(v) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if v == v and abs(v) != float("inf") else "0.0"
    if isinstance(v, int):
        return str(v) if abs(v) < 2**63 else '"huge"'
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(i) for i in v) + "]"
    return "{ " + ", ".join(f"{k} = {_toml_value(i)}" for k, i in v.items()) + " }"


@settings(max_examples=300, deadline=None)
@given(place=st.sampled_from(_places()), value=_VALUES)
def test_any_value_anywhere_is_accepted_or_named(place, value):
    table, key = place
    base = {"daemon": "", "connections.c": 'remote_addrs = ["10.0.0.2"]',
            "connections.c.local": "", "connections.c.children.x": "",
            "secrets.ike-s": 'secret = "k"'}
    base[table] = f"{key} = {_toml_value(value)}\n" + base[table]
    if table == "secrets.ike-s" and key == "secret":
        base[table] = f"{key} = {_toml_value(value)}\n"
    text = "".join(f"[{t}]\n{body}\n" for t, body in base.items())
    try:
        loads(text, "fuzz.toml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.toml:")
        assert exc.line is not None, str(exc)
        if exc.key and "not valid TOML" not in exc.reason:
            assert exc.key.split(".")[0] in ("daemon", "connections", "secrets"), str(exc)


def test_udp_gso_is_a_daemon_switch_off_by_default():
    assert loads(GOOD, "home.conf").daemon.udp_gso is False
    assert loads("[daemon]\nudp_gso = true\n", "home.conf").daemon.udp_gso is True
    err = _error("[daemon]\nudp_gso = 3\n")
    assert (err.line, err.key) == (2, "daemon.udp_gso") and "true or false" in err.reason


# -- [daemon] calibration ------------------------------------------------------------------
def _calibration(path, rates) -> None:
    import json

    path.write_text(json.dumps({"source": "test", "rates": rates}))


def test_calibration_is_a_path_from_the_config_files_folder(tmp_path):
    _calibration(tmp_path / "cal.json", {"aes128gcm16": {"openssl": [[1400, 5.0]]}})
    conf = tmp_path / "iked.toml"
    conf.write_text('[daemon]\ncalibration = "cal.json"\n')
    assert load(conf).daemon.calibration == str(tmp_path / "cal.json")
    assert loads("[daemon]\n", "home.conf").daemon.calibration is None  # off unless asked


def test_calibration_default_is_where_bench_crypto_saves(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "ocfpy").mkdir()
    _calibration(tmp_path / "ocfpy" / "calibration.json", {})
    conf = loads('[daemon]\ncalibration = "default"\n', "home.conf")
    assert conf.daemon.calibration == str(tmp_path / "ocfpy" / "calibration.json")


@pytest.mark.parametrize("content,reason", [
    (None, "no such file (write one with `ocfpy bench crypto --save`)"),
    ("{not json", "not JSON"),
    ('["rates"]', 'expected an object with "rates"'),
    ('{"rates": {"aes129gcm16": {}}}', "unknown algorithm 'aes129gcm16'"),
    ('{"rates": {"aes128gcm16": {"openssl": [[1400, -1]]}}}', "is not [bytes >= 0, ops"),
    ('{"rates": {"aes128gcm16": {"openssl": []}}}', "non-empty list"),
])
def test_a_broken_calibration_is_refused_with_file_line_and_key(tmp_path, content, reason):
    if content is not None:
        (tmp_path / "cal.json").write_text(content)
    conf = tmp_path / "iked.toml"
    conf.write_text('[daemon]\ndataplane = "none"\ncalibration = "cal.json"\n')
    with pytest.raises(ConfigError) as exc:
        load(conf)
    assert (exc.value.line, exc.value.key) == (3, "daemon.calibration")
    assert str(exc.value).startswith(f"{conf}:3: daemon.calibration: {tmp_path / 'cal.json'}: ")
    assert reason in exc.value.reason


def test_rekey_grace_loads_as_a_duration():
    """Issue 18's grace period of a rekeyed CHILD_SA's inbound SA: a [daemon] duration."""
    from ocfpy.iked.configfile import ConfigError, loads

    assert loads("").daemon.rekey_grace == 2.0
    assert loads('[daemon]\nrekey_grace = "1m"\n').daemon.rekey_grace == 60.0
    with pytest.raises(ConfigError, match="rekey_grace"):
        loads('[daemon]\nrekey_grace = "soon"\n')


def test_issue13_limit_keys_load_and_are_checked():
    """The flood/size limits of issue 13 are [daemon] keys with checked values."""
    from ocfpy.iked.configfile import ConfigError, loads

    cfg = loads('[daemon]\nhalf_open_limit = 200\nhalf_open_limit_per_ip = 2\n'
                'init_rate_threshold = 10\ncookie_rotation = "5m"\ncookie_grace = "20s"\n'
                'max_packet = 4096\nmax_proposals = 8\nmax_transforms = 16\n'
                'max_payloads = 20\nmax_notifies = 10\nrefusal_log_interval = "1m"\n')
    d = cfg.daemon
    assert (d.half_open_limit, d.half_open_limit_per_ip, d.init_rate_threshold) == (200, 2, 10)
    assert (d.cookie_rotation, d.cookie_grace, d.refusal_log_interval) == (300.0, 20.0, 60.0)
    assert (d.max_packet, d.max_proposals, d.max_transforms, d.max_payloads,
            d.max_notifies) == (4096, 8, 16, 20, 10)
    for bad in ("max_packet = 70000", "max_packet = 100", "max_proposals = 0",
                'half_open_limit = "many"'):
        with pytest.raises(ConfigError, match=bad.split(" ")[0]):
            loads(f"[daemon]\n{bad}\n")


@pytest.mark.parametrize("mode,warned", [(0o600, False), (0o640, True), (0o604, True)])
def test_secrets_readable_by_others_warn_at_load(tmp_path, caplog, mode, warned):
    """Issue 13 finding 9: a file holding PSKs that group/others can read is no longer
    accepted silently."""
    import logging
    import os

    from ocfpy.iked.configfile import load

    f = tmp_path / "iked.toml"
    f.write_text(GOOD)
    os.chmod(f, mode)
    with caplog.at_level(logging.WARNING, logger="ocfpy"):
        conf = load(f)
    assert conf.secrets
    msgs = [r.getMessage() for r in caplog.records if "holds secrets" in r.getMessage()]
    assert bool(msgs) is warned
    if warned:
        assert f"mode {mode:04o}" in msgs[0] and "chmod 600" in msgs[0]


def test_strict_permissions_refuses_a_readable_secrets_file(tmp_path):
    import os

    from ocfpy.iked.configfile import ConfigError, load

    f = tmp_path / "iked.toml"
    f.write_text(GOOD.replace("[daemon]\n", "[daemon]\nstrict_permissions = true\n", 1))
    os.chmod(f, 0o644)
    with pytest.raises(ConfigError, match="readable by group and others.*strict_permissions"):
        load(f)
    os.chmod(f, 0o600)
    assert load(f).daemon.strict_permissions is True
    # without secrets there is nothing to protect
    f.write_text("[daemon]\nstrict_permissions = true\n")
    os.chmod(f, 0o644)
    assert load(f).secrets == []
