"""Config dataclasses: validation names the key and the reason; PSK lookup."""

from __future__ import annotations

import pytest

from ocfpy.ike.config import (
    AuthConfig,
    ChildConfig,
    ConfigValueError,
    Connection,
    DaemonOptions,
    IkeConfig,
    Secret,
)
from ocfpy.ike.identity import Identity


@pytest.mark.parametrize("kwargs,key,reason", [
    ({"proposals": ["aes129-sha256-x25519"]}, "proposals", "unknown algorithm 'aes129'"),
    ({"proposals": []}, "proposals", "at least one"),
    ({"remote_addrs": ["not an address"]}, "remote_addrs", "not an address"),
    ({"dpd_delay": -1}, "dpd_delay", ">= 0"),
    ({"local_port": 70000}, "local_port", "UDP port"),
    ({"keyingtries": "3"}, "keyingtries", "integer"),
    ({"version": 1}, "version", "only IKEv2"),
])
def test_connection_errors_name_key_and_reason(kwargs, key, reason):
    with pytest.raises(ConfigValueError) as e:
        Connection("home", **kwargs)
    assert e.value.key == key and reason in e.value.reason
    assert str(e.value.under("connections.home")).startswith(f"connections.home.{key}: ")


@pytest.mark.parametrize("kwargs,key", [
    ({"esp_proposals": ["aes128gcm16-prfsha256"]}, "esp_proposals"),
    ({"local_ts": ["10.1.0.0/33"]}, "local_ts"),
    ({"start_action": "go"}, "start_action"),
    ({"mode": "beet"}, "mode"),
    ({"replay_window": -1}, "replay_window"),
])
def test_child_errors(kwargs, key):
    with pytest.raises(ConfigValueError) as e:
        ChildConfig("net", **kwargs)
    assert e.value.key == key


def test_other_errors():
    with pytest.raises(ConfigValueError, match="auth"):
        AuthConfig(auth="eap")  # pubkey is supported since issue 14
    with pytest.raises(ConfigValueError, match="dataplane"):
        DaemonOptions(dataplane="dpdk")
    with pytest.raises(ConfigValueError, match="secret"):
        Secret(["a"], b"")
    with pytest.raises(ConfigValueError, match="filed under"):
        IkeConfig({"a": Connection("b")})


def test_defaults_like_strongswan():
    c = Connection("x")
    assert c.retransmit.timeout == 4.0 and c.retransmit.tries == 5 and c.retransmit.base == 1.8
    assert c.local_port == 500 and c.rekey_time == 14400 and c.dpd_delay == 0
    assert ChildConfig("n").replay_window == 128 and ChildConfig("n").local_ts == ["dynamic"]
    assert DaemonOptions().cookie_threshold == 30


def test_secret_repr_hides_the_key():
    assert "hunter2" not in repr(Secret(["a"], b"hunter2"))


def test_psk_lookup_prefers_the_most_specific_secret():
    from ocfpy.ike.credentials import Credentials

    cfg = IkeConfig({}, [Secret([], b"any"), Secret(["a"], b"one"), Secret(["a", "b"], b"both")])
    psk_for = Credentials(cfg.secrets).psk_for  # the lookup IKE_AUTH uses
    assert psk_for("a", "b") == b"both"
    assert psk_for("a", "c") == b"one"
    assert psk_for("x", "y") == b"any"


@pytest.mark.parametrize("text,id_type,data", [
    ("10.0.0.1", 1, bytes([10, 0, 0, 1])),
    ("2001:db8::1", 5, bytes.fromhex("20010db8000000000000000000000001")),
    ("moon.example.org", 2, b"moon.example.org"),
    ("@moon", 2, b"moon"),
    ("user@example.org", 3, b"user@example.org"),
    ("@#0a0b", 11, b"\x0a\x0b"),
])
def test_identities(text, id_type, data):
    ident = Identity.parse(text)
    assert (ident.id_type, ident.data) == (id_type, data)
    assert Identity.parse(str(ident)) == ident
