"""ocfpy in ``oss-moon``, charon in ``oss-sun``: set both up for one row of the matrix, start
either side's initiation, and read both sides' view of the SAs in one vocabulary."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocfpy.lab.charon import Charon, child, psk_connection
from ocfpy.lab.netlab import HostPair

from .ocfpy_peer import Iked, iked_config, userspace_dataplane_reason, wait_for

PSK = "interop-psk-0123456789"
OCFPY_ID, CHARON_ID = "moon.oss.test", "sun.oss.test"

# charon's list-sas names -> strongSwan proposal keywords (ocfpy's catalogue vocabulary).
_ENCR = {("AES_GCM_16", "128"): "aes128gcm16", ("AES_GCM_16", "256"): "aes256gcm16",
         ("AES_GCM_16", "192"): "aes192gcm16", ("AES_CBC", "128"): "aes128",
         ("AES_CBC", "192"): "aes192", ("AES_CBC", "256"): "aes256",
         ("CHACHA20_POLY1305", "256"): "chacha20poly1305",
         ("CHACHA20_POLY1305", None): "chacha20poly1305",
         ("AES_CTR", "128"): "aes128ctr", ("AES_CTR", "256"): "aes256ctr"}
_INTEG = {"HMAC_SHA2_256_128": "sha256", "HMAC_SHA2_384_192": "sha384",
          "HMAC_SHA2_512_256": "sha512", "HMAC_SHA1_96": "sha1", "AES_XCBC_96": "aesxcbc"}
_PRF = {"PRF_HMAC_SHA2_256": "prfsha256", "PRF_HMAC_SHA2_384": "prfsha384",
        "PRF_HMAC_SHA2_512": "prfsha512", "PRF_HMAC_SHA1": "prfsha1", "PRF_AES128_XCBC": "prfaesxcbc"}
_KE = {"CURVE_25519": "x25519", "CURVE_448": "x448", "MODP_2048": "modp2048",
       "MODP_3072": "modp3072", "MODP_4096": "modp4096", "ECP_256": "ecp256", "ECP_384": "ecp384",
       "ECP_521": "ecp521"}


def charon_algorithms(sa: dict[str, Any]) -> dict[str, str]:
    """An IKE or CHILD SA entry of charon's list-sas as {encr, integ, prf, ke} keywords."""
    out = {}
    if "encr-alg" in sa:
        out["encr"] = _ENCR.get((sa["encr-alg"], sa.get("encr-keysize")),
                                f"?{sa['encr-alg']}/{sa.get('encr-keysize')}")
    if "integ-alg" in sa:
        out["integ"] = _INTEG.get(sa["integ-alg"], f"?{sa['integ-alg']}")
    if "prf-alg" in sa:
        out["prf"] = _PRF.get(sa["prf-alg"], f"?{sa['prf-alg']}")
    if "dh-group" in sa:
        out["ke"] = _KE.get(sa["dh-group"], f"?{sa['dh-group']}")
    return out


def spi(value: Any) -> int:
    """An SPI from either side: int, or hex text with or without 0x (charon: 'c0ffee01')."""
    if isinstance(value, int):
        return value
    return int(str(value).removeprefix("0x").replace(":", ""), 16)


def ocfpy_algorithms(entry: dict[str, Any]) -> dict[str, str]:
    """{encr, integ, prf, ke} of an IKE or CHILD SA in `ocfpy sa list --json` (the core puts a
    child's algorithms at its top level, an IKE SA's under "algorithms")."""
    merged = {**{k: entry.get(k) for k in ("encr", "integ", "prf", "ke")},
              **(entry.get("algorithms") or {})}
    return {k: str(v) for k, v in merged.items() if v and k in ("encr", "integ", "prf", "ke")}


def ocfpy_ike_spis(entry: dict[str, Any]) -> tuple[int, int]:
    """(initiator SPI, responder SPI) of an IKE SA in `ocfpy sa list --json`."""
    if "spi_i" in entry:
        return spi(entry["spi_i"]), spi(entry["spi_r"])
    spis = entry["spis"]
    return spi(spis["initiator"]), spi(spis["responder"])


def ocfpy_child_spis(child: dict[str, Any]) -> tuple[int, int]:
    """(inbound SPI, outbound SPI) of a CHILD SA in `ocfpy sa list --json`."""
    if "spi_in" in child:
        return spi(child["spi_in"]), spi(child["spi_out"])
    spis = child["spis"]
    return spi(spis["in"]), spi(spis["out"])


