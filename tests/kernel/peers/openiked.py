"""OpenIKED 7.2 (iked + ikectl) as a peer; on Linux it installs SAs through PF_KEY (af_key).

What Linux's PF_KEY can carry limits what OpenIKED can do here (measured, docs/interop.md):
PF_KEY has no way to name an AEAD (net/key/af_key.c knows no SADB_X_EALG_AES_GCM_* for
pfkey_add), and it installs HMAC-SHA2 with the pre-RFC 4868 96-bit truncation, so of ESP only
AES-CBC with HMAC-SHA1-96 both installs and interoperates. The IKE SA is unaffected.

iked probes every kernel algorithm at start-up (each missing one is a ``modprobe``), which
stalls it 10-40 s in the guest: the crypto modules are loaded first, and the harness waits for
``config_getsocket`` in its ``-dvv`` log before the peer counts as started. The config file must
be mode 600 and owned by root; each instance has its own control socket (``-s``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.kernel.peers import OCFPY_ID, OCFPY_NET, PSK, Peer, PeerError, SaView

IKED = Path("/usr/sbin/iked")
IKECTL = Path("/usr/sbin/ikectl")
# Loaded before iked starts, so that its algorithm probe finds them instead of running
# modprobe for each (missing ones are simply absent from this kernel).
MODULES = ("af_key esp4 xfrm4_tunnel tunnel4 authenc authencesn cbc aes_generic aesni_intel "
           "sha1_generic sha256_generic sha512_generic hmac gcm ghash_generic ccm ctr "
           "chacha20poly1305 chacha_generic poly1305_generic md5 des_generic xcbc cmac seqiv "
           "echainiv deflate").split()


def unavailable_reason() -> str | None:
    for tool in (IKED, IKECTL):
        if not tool.exists():
            return f"{tool} missing (apt-get install openiked; scripts/setup.sh --lanes peers)"
    return None


class OpenIked(Peer):
    name = "openiked"

    @property
    def sock(self) -> Path:
        return self.dir / "iked.sock"

    @property
    def log_path(self) -> Path:
        return self.dir / "iked.log"

    REKEY_IMPOSSIBLE = (
        "OpenIKED 7.2 cannot be told to rekey now: ikectl's commands are active, passive, "
        "couple, decouple, load, log, monitor, reload, reset, show and ca (no rekey); iked "
        "rekeys only when its configured lifetime runs out")

    def version(self) -> str:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "openiked"],
                             capture_output=True, text=True, timeout=30).stdout
        return out.split("-")[0] or "?"

    def conf(self, *, initiate: bool, ike: str | None, esp: str | None, psk: str,
             remote_net: str = OCFPY_NET) -> str:
        s = self.site
        words = ["ikev2", '"t"', "active" if initiate else "passive", "esp",
                 "from", s.peer_net, "to", remote_net,
                 "local", s.peer_addr, "peer", s.ocfpy_addr]
        words += [ike] if ike else []  # e.g. "ikesa enc aes-256-gcm prf hmac-sha2-256 group ecp256"
        words += [esp] if esp else []  # e.g. "childsa enc aes-128 auth hmac-sha1"
        words += ["srcid", s.peer_id, "dstid", OCFPY_ID, "psk", f'"{psk}"']
        return " ".join(words) + "\n"

    def start(self, *, initiate: bool = False, ike: str | None = None,
              esp: str | None = None, psk: str = PSK, extra: str | None = None,
              remote_net: str = OCFPY_NET) -> None:
        for module in MODULES:
            subprocess.run(["modprobe", "-q", module], capture_output=True, timeout=60)
        conf = self.dir / "iked.conf"
        conf.write_text(self.conf(initiate=initiate, ike=ike, esp=esp, psk=psk,
                                  remote_net=remote_net))
        conf.chmod(0o600)
        self.sock.unlink(missing_ok=True)
        self.log_path.write_text("")
        self.spawn([str(IKED), "-d", "-vv", "-f", str(conf), "-s", str(self.sock)],
                   self.log_path)
        # about a minute in a quiet guest; over three when the host runs several guests
        self.wait(lambda: "config_getsocket" in self.log(), 420, "config_getsocket in its log")

    def initiate(self) -> None:
        """OpenIKED initiates the connections marked ``active`` when it loads its config:
        restart it that way (ikectl has no per-connection initiate)."""
        conf = (self.dir / "iked.conf").read_text()
        self.stop()
        conf = conf.replace(" passive ", " active ")
        (self.dir / "iked.conf").write_text(conf)
        self.sock.unlink(missing_ok=True)
        self.log_path.write_text("")
        self.spawn([str(IKED), "-d", "-vv", "-f", str(self.dir / "iked.conf"), "-s",
                    str(self.sock)], self.log_path)

    def terminate(self) -> None:
        """``ikectl reset id FQDN/<ocfpy's ID>``: iked deletes every IKE SA with that peer
        identity, sending the INFORMATIONAL Delete (ikev2_ctl_reset_id: ikev2_ikesa_delete as
        the exchange's initiator), which takes the CHILD SAs with it (RFC 7296 1.4.1). The ID
        is iked's own printing, ``<type>/<value>`` (ikev2_print_id)."""
        if self.proc is None or self.proc.poll() is not None:
            return  # not after crash(): a dead iked's socket refuses, and nothing is left
        self.run(str(IKECTL), "-s", str(self.sock), "reset", "id", f"FQDN/{OCFPY_ID}")

    def listing(self) -> str:
        if not shutil.which(str(IKECTL)):
            return ""
        return self.run(str(IKECTL), "-s", str(self.sock), "show", "sa", check=False).stdout

    def sa_view(self) -> SaView:
        """``ikectl show sa``: the established IKE SA's SPIs (``ispi``/``rspi``) and its CHILD
        SA's SPIs per direction (``sa_childsas: ... ESP 0xSPI in|out``). It names no
        algorithm: the kernel state (PF_KEY installs what iked negotiated) stands for those,
        and for ESN."""
        text = self.listing()
        blocks = re.split(r"(?m)^(?=iked_sas: )", text)
        ike = [b for b in blocks if b.startswith("iked_sas: ") and " ESTABLISHED " in
               b.splitlines()[0]]
        if len(ike) != 1:
            raise PeerError(f"ikectl show sa: not one established IKE SA:\n{text[-2000:]}")
        head = re.search(r"rspi 0x([0-9a-f]+) ispi 0x([0-9a-f]+)", ike[0])
        kids = {d: [int(x, 16) for x in re.findall(rf"sa_childsas: \S+ ESP 0x([0-9a-f]+) {d} ",
                                                   ike[0])] for d in ("in", "out")}
        if head is None or len(kids["in"]) != 1 or len(kids["out"]) != 1:
            raise PeerError(f"ikectl show sa: not one CHILD SA each way:\n{text[-2000:]}")
        return SaView("ikectl show sa", ike_spis=(int(head.group(2), 16), int(head.group(1), 16)),
                      child_spis=(kids["in"][0], kids["out"][0]))

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        # iked's privilege-separated children leave with the parent; PF_KEY states stay.
        self.flush_kernel()
