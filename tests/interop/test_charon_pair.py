"""Lane check: two charons (kernel-libipsec) in two namespaces, the reference the ocfpy rows
are compared with. If this fails, the machine or the harness is broken, not ocfpy."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocfpy.lab.charon import Charon, child, psk_connection
from ocfpy.lab.netlab import HostPair

from .capture import Capture
from .conftest import MOON_ID, SUN_ID

pytestmark = pytest.mark.interop


def _load_pair(moon: Charon, sun: Charon, pair: HostPair, ike: str, esp: str) -> None:
    m, s = pair.left, pair.right
    moon.load_conn("t", psk_connection(
        local_addr=m.outer, remote_addr=s.outer, local_id=MOON_ID, remote_id=SUN_ID,
        proposals=[ike], children={"net": child([m.inner_net], [s.inner_net], [esp])}))
    sun.load_conn("t", psk_connection(
        local_addr=s.outer, remote_addr=m.outer, local_id=SUN_ID, remote_id=MOON_ID,
        proposals=[ike], children={"net": child([s.inner_net], [m.inner_net], [esp])}))


def test_ping_through_tunnel_is_esp_in_udp(pair: HostPair, moon_charon: Charon,
                                           sun_charon: Charon, workdir: Path) -> None:
    _load_pair(moon_charon, sun_charon, pair, "aes128gcm16-prfsha256-x25519", "aes128gcm16")
    m, s = pair.left, pair.right
    with Capture(s, workdir / "sun.pcap") as cap:
        moon_charon.initiate("t", "net")
        ping = m.run("ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", m.inner, s.inner)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    wire = cap.summary((m.inner, s.inner))
    sa = sun_charon.list_sas("t")["t"]
    (ch,) = sa["child-sas"].values()
    # kernel-libipsec fakes a NAT: IKE_SA_INIT on 500, then everything on 4500.
    assert wire.ike_500 == 2, wire
    assert wire.ike_4500 >= 2, wire
    assert wire.esp_in_udp >= 6, wire  # 3 echo requests + 3 replies
    assert wire.esp_raw == 0 and wire.clear_inner == 0, wire
    assert wire.esp_spis == {int(ch["spi-in"], 16), int(ch["spi-out"], 16)}
    assert ch["encap"] == "yes" and ch["mode"] == "TUNNEL"
    assert int(ch["packets-in"]) >= 3 and int(ch["packets-out"]) >= 3


@pytest.mark.parametrize("ike,esp", [
    ("aes256-sha256-modp2048", "aes256-sha256"),
    ("chacha20poly1305-prfsha256-ecp256", "chacha20poly1305"),
])
def test_both_sides_agree(pair: HostPair, moon_charon: Charon, sun_charon: Charon,
                          ike: str, esp: str) -> None:
    _load_pair(moon_charon, sun_charon, pair, ike, esp)
    moon_charon.initiate("t", "net")
    a, b = moon_charon.list_sas("t")["t"], sun_charon.list_sas("t")["t"]
    for key in ("encr-alg", "encr-keysize", "integ-alg", "prf-alg", "dh-group"):
        assert a.get(key) == b.get(key), key
    assert (a["initiator-spi"], a["responder-spi"]) == (b["initiator-spi"], b["responder-spi"])
    (ca,), (cb,) = a["child-sas"].values(), b["child-sas"].values()
    assert (ca["spi-in"], ca["spi-out"]) == (cb["spi-out"], cb["spi-in"])
    assert ca["local-ts"] == cb["remote-ts"] and ca["remote-ts"] == cb["local-ts"]
    expected_encr = "CHACHA20_POLY1305" if esp.startswith("chacha") else "AES_CBC"
    assert ca["encr-alg"] == cb["encr-alg"] == expected_encr


def test_libipsec_refuses_esn(pair: HostPair, moon_charon: Charon, sun_charon: Charon) -> None:
    """The assumption the ocfpy ESN row rests on: kernel-libipsec keeps the IKE_SA and refuses
    the CHILD_SA (responder: N(NO_PROP) in IKE_AUTH). If a strongSwan update adds ESN, this
    fails and the ocfpy row must change with it."""
    from vici.exception import CommandException

    _load_pair(moon_charon, sun_charon, pair, "aes256gcm16-prfsha384-ecp384", "aes256gcm16-esn")
    with pytest.raises(CommandException, match="CHILD_SA 'net' failed"):
        moon_charon.initiate("t", "net")
    for c in (moon_charon, sun_charon):
        sa = c.list_sas("t")["t"]
        assert sa["state"] == "ESTABLISHED" and not sa.get("child-sas")
    assert "IPsec SA: ESN not supported" in sun_charon.log_text()
    assert "generating IKE_AUTH response 1 [ IDr AUTH N(NO_PROP) ]" in sun_charon.log_text()


def test_swanctl_conf_replays_what_vici_loaded(pair: HostPair, moon_charon: Charon,
                                               sun_charon: Charon, workdir: Path) -> None:
    """The swanctl.conf kept for a failed run loads into charon as the same connection."""
    import subprocess

    _load_pair(moon_charon, sun_charon, pair, "aes128gcm16-prfsha256-x25519", "aes128gcm16")
    before = moon_charon.list_conns()
    conf = workdir / "moon" / "swanctl.conf"
    assert "esp_proposals = aes128gcm16" in conf.read_text()
    moon_charon.vici.unload_conn({"name": "t"})
    assert "t" not in moon_charon.list_conns()
    out = subprocess.run(pair.left.argv("swanctl", "--load-all", "--file", str(conf), "--uri",
                                        f"unix://{moon_charon.vici_path}"),
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stdout + out.stderr
    assert moon_charon.list_conns() == before
    moon_charon.initiate("t", "net")  # and it still works against sun
