"""Two IKE engines wired back to back in memory, with a hand-held clock (aioquic's
client_and_server(), strongSwan's exchange_test_helper): no sockets, no sleeping."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ocfpy.crypto.dispatcher import Dispatcher
from ocfpy.ike.config import AuthConfig, ChildConfig, Connection, DaemonOptions, IkeConfig, Secret
from ocfpy.ike.engine import IkeEngine

I_ADDR = "10.0.0.1"
R_ADDR = "10.0.0.2"
PSK = b"correct horse battery staple"


@pytest.fixture(scope="session")
def dispatcher() -> Dispatcher:
    d = Dispatcher()
    if not d.registry.active():
        pytest.skip("no active crypto driver (the OpenSSL backend did not load)")
    return d


def make_config(local: str, remote: str, local_id: str, remote_id: str, *,
                ike: list[str] | None = None, esp: list[str] | None = None,
                psk: bytes = PSK, local_ts: list[str] | None = None,
                remote_ts: list[str] | None = None, daemon: DaemonOptions | None = None,
                **conn) -> IkeConfig:
    child = ChildConfig("net", local_ts or ["10.1.0.0/16"], remote_ts or ["10.2.0.0/16"],
                        esp or ["aes128gcm16"])
    c = Connection("home", [local], [remote], AuthConfig(id=local_id), AuthConfig(id=remote_id),
                   ike or ["aes128gcm16-prfsha256-x25519"], {"net": child}, **conn)
    return IkeConfig({"home": c}, [Secret([local_id, remote_id], psk)], daemon or DaemonOptions())


class Pair:
    """An initiator and a responder engine and the wire between them."""

    def __init__(self, i_cfg: IkeConfig, r_cfg: IkeConfig, dispatcher: Dispatcher):
        self.now = 1000.0
        self.i = IkeEngine(i_cfg, dispatcher)
        self.r = IkeEngine(r_cfg, dispatcher)
        self.wire: list[tuple[str, bytes, tuple, tuple]] = []  # everything that was sent
        self.events: dict[str, list] = {"i": [], "r": []}

    def name(self, engine: IkeEngine) -> str:
        return "i" if engine is self.i else "r"

    def deliver(self, src: IkeEngine, dst: IkeEngine,
                drop: Callable[[bytes], bool] | None = None) -> int:
        """Move every pending datagram from src to dst; returns how many arrived."""
        n = 0
        for data, local, remote in src.datagrams_to_send(self.now):
            self.wire.append((self.name(src), data, local, remote))
            if drop is not None and drop(data):
                continue
            dst.receive_datagram(data, remote, local, self.now)
            n += 1
        return n

    def run(self, drop: Callable[[bytes], bool] | None = None, rounds: int = 20) -> None:
        """Exchange datagrams until both sides are quiet."""
        for _ in range(rounds):
            moved = self.deliver(self.i, self.r, drop) + self.deliver(self.r, self.i, drop)
            if not moved and not self.i.out.datagrams and not self.r.out.datagrams:
                break
        self.collect()

    def collect(self) -> None:
        for key, e in (("i", self.i), ("r", self.r)):
            while (ev := e.next_event()) is not None:
                self.events[key].append(ev)

    def advance(self, seconds: float, drop: Callable[[bytes], bool] | None = None) -> None:
        """Move the clock, firing due timers on both sides (in deadline order), and deliver."""
        end = self.now + seconds
        while True:
            due = [t for t in (self.i.get_timer(), self.r.get_timer()) if t is not None and t <= end]
            if not due:
                break
            self.now = max(self.now, min(due))
            for e in (self.i, self.r):
                t = e.get_timer()
                if t is not None and t <= self.now:
                    e.handle_timer(self.now)
            self.run(drop)
        self.now = end
        self.collect()

    def of_type(self, side: str, cls) -> list:
        return [e for e in self.events[side] if isinstance(e, cls)]

    def establish(self) -> int:
        ike_id = self.i.initiate("home", self.now)
        self.run()
        return ike_id


@pytest.fixture
def initiator_and_responder(dispatcher):
    """Factory: initiator_and_responder(ike=[...], esp=[...], r_ike=..., ...) -> Pair."""

    def make(ike=None, esp=None, *, r_ike=None, r_esp=None, r_psk=PSK, i_kw=None, r_kw=None,
             i_ts=None, r_ts=None) -> Pair:
        i_ts = i_ts or (["10.1.0.0/16"], ["10.2.0.0/16"])
        r_ts = r_ts or (["10.2.0.0/16"], ["10.1.0.0/16"])
        i_cfg = make_config(I_ADDR, R_ADDR, "moon.example.org", "sun.example.org", ike=ike,
                            esp=esp, local_ts=i_ts[0], remote_ts=i_ts[1], **(i_kw or {}))
        r_cfg = make_config(R_ADDR, I_ADDR, "sun.example.org", "moon.example.org",
                            ike=r_ike or ike, esp=r_esp or esp, psk=r_psk, local_ts=r_ts[0],
                            remote_ts=r_ts[1], **(r_kw or {}))
        return Pair(i_cfg, r_cfg, dispatcher)

    return make


# -- certificates (issue 14) ------------------------------------------------------------------
class Pki:
    """A root CA and gateway certificates made with `cryptography` (ocfpy.lab.pki), and the
    CertStore each engine gets (keys in memory: KeyBytes, opened through the dispatcher)."""

    def __init__(self, root_kind: str = "ecdsa-p256"):
        import datetime as dt

        from ocfpy.lab import pki

        self.pki = pki
        self.now = dt.datetime.now(dt.UTC)
        self.root = pki.issue("ocfpy test root", kind=root_kind, ca=True, now=self.now)

    def gateway(self, identity: str, kind: str = "ecdsa-p256", issuer=None, ids=None, **kw):
        return self.pki.issue(identity, issuer or self.root, kind=kind, ids=ids or [identity],
                              now=self.now, **kw)

    def store(self, own=None, *, cas=None, crls=()):
        from ocfpy.crypto.signatures import KeyBytes
        from ocfpy.ike.certs import LocalChain
        from ocfpy.ike.pubkey import CertStore, LocalCert

        cas = [self.root] if cas is None else cas
        local = []
        if own is not None:
            chain = LocalChain(own.cert, tuple(c.cert for c in cas))
            local.append(LocalCert("x509/gw.pem", chain, KeyBytes(own.key_pem()),
                                   "private/gw.key.pem"))
        return CertStore(local, [(f"x509ca/ca-{i}.pem", c.cert) for i, c in enumerate(cas)],
                         list(crls))

    def install(self, engine: IkeEngine, store) -> None:
        engine.ctx.credentials.use_certificates(store, lambda: self.now)


@pytest.fixture
def pubkey_pair(dispatcher):
    """Factory: pubkey_pair(i_auth=("pubkey", "pubkey"), r_auth=(...), i_store=..., r_store=...)
    -> Pair whose connections authenticate as given ((local, remote) per side) with the
    stores installed; identities moon.example.org (initiator) and sun.example.org."""

    def make(pki: Pki, *, i_store, r_store, i_auth=("pubkey", "pubkey"),
             r_auth=("pubkey", "pubkey"), i_daemon=None, r_daemon=None, i_remote_kw=None,
             r_remote_kw=None) -> Pair:
        def cfg(local, remote, lid, rid, auth, daemon, remote_kw):
            ts = ["10.1.0.0/16"], ["10.2.0.0/16"]
            ts = ts if local == I_ADDR else ts[::-1]
            c = make_config(local, remote, lid, rid, daemon=daemon, local_ts=ts[0],
                            remote_ts=ts[1])
            conn = c.connections["home"]
            conn.local = AuthConfig(auth=auth[0], id=lid)
            conn.remote = AuthConfig(auth=auth[1], id=rid, **(remote_kw or {}))
            return c

        i_cfg = cfg(I_ADDR, R_ADDR, "moon.example.org", "sun.example.org", i_auth, i_daemon,
                    i_remote_kw)
        r_cfg = cfg(R_ADDR, I_ADDR, "sun.example.org", "moon.example.org", r_auth, r_daemon,
                    r_remote_kw)
        pair = Pair(i_cfg, r_cfg, dispatcher)
        pki.install(pair.i, i_store)
        pki.install(pair.r, r_store)
        return pair

    return make
