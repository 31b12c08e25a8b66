"""ocfpy.lab.iked_toml: the configs the labs, `ocfpy bench ike` and `ocfpy demo` generate
parse as TOML, say what was asked and no more (keys passed as None are left out), and read
back through the daemon's own loader (ocfpy.iked.configfile) whatever the names contain."""

import tomllib

import pytest

from ocfpy.iked.configfile import load
from ocfpy.lab.iked_toml import config_toml, connection_table, daemon_table, secret_table


def test_one_psk_connection_round_trips() -> None:
    text = config_toml(
        daemon_table(listen=["192.0.2.1"], dataplane="userspace", cookie_threshold=5,
                     control_socket=None),
        connection_table("t", local_addr="192.0.2.1", remote_addr="192.0.2.2", local_id="a",
                         remote_id="b", proposals=["aes128gcm16-prfsha256-x25519"],
                         esp_proposals=None,
                         children={"net": (["10.1.0.0/24"], ["10.2.0.0/24"]),
                                   "two": (["10.3.0.0/24"], ["10.4.0.0/24"])},
                         keyingtries=1, encap=True, child_options={"start_action": "trap"},
                         retransmit={"timeout": 0.5, "tries": 3, "base": 1.4}),
        secret_table("ike-t", "0sc2VjcmV0", ["a", "b"]))
    conf = tomllib.loads(text)
    assert conf["daemon"] == {"crypto_backend": "openssl", "dataplane": "userspace",
                              "listen": ["192.0.2.1"], "cookie_threshold": 5}
    t = conf["connections"]["t"]
    assert t["proposals"] == ["aes128gcm16-prfsha256-x25519"]
    assert t["keyingtries"] == 1 and t["encap"] is True
    assert t["retransmit"] == {"timeout": 0.5, "tries": 3, "base": 1.4}
    assert t["local"] == {"auth": "psk", "id": "a"} and t["remote"] == {"auth": "psk", "id": "b"}
    assert t["children"]["two"] == {"local_ts": ["10.3.0.0/24"], "remote_ts": ["10.4.0.0/24"],
                                    "start_action": "trap"}
    assert conf["secrets"]["ike-t"] == {"id": ["a", "b"], "secret": "0sc2VjcmV0"}


def test_any_peer_and_default_proposals_leave_the_keys_out() -> None:
    conf = tomllib.loads(config_toml(
        connection_table("r", local_addr="::1", remote_addr="::2", local_id="sun",
                         remote_id=None, proposals=None, esp_proposals=["aes128gcm16"],
                         children={"net": (["::/0"], ["::/0"])}),
        secret_table("ike", 'quote " and \\ backslash')))
    r = conf["connections"]["r"]
    assert "proposals" not in r and "remote" not in r
    assert conf["secrets"]["ike"] == {"secret": 'quote " and \\ backslash'}


def test_dotted_and_quoted_names_round_trip_through_the_daemons_loader(tmp_path) -> None:
    # The hand-written writer this replaced put names into [connections.NAME] unquoted: a
    # dot made two nested tables and a quote made invalid TOML. The daemon must read back
    # exactly the names and values the lab meant.
    name, child = "site.a \"east\"", "net.v4"
    psk = 'p"s\\k with \'quotes\''
    text = config_toml(
        daemon_table(listen=["192.0.2.1"], control_socket="/run/o \"x\".sock"),
        connection_table(name, local_addr="192.0.2.1", remote_addr="192.0.2.2",
                         local_id="gw.a.example", remote_id="gw.b.example", proposals=None,
                         esp_proposals=["aes128gcm16"],
                         children={child: (["10.1.0.0/24"], ["10.2.0.0/24"])},
                         retransmit={"timeout": "1s", "tries": 2}),
        secret_table("ike-site.a", psk, ["gw.a.example", "gw.b.example"]))
    path = tmp_path / "iked.toml"
    path.write_text(text)
    config = load(path)
    assert list(config.connections) == [name]
    conn = config.connections[name]
    assert list(conn.children) == [child]
    assert conn.children[child].local_ts == ["10.1.0.0/24"]
    assert conn.local.id == "gw.a.example" and conn.remote.id == "gw.b.example"
    assert conn.retransmit.tries == 2 and conn.retransmit.timeout == 1.0
    assert config.daemon.control_socket == "/run/o \"x\".sock"
    assert [s.secret for s in config.secrets] == [psk.encode()]


def test_a_connection_given_twice_is_refused() -> None:
    def conn():
        return connection_table("t", local_addr="192.0.2.1", remote_addr="192.0.2.2",
                                local_id="a", remote_id="b", proposals=None,
                                esp_proposals=None, children={})
    with pytest.raises(ValueError, match="connections.t is given twice"):
        config_toml(conn(), conn())
