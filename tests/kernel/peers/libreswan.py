"""libreswan 4.10 (pluto + whack) as a peer, with kernel XFRM ESP.

Debian's package conflicts with strongSwan's, so scripts/setup.sh unpacks it (``apt-get
download`` + ``dpkg -x``) into /opt/ocfpy-libreswan (OCFPY_LIBRESWAN overrides). Per instance:
its own NSS database, rundir (control socket ``pluto.ctl``), ipsec.conf/ipsec.secrets and log.

pluto runs ``/usr/libexec/ipsec/addconn`` by that fixed path at start-up; the unpacked tree is
elsewhere, so pluto starts in a private mount namespace (``ip netns exec`` gives it one) where a
tmpfs on /usr/libexec carries a link to the unpacked ``ipsec`` directory: nothing outside pluto
sees it. ``leftupdown=%disabled``: the namespaces already route the protected nets, and the
updown script costs about 3 s per connection (lanes.md).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.kernel.peers import OCFPY_ID, OCFPY_NET, PSK, Peer, PeerError, SaView

ROOT = Path(os.environ.get("OCFPY_LIBRESWAN", "/opt/ocfpy-libreswan"))
LIBEXEC = ROOT / "usr/libexec/ipsec"

# libreswan's algorithm names (``whack --status``) -> ocfpy's (strongSwan's) keywords.
ENCR = {"AES_GCM_16_128": "aes128gcm16", "AES_GCM_16_256": "aes256gcm16",
        "AES_CBC_128": "aes128", "AES_CBC_256": "aes256", "AES_CTR_128": "aes128ctr",
        "AES_CTR_256": "aes256ctr", "CHACHA20_POLY1305": "chacha20poly1305",
        "CHACHA20_POLY1305_256": "chacha20poly1305"}
INTEG = {"NONE": None, "HMAC_SHA1_96": "sha1", "HMAC_SHA2_256_128": "sha256",
         "HMAC_SHA2_384_192": "sha384", "HMAC_SHA2_512_256": "sha512"}
PRF = {"HMAC_SHA1": "prfsha1", "HMAC_SHA2_256": "prfsha256", "HMAC_SHA2_384": "prfsha384",
       "HMAC_SHA2_512": "prfsha512"}
KE = {"MODP2048": "modp2048", "MODP3072": "modp3072", "MODP4096": "modp4096",
      "MODP8192": "modp8192", "DH19": "ecp256", "DH20": "ecp384", "DH21": "ecp521",
      "DH31": "x25519", "DH32": "x448"}


def _word(table: dict, name: str) -> str | None:
    """ocfpy's keyword for one of libreswan's names; an unknown name stays visible."""
    return table[name] if name in table else f"?{name}"


def unavailable_reason() -> str | None:
    if not (LIBEXEC / "pluto").exists():
        return (f"libreswan is not unpacked at {ROOT} (scripts/setup.sh --lanes peers: it "
                "unpacks Debian's libreswan there, which conflicts with strongSwan's packages)")
    for tool in ("certutil",):
        if not any(Path(d, tool).exists() for d in ("/usr/bin", "/usr/sbin")):
            return f"{tool} missing (apt-get install libnss3-tools)"
    return None


class Libreswan(Peer):
    name = "libreswan"

    @property
    def ctl(self) -> Path:
        return self.dir / "run" / "pluto.ctl"

    @property
    def log_path(self) -> Path:
        return self.dir / "pluto.log"

    def version(self) -> str:
        out = subprocess.run([str(LIBEXEC / "pluto"), "--version"], capture_output=True,
                             text=True, timeout=30).stdout
        m = re.search(r"Libreswan (\S+)", out)
        return m.group(1) if m else out.strip()[:40]

    def conf(self, *, ike: str | None, esp: str | None, extra: str | None = None,
             remote_net: str = OCFPY_NET) -> str:
        s = self.site
        lines = [
            "config setup", "\tuniqueids=no", "",
            "conn t",
            "\tauthby=secret",
            f"\tleft={s.peer_addr}", f"\tleftid=@{s.peer_id}", f"\tleftsubnet={s.peer_net}",
            "\tleftupdown=%disabled",
            f"\tright={s.ocfpy_addr}", f"\trightid=@{OCFPY_ID}", f"\trightsubnet={remote_net}",
            "\tauto=add",
        ]
        lines += [f"\tike={ike}"] if ike else []
        lines += [f"\tesp={esp}"] if esp else []
        lines += [f"\t{ln.strip()}" for ln in (extra or "").splitlines() if ln.strip()]
        return "\n".join(lines) + "\n"

    def start(self, *, initiate: bool = False, ike: str | None = None,
              esp: str | None = None, psk: str = PSK, extra: str | None = None,
              remote_net: str = OCFPY_NET) -> None:
        (self.dir / "run").mkdir(exist_ok=True)
        nss = self.dir / "nss"
        if not nss.exists():
            nss.mkdir()
            subprocess.run(["certutil", "-N", "-d", f"sql:{nss}", "--empty-password"],
                           check=True, capture_output=True, timeout=60)
        conf = self.dir / "ipsec.conf"
        conf.write_text(self.conf(ike=ike, esp=esp, extra=extra, remote_net=remote_net))
        secrets = self.dir / "ipsec.secrets"
        secrets.write_text(f'@{self.site.peer_id} @{OCFPY_ID} : PSK "{psk}"\n')
        secrets.chmod(0o600)
        self.ctl.unlink(missing_ok=True)
        pluto = [str(LIBEXEC / "pluto"), "--nofork", "--stderrlog", "--config", str(conf),
                 "--secretsfile", str(secrets), "--nssdir", str(nss),
                 "--rundir", str(self.dir / "run"), "--ipsecdir", str(self.dir),
                 "--dumpdir", str(self.dir / "run")]
        script = (f"mount -t tmpfs ocfpy-libexec /usr/libexec && "
                  f"ln -s {LIBEXEC} /usr/libexec/ipsec && exec {' '.join(pluto)}")
        self.spawn(["sh", "-c", script], self.log_path)
        self.wait(self.ctl.exists, 120, "control socket")
        self.whack("--listen")  # the interfaces, and the secrets file
        self.addconn()

    def addconn(self) -> None:
        self.run(str(LIBEXEC / "addconn"), "--config", str(self.dir / "ipsec.conf"),
                 "--ctlsocket", str(self.ctl), "t")

    def whack(self, *args: str, timeout: float = 120, check: bool = True
              ) -> subprocess.CompletedProcess:
        return self.run(str(LIBEXEC / "whack"), "--ctlsocket", str(self.ctl), *args,
                        timeout=timeout, check=check)

    def initiate(self) -> None:
        out = self.whack("--name", "t", "--initiate", check=False)
        text = out.stdout + out.stderr
        if "established Child SA" not in text and "IPsec SA established" not in text:
            raise PeerError(f"libreswan could not initiate: {text.strip()[-1500:]}")

    def rekey_child(self) -> None:
        # libreswan 4.x: whack --rekey-ipsec / --rekey-ike start a rekey now (ipsec(8))
        self.whack("--name", "t", "--rekey-ipsec")

    def rekey_ike(self) -> None:
        self.whack("--name", "t", "--rekey-ike")

    def terminate(self) -> None:
        self.whack("--name", "t", "--terminate", check=False)

    def listing(self) -> str:
        return self.whack("--trafficstatus", check=False).stdout + \
            "\n".join(ln for ln in self.whack("--status", check=False).stdout.splitlines()
                      if '"t"' in ln and ("ESP" in ln or "IKE" in ln or "established" in ln))

    def sa_view(self) -> SaView:
        """``whack --status``: the newest IKE SA's algorithms (``IKEv2 algorithm newest:
        ENCR-PRF-DH``; no integrity algorithm, no SPIs), the newest IPsec SA's algorithms
        (``ESP algorithm newest: ENCR-INTEG``) and its SPIs (``esp.SPI@DESTINATION``, one per
        direction). ESN and the IKE SPIs are not in it: the kernel state stands for those."""
        text = self.whack("--status", check=False).stdout
        ike = re.search(r'"t":\s+IKEv2 algorithm newest: (\S+)-(\S+)-(\S+)', text)
        esp = re.search(r'"t":\s+ESP algorithm newest: ([^-\s]+)-([^;\s]+)', text)
        newest = re.search(r'"t":\s+newest IKE SA: #\d+; newest IPsec SA: #(\d+)', text)
        if not (ike and esp and newest):
            raise PeerError(f"whack --status shows no established SAs for t:\n{text[-2000:]}")
        line = re.search(rf'#{newest.group(1)}: "t" (esp\.[^\n]*)', text)
        spis = {addr: int(spi, 16) for spi, addr in
                re.findall(r"esp\.([0-9a-f]+)@(\S+)", line.group(1) if line else "")}
        s = self.site
        if set(spis) != {s.peer_addr, s.ocfpy_addr}:
            raise PeerError(f"whack --status: no esp.SPI@ for both ends of #{newest.group(1)}:"
                            f"\n{text[-2000:]}")
        integ = _word(INTEG, esp.group(2))
        return SaView(
            "whack --status",
            ike={"encr": _word(ENCR, ike.group(1)), "prf": _word(PRF, ike.group(2)),
                 "ke": _word(KE, ike.group(3))},
            child_spis=(spis[s.peer_addr], spis[s.ocfpy_addr]),
            child={"encr": _word(ENCR, esp.group(1)), **({"integ": integ} if integ else {})})

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None and self.ctl.exists():
            try:
                self.whack("--shutdown", timeout=30, check=False)
                self.proc.wait(timeout)
            except (subprocess.TimeoutExpired, PeerError):
                pass
        super().stop(timeout)
