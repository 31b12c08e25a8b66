"""ocfpy.lab.iked_toml: the config text the labs, `ocfpy bench ike` and `ocfpy demo` generate
parses as TOML and says what was asked, no more (keys passed as None are left out)."""

import tomllib

import pytest

from ocfpy.lab.iked_toml import (
    Raw,
    config_toml,
    connection_toml,
    daemon_toml,
    secret_toml,
    toml_value,
)


def test_one_psk_connection_round_trips() -> None:
    text = config_toml(
        daemon_toml(listen=["192.0.2.1"], dataplane="userspace", cookie_threshold=5,
                    control_socket=None),
        connection_toml("t", local_addr="192.0.2.1", remote_addr="192.0.2.2", local_id="a",
                        remote_id="b", proposals=["aes128gcm16-prfsha256-x25519"],
                        esp_proposals=None, children={"net": (["10.1.0.0/24"], ["10.2.0.0/24"]),
                                                      "two": (["10.3.0.0/24"], ["10.4.0.0/24"])},
                        keyingtries=1, encap=True,
                        retransmit=Raw("{ timeout = 0.5, tries = 3, base = 1.4 }")),
        secret_toml("ike-t", "0sc2VjcmV0", ["a", "b"]))
    conf = tomllib.loads(text)
    assert conf["daemon"] == {"crypto_backend": "openssl", "dataplane": "userspace",
                              "listen": ["192.0.2.1"], "cookie_threshold": 5}
    t = conf["connections"]["t"]
    assert t["proposals"] == ["aes128gcm16-prfsha256-x25519"]
    assert t["keyingtries"] == 1 and t["encap"] is True
    assert t["retransmit"] == {"timeout": 0.5, "tries": 3, "base": 1.4}
    assert t["local"] == {"auth": "psk", "id": "a"} and t["remote"] == {"auth": "psk", "id": "b"}
    assert t["children"]["two"] == {"local_ts": ["10.3.0.0/24"], "remote_ts": ["10.4.0.0/24"]}
    assert conf["secrets"]["ike-t"] == {"id": ["a", "b"], "secret": "0sc2VjcmV0"}


def test_any_peer_and_default_proposals_leave_the_keys_out() -> None:
    conf = tomllib.loads(connection_toml(
        "r", local_addr="::1", remote_addr="::2", local_id="sun", remote_id=None,
        proposals=None, esp_proposals=["aes128gcm16"], children={"net": (["::/0"], ["::/0"])})
        + "\n" + secret_toml("ike", 'quote " and \\ backslash'))
    r = conf["connections"]["r"]
    assert "proposals" not in r and "remote" not in r
    assert conf["secrets"]["ike"] == {"secret": 'quote " and \\ backslash'}


def test_a_value_without_a_toml_form_is_refused() -> None:
    with pytest.raises(TypeError):
        toml_value(object())
