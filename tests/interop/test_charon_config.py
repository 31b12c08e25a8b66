"""Pure helpers of the charon harness (no root, no charon)."""

from ocfpy.lab.charon import Charon, decode, render_conf
from ocfpy.lab.netlab import Namespace


def test_render_conf_nests_and_spells_booleans() -> None:
    text = render_conf({"charon": {"load": "a b", "x": True, "plugins": {"vici": {"socket": "s"}}}})
    assert text.splitlines() == ["charon {", "  load = a b", "  x = yes", "  plugins {",
                                 "    vici {", "      socket = s", "    }", "  }", "}"]


def test_config_is_private_and_keeps_libipsec_before_netlink(tmp_path) -> None:
    c = Charon(Namespace("oss-x", ifname="oss-x0", outer="10.0.0.1", inner="10.1.0.1",
                         inner_net="10.1.0.0/24"), tmp_path,
               settings={"plugins": {"kernel-libipsec": {"mtu": 1280}}})
    conf = c.config()
    load = next(line for line in conf.splitlines() if line.strip().startswith("load ="))
    assert load.index("kernel-libipsec") < load.index("kernel-netlink")
    assert " kdf " in load
    assert f"unix://{tmp_path}/charon.vici" in conf
    assert "mtu = 1280" in conf and "allow_peer_ts = yes" in conf  # merged, not replaced
    assert "include" not in conf  # nothing from /etc/strongswan.d


def test_decode_turns_vici_bytes_into_str() -> None:
    assert decode({"a": [b"x", {"b": b"y"}], "n": 3}) == {"a": ["x", {"b": "y"}], "n": 3}