@dataclass
class Peers:
    pair: HostPair
    iked: Iked
    charon: Charon
    workdir: Path

    @property
    def moon(self):  # noqa: ANN201 (Namespace)
        return self.pair.left

    @property
    def sun(self):  # noqa: ANN201
        return self.pair.right

    def dataplane(self) -> str:
        return "none" if userspace_dataplane_reason() else "userspace"

    def configure(self, ike: str, esp: str, *, ocfpy_ike: str | None = None,
                  ocfpy_esp: str | None = None, ocfpy_psk: str = PSK, charon_psk: str = PSK,
                  charon_local_ts: list[str] | None = None,
                  charon_remote_ts: list[str] | None = None,
                  extra_children: dict[str, tuple[list[str], list[str]]] | None = None,
                  ocfpy_dpd: str = "0s", charon_dpd: str = "0s",
                  ocfpy_daemon: dict | None = None) -> None:
        """charon's connection "t"/"net" loaded, ocfpy started with its connection "t"/"net".

        ``extra_children``: more children on both sides, name -> (moon's subnets, sun's)."""
        m, s = self.moon, self.sun
        self.charon.load_psk(charon_psk, [OCFPY_ID, CHARON_ID])
        children = {"net": child(charon_local_ts or [s.inner_net],
                                 charon_remote_ts or [m.inner_net], [esp])}
        for name, (moon_ts, sun_ts) in (extra_children or {}).items():
            children[name] = child(sun_ts, moon_ts, [esp])
        self.charon.load_conn("t", psk_connection(
            local_addr=s.outer, remote_addr=m.outer, local_id=CHARON_ID, remote_id=OCFPY_ID,
            proposals=[ike], children=children, dpd_delay=charon_dpd))
        self.iked.start(iked_config(
            me=m, peer=s, local_id=OCFPY_ID, remote_id=CHARON_ID, psk=ocfpy_psk,
            proposals=[ocfpy_ike or ike], esp_proposals=[ocfpy_esp or esp],
            dataplane=self.dataplane(), control=self.iked.control,
            extra_children=extra_children, dpd_delay=ocfpy_dpd, daemon=ocfpy_daemon))

    def initiate(self, who: str, wait: float = 10.0, child: str = "net") -> Any:
        """Start "t"/``child`` from ``who`` ("ocfpy" or "charon"); the initiator's answer (or
        raise). On an established IKE_SA this is a CREATE_CHILD_SA exchange."""
        if who == "ocfpy":
            return self.iked.call("initiate", name="t", child=child, wait=wait, timeout=wait + 5)
        return self.charon.initiate("t", child, timeout_ms=int(wait * 1000))

    # -- both sides' view ------------------------------------------------------------------
    def ocfpy_sas(self) -> list[dict[str, Any]]:
        return self.iked.sas()

    def ocfpy_established(self) -> list[dict[str, Any]]:
        return [sa for sa in self.ocfpy_sas() if str(sa.get("state", "")).lower() == "established"]

    def charon_sas(self) -> list[dict[str, Any]]:
        return [sa for _, sa in self.charon.list_sa_entries()]

    def wait_established(self, children: int = 1, timeout: float = 10.0) -> tuple[dict, dict]:
        """Both sides have one ESTABLISHED IKE_SA with ``children`` installed CHILD_SAs."""

        def ready() -> tuple[dict, dict] | None:
            ours = self.ocfpy_established()
            theirs = [sa for sa in self.charon_sas() if sa.get("state") == "ESTABLISHED"]
            if len(ours) != 1 or len(theirs) != 1:
                return None
            installed = [c for c in theirs[0].get("child-sas", {}).values()
                         if c.get("state") == "INSTALLED"]
            if len(ours[0].get("children", [])) != children or len(installed) != children:
                return None
            return ours[0], theirs[0]

        return wait_for(ready, timeout, f"one IKE_SA with {children} CHILD_SA(s) on both sides",
                        on_fail=self.logs)

    def logs(self) -> str:
        """Both daemons' recent log lines, for assertion messages (netlink chatter left out)."""
        ours = "\n".join(line for line in self.iked.log().splitlines() if "pyroute2" not in line)
        return (f"\n--- ocfpy log ---\n{ours[-4000:]}\n"
                f"--- charon log ---\n{self.charon.log_text()[-4000:]}")

    # -- traffic ---------------------------------------------------------------------------
    def ping(self, count: int = 3) -> subprocess.CompletedProcess[str]:
        return self.moon.run("ping", "-c", str(count), "-i", "0.2", "-W", "2", "-I",
                             self.moon.inner, self.sun.inner, timeout=count * 3 + 5)

    def tcp_transfer(self, size: int = 2 << 20, port: int = 5301,
                     reverse: bool = False) -> tuple[str, str]:
        """Send ``size`` random bytes moon -> sun (``reverse``: sun -> moon) over TCP through
        the tunnel; both SHA-256s."""
        src, dst = (self.sun, self.moon) if reverse else (self.moon, self.sun)
        server = subprocess.Popen(dst.argv(sys.executable, "-c", _SINK, dst.inner, str(port)),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out = src.run(sys.executable, "-c", _SOURCE, dst.inner, str(port),
                          str(size), src.inner, timeout=60)
            sent = out.stdout.strip()
            got, err = server.communicate(timeout=30)
            if out.returncode != 0:
                raise AssertionError(f"TCP source failed: {out.stderr}")
            return sent, got.strip() or f"(sink said: {err.strip()})"
        finally:
            if server.poll() is None:
                server.kill()
                server.wait(5)


# A tiny TCP sink and source (run inside the namespaces with this interpreter), time-boxed.
_SINK = """
import hashlib, socket, sys
s = socket.create_server((sys.argv[1], int(sys.argv[2])))
s.settimeout(30)
c, _ = s.accept(); c.settimeout(30)
h = hashlib.sha256()
while True:
    b = c.recv(65536)
    if not b: break
    h.update(b)
print(h.hexdigest())
"""
_SOURCE = """
import hashlib, os, socket, sys, time
data = os.urandom(int(sys.argv[3]))
for _ in range(100):
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10,
                                     source_address=(sys.argv[4], 0))
        break
    except ConnectionRefusedError:
        time.sleep(0.05)
c.settimeout(30)
c.sendall(data); c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
print(hashlib.sha256(data).hexdigest())
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
