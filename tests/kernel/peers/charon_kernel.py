"""strongSwan 5.9.8 charon with its kernel backend (kernel-netlink) as a peer.

The same charon and vici driver as the host interop lane (ocfpy.lab.charon), with one change
that matters: the plugin list has no kernel-libipsec, so the guest kernel carries ESP (raw ESP,
ESN available, no faked NAT). ``install_routes = no``: the namespaces already route the
protected nets; the XFRM policies charon installs decide what is protected.
"""

from __future__ import annotations

import subprocess
from typing import Any

from ocfpy.lab.charon import LOAD, Charon, child, psk_connection
from ocfpy.lab.charon import unavailable_reason as _charon_reason
from ocfpy.lab.netlab import Namespace
from tests.kernel.peers import OCFPY_ID, OCFPY_NET, PSK, Peer, PeerError, SaView

KERNEL_LOAD = " ".join(p for p in LOAD.split() if p != "kernel-libipsec")


def unavailable_reason() -> str | None:
    return _charon_reason()


class CharonKernel(Peer):
    name = "strongswan"
    charon: Charon | None = None

    def version(self) -> str:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "strongswan-charon"],
                             capture_output=True, text=True, timeout=30).stdout
        return out.split("-")[0] or "?"

    def start(self, *, initiate: bool = False, ike: str | None = None,
              esp: str | None = None, psk: str = PSK, extra: str | None = None,
              remote_net: str = OCFPY_NET) -> None:
        s = self.site
        host = Namespace(name=self.ns.name, ifname="", outer=s.peer_addr, inner=s.peer_host,
                         inner_net=s.peer_net)
        self.charon = Charon(host, self.dir, load=KERNEL_LOAD,
                             settings={"install_routes": False})
        self.charon.start(timeout=120)
        self.proc = self.charon._proc  # stopped by PID through Charon.stop()
        esp_opts: dict[str, Any] = {}
        if esp:
            esp_opts["esp_proposals"] = [esp]
        conn = psk_connection(local_addr=s.peer_addr, remote_addr=s.ocfpy_addr,
                              local_id=s.peer_id, remote_id=OCFPY_ID,
                              children={"net": child([s.peer_net], [remote_net], **esp_opts)})
        if ike:
            conn["proposals"] = [ike]
        else:
            # psk_connection names a proposal; the zero-config rows want charon's defaults,
            # which is what a connection without a proposals key gets.
            del conn["proposals"]
        if not esp:
            del conn["children"]["net"]["esp_proposals"]
        self.charon.load_psk(psk, owners=[s.peer_id, OCFPY_ID])
        self.charon.load_conn("t", conn)

    def initiate(self) -> None:
        assert self.charon is not None
        try:
            self.charon.initiate("t", "net", timeout_ms=60000)
        except Exception as exc:  # vici's CommandException carries charon's errmsg
            raise PeerError(f"charon could not initiate: {exc}\n{self.log()[-2000:]}") from exc

    def rekey_child(self) -> None:
        assert self.charon is not None
        self.charon.vici.rekey({"child": "net"})  # vici "rekey" (swanctl --rekey)

    def rekey_ike(self) -> None:
        assert self.charon is not None
        self.charon.vici.rekey({"ike": "t"})

    def terminate(self) -> None:
        # not after crash(): a dead charon's vici socket refuses, and nothing is left to end
        if self.charon is None or self.proc is None or self.proc.poll() is not None:
            return
        if not self.charon.list_sas():
            return  # nothing to end (vici's terminate would answer "no matching SAs")
        # vici "terminate" (swanctl --terminate --ike t): charon sends the Delete and waits
        # for its answer; the answer's log messages are streamed, so list() drains them
        list(self.charon.vici.terminate({"ike": "t", "timeout": 30000}))

    def listing(self) -> str:
        if self.charon is None:
            return ""
        import json

        return json.dumps(self.charon.list_sas(), indent=1, default=str)

    def sa_view(self) -> SaView:
        """vici list-sas (what ``swanctl --list-sas`` prints): IKE SPIs and algorithms, the
        CHILD_SA's SPIs, algorithms and ESN, in the host lane's vocabulary mapping."""
        from tests.interop.peers import charon_algorithms, spi

        assert self.charon is not None
        ike = self.charon.list_sas().get("t")
        kids = [c for c in (ike or {}).get("child-sas", {}).values()
                if c.get("state") == "INSTALLED"]
        if ike is None or len(kids) != 1:
            raise PeerError(f"swanctl --list-sas: not one IKE_SA t with one installed "
                            f"CHILD_SA: {self.listing()[-1500:]}")
        (kid,) = kids
        child = charon_algorithms(kid)
        return SaView("swanctl --list-sas",
                      (spi(ike["initiator-spi"]), spi(ike["responder-spi"])),
                      charon_algorithms(ike), (spi(kid["spi-in"]), spi(kid["spi-out"])),
                      {k: v for k, v in child.items() if k in ("encr", "integ")},
                      kid.get("esn") == "1")

    def log(self) -> str:
        return self.charon.log_text() if self.charon is not None else ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.charon is not None:
            self.charon.stop(timeout)
            self.charon = None
        self.proc = None
        self.flush_kernel()
