"""IKE configuration as plain dataclasses, mirroring swanctl.conf.

The TOML loader (configfile.py) builds these; tests build them directly. Each dataclass checks
its own fields when built and raises `ConfigValueError(key, reason)`, where ``key`` is the dotted
path below the object (e.g. "proposals" or "children.net.local_ts"); the loader prefixes the
connection path and finds the line. Defaults follow strongSwan's where that makes sense.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ocfpy.crypto.errors import OcfError
from ocfpy.crypto.signatures import find
from ocfpy.ike.identity import Identity
from ocfpy.ike.proposals import ProposalSyntaxError, check_proposal_strings

# The defaults: what a connection without `proposals` / `esp_proposals` offers and accepts.
# Chosen so that ocfpy meets libreswan 4.10, OpenIKED 7.2 and strongSwan 5.9 in *their* default
# configurations (docs/interop.md has the measured table). Per transform type the order is
# strongest first, and among equals the fastest: AEADs before CBC+HMAC (one pass, no separate
# MAC), AES-256-GCM before AES-128-GCM (AES-NI makes the difference small), ChaCha20-Poly1305
# for CPUs without AES instructions; SHA-512 before SHA-384 before SHA-256 (on 64-bit CPUs
# SHA-512 is also the faster one); X25519 first (fast, and every peer above has it), then the
# NIST curves, then MODP 3072/4096/2048 for peers that only do MODP. Nothing RFC 8247 (IKEv2) or
# RFC 8221 (ESP) marks MUST NOT or SHOULD NOT is in here (no 3DES, MD5, MODP 1024/1536, ESP
# AES-XCBC), and not HMAC-SHA1 either (MUST-, on its way out): OpenIKED on Linux, whose PF_KEY
# path can install neither AEADs nor a correctly truncated HMAC-SHA2-256, takes AES-CBC with
# HMAC-SHA2-384 from the second ESP proposal (measured, both roles). A weak transform a peer is
# configured to force is negotiated only when listed explicitly, and then logged as weak
# (ocfpy/ike/proposals.py WEAK).
_DEFAULT_KE = "x25519-ecp384-ecp256-ecp521-x448-modp3072-modp4096-modp2048"
DEFAULT_IKE_PROPOSALS = [
    f"aes256gcm16-aes128gcm16-chacha20poly1305-prfsha512-prfsha384-prfsha256-{_DEFAULT_KE}",
    f"aes256-aes128-sha512-sha384-sha256-prfsha512-prfsha384-prfsha256-{_DEFAULT_KE}",
]
DEFAULT_ESP_PROPOSALS = [
    "aes256gcm16-aes128gcm16-chacha20poly1305",
    "aes256-aes128-sha512-sha384-sha256",
]

AUTH_METHODS = ("psk", "pubkey")
START_ACTIONS = ("none", "start", "trap")
MODES = ("tunnel", "transport")


class ConfigValueError(OcfError, ValueError):
    """A bad value: ``key`` is its dotted path inside the object that rejected it."""

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")

    def under(self, prefix: str) -> ConfigValueError:
        return ConfigValueError(f"{prefix}.{self.key}" if prefix else self.key, self.reason)


def _check_list_of_str(key: str, value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigValueError(key, f"expected a list of strings, got {value!r}")


def _check_number(key: str, value: object, minimum: float = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ConfigValueError(key, f"expected a number >= {minimum}, got {value!r}")


def _check_port(key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ConfigValueError(key, f"expected a UDP port 1..65535, got {value!r}")


def _check_addrs(key: str, values: list[str]) -> None:
    _check_list_of_str(key, values)
    for v in values:
        if v in ("%any", "%any4", "%any6"):
            continue
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            # strongSwan also accepts host names here; resolving is the daemon's business.
            if not v or any(c.isspace() for c in v):
                raise ConfigValueError(key, f"{v!r} is not an address, subnet or host name") from None


def _check_ts(key: str, values: list[str]) -> None:
    _check_list_of_str(key, values)
    for v in values:
        net = v.split("[", 1)[0]
        if net in ("dynamic", "0.0.0.0/0", "::/0"):
            continue
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigValueError(key, f"{v!r} is not a subnet (e.g. 10.1.0.0/16) or 'dynamic'") from None


@dataclass
class AuthConfig:
    """One round of authentication for one side (swanctl local/remote sections)."""

    auth: str = "psk"
    # None: the IP address in use, or with auth = "pubkey" our certificate's subject DN
    # (strongSwan's defaults)
    id: str | None = None
    certs: list[str] = field(default_factory=list)  # local: x509/ files (empty: any of ours)
    cacerts: list[str] = field(default_factory=list)  # remote: x509ca/ anchors (empty: all)
    # remote: signature schemes we accept from the peer (ocfpy.crypto.signatures keywords,
    # e.g. "rsa/pss-sha256"); empty: every scheme we implement
    signatures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.auth not in AUTH_METHODS:
            raise ConfigValueError("auth", f"unsupported method {self.auth!r}; ocfpy supports "
                                   + ", ".join(AUTH_METHODS))
        if self.id is not None and (not isinstance(self.id, str) or not self.id):
            raise ConfigValueError("id", f"expected a non-empty identity string, got {self.id!r}")
        if self.id is not None:
            try:
                Identity.parse(self.id)
            except ValueError as exc:
                raise ConfigValueError("id", str(exc)) from None
        for key in ("certs", "cacerts", "signatures"):
            _check_list_of_str(key, getattr(self, key))
        for keyword in self.signatures:
            if find(keyword) is None:
                raise ConfigValueError("signatures", f"unknown signature scheme {keyword!r} "
                                       "(e.g. rsa/pss-sha256, ecdsa-sha256, ed25519)")


@dataclass
class ChildConfig:
    name: str
    local_ts: list[str] = field(default_factory=lambda: ["dynamic"])
    remote_ts: list[str] = field(default_factory=lambda: ["dynamic"])
    esp_proposals: list[str] = field(default_factory=lambda: list(DEFAULT_ESP_PROPOSALS))
    start_action: str = "none"
    mode: str = "tunnel"
    replay_window: int = 128
    life_bytes: int = 0  # 0 = unlimited
    life_packets: int = 0
    rekey_time: float = 3600.0
    #: swanctl's: what to do when DPD declares the peer dead / when the peer closes the SA.
    #: "start" re-establishes it (the daemon, with back-off); "trap" installs the child's
    #: trap policy, so the next packet re-establishes it.
    dpd_action: str = "none"
    close_action: str = "none"

    def __post_init__(self) -> None:
        _check_ts("local_ts", self.local_ts)
        _check_ts("remote_ts", self.remote_ts)
        _check_list_of_str("esp_proposals", self.esp_proposals)
        if not self.esp_proposals:
            raise ConfigValueError("esp_proposals", "at least one proposal is needed")
        try:
            check_proposal_strings(self.esp_proposals, esp=True)
        except ProposalSyntaxError as exc:
            raise ConfigValueError("esp_proposals", str(exc)) from None
        if self.start_action not in START_ACTIONS:
            raise ConfigValueError("start_action", f"{self.start_action!r}: expected one of "
                                   + ", ".join(START_ACTIONS))
        if self.mode not in MODES:
            raise ConfigValueError("mode", f"{self.mode!r}: expected one of " + ", ".join(MODES))
        for key in ("replay_window", "life_bytes", "life_packets"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigValueError(key, f"expected an integer >= 0, got {v!r}")
        _check_number("rekey_time", self.rekey_time)
        for key in ("dpd_action", "close_action"):
            v = getattr(self, key)
            if v not in ("none", "trap", "start"):
                raise ConfigValueError(key, f"{v!r}: expected none, trap or start")


@dataclass
class Retransmit:
    """strongSwan's charon.retransmit_*: timeout * base^n, tries attempts, then give up."""

    timeout: float = 4.0
    tries: int = 5
    base: float = 1.8

    def __post_init__(self) -> None:
        _check_number("retransmit.timeout", self.timeout, 0.001)
        _check_number("retransmit.base", self.base, 1)
        if isinstance(self.tries, bool) or not isinstance(self.tries, int) or self.tries < 0:
            raise ConfigValueError("retransmit.tries", f"expected an integer >= 0, got {self.tries!r}")


@dataclass
class Connection:
    name: str
    local_addrs: list[str] = field(default_factory=list)  # empty: %any
    remote_addrs: list[str] = field(default_factory=list)
    local: AuthConfig = field(default_factory=AuthConfig)
    remote: AuthConfig = field(default_factory=AuthConfig)
    proposals: list[str] = field(default_factory=lambda: list(DEFAULT_IKE_PROPOSALS))
    children: dict[str, ChildConfig] = field(default_factory=dict)
    dpd_delay: float = 0.0  # 0 = no DPD
    dpd_timeout: float = 0.0  # unused for IKEv2 (retransmits decide), kept for swanctl parity
    rekey_time: float = 14400.0
    encap: bool = False  # force UDP encapsulation (fake a NAT), swanctl "encap"
    keyingtries: int = 1  # 0 = forever
    retransmit: Retransmit = field(default_factory=Retransmit)
    local_port: int = 500
    remote_port: int = 500
    version: int = 2
    # RFC 7383: "yes" fragments SK messages above the daemon's fragment_size when the peer
    # supports it, "force" fragments every SK message, "no" never announces support
    fragmentation: str = "yes"

    def __post_init__(self) -> None:
        _check_addrs("local_addrs", self.local_addrs)
        _check_addrs("remote_addrs", self.remote_addrs)
        _check_list_of_str("proposals", self.proposals)
        if not self.proposals:
            raise ConfigValueError("proposals", "at least one proposal is needed")
        try:
            check_proposal_strings(self.proposals, esp=False)
        except ProposalSyntaxError as exc:
            raise ConfigValueError("proposals", str(exc)) from None
        for key in ("dpd_delay", "dpd_timeout", "rekey_time"):
            _check_number(key, getattr(self, key))
        if isinstance(self.keyingtries, bool) or not isinstance(self.keyingtries, int) \
                or self.keyingtries < 0:
            raise ConfigValueError("keyingtries", f"expected an integer >= 0, got {self.keyingtries!r}")
        _check_port("local_port", self.local_port)
        _check_port("remote_port", self.remote_port)
        if self.fragmentation not in ("yes", "no", "force"):
            raise ConfigValueError("fragmentation", f"{self.fragmentation!r}: expected yes, no "
                                   "or force")
        if self.version != 2:
            raise ConfigValueError("version", f"only IKEv2 is implemented, got {self.version!r}")
        for cname, child in self.children.items():
            if child.name != cname:
                raise ConfigValueError(f"children.{cname}", f"child named {child.name!r} filed "
                                       f"under {cname!r}")


@dataclass
class Secret:
    """A pre-shared key and the identities it is for (swanctl secrets.ike-*)."""

    ids: list[str]
    secret: bytes

    def __post_init__(self) -> None:
        _check_list_of_str("id", self.ids)
        if not isinstance(self.secret, bytes | bytearray) or not self.secret:
            raise ConfigValueError("secret", "expected a non-empty secret")

    def __repr__(self) -> str:  # never print the secret
        return f"Secret(ids={self.ids!r}, secret=<{len(self.secret)} bytes>)"


@dataclass
class DaemonOptions:
    crypto_backend: str = "auto"  # auto | openssl | af_alg | <driver name>
    strict_backend: bool = True
    dataplane: str = "auto"  # auto | userspace | xfrm | none
    listen: list[str] = field(default_factory=lambda: ["0.0.0.0", "::"])
    port: int = 500
    port_nat_t: int = 4500
    control_socket: str = "/run/ocfpy/iked.sock"
    cookie_threshold: int = 30  # half-open IKE SAs before COOKIEs are demanded (charon: 30)
    half_open_timeout: float = 30.0  # seconds a responder keeps a half-open SA (charon: 30)
    keepalive_interval: float = 20.0  # NAT-T keepalives (charon.keep_alive)
    udp_gso: bool = False  # userspace dataplane: UDP GSO/GRO on the ESP-in-UDP socket
    # userspace dataplane: per-run offloads (TUN TSO/USO + coalescing, UDP GSO/GRO; esp/offload.py)
    esp_offload: bool = True
    # userspace dataplane: worker processes per direction, one multi-queue TUN queue each
    # (docs/dataplanes.md *Workers*; default 1: docs/performance.md says why)
    esp_workers: int = 1
    # RFC 7427 signature authentication (strongSwan's charon.signature_authentication): send
    # SIGNATURE_HASH_ALGORITHMS and sign with method 14; off, only methods 1 and 9-11
    signature_authentication: bool = True
    # RFC 7383: the IP datagram size above which SK messages are fragmented (strongSwan's
    # charon.fragment_size; 1280, the IPv6 minimum MTU, fits every path), and the bounds of
    # reassembly, so that fragments cannot be used to hold our memory
    fragment_size: int = 1280
    fragment_max_count: int = 64
    fragment_max_bytes: int = 65536
    fragment_timeout: float = 30.0
    # -- limits against floods and oversized input (issue 13; charon's names in brackets) --
    half_open_limit: int = 1000  # half-open IKE SAs in all; more are dropped [init_limit_half_open]
    # half-open IKE SAs per peer address [block_threshold, 5 in charon: 10 here leaves room
    # for an initiator behind the same address as a burst of its own retries or neighbours]
    half_open_limit_per_ip: int = 10
    init_rate_threshold: int = 100  # IKE_SA_INIT requests/s (refused ones too) before COOKIEs
    cookie_rotation: float = 120.0  # seconds between COOKIE secret versions (RFC 7296 2.6)
    cookie_grace: float = 10.0  # seconds the previous secret's COOKIEs are still accepted
    max_packet: int = 10000  # largest IKE datagram accepted, bytes [charon.max_packet]
    max_proposals: int = 32  # per SA payload
    max_transforms: int = 64  # per proposal
    max_payloads: int = 64  # per message (outer chain, and inside SK)
    max_notifies: int = 32  # per message
    # certificates a peer sends in IKE_AUTH are read and chained before its AUTH is verified:
    # CERT payloads used per message, and signature verifications per chain built
    max_peer_certs: int = 16
    max_chain_verifications: int = 16
    # CHILD_SAs one peer may have on one IKE SA (live; as many again may wait for the Delete
    # that ends a rekey): more are refused NO_ADDITIONAL_SAS (tasks/child_create.py)
    max_child_sas: int = 32
    refusal_log_interval: float = 10.0  # one refusal warning per source address per interval
    # seconds a rekeyed CHILD_SA's inbound SA keeps accepting after its Delete (packets in
    # flight and reordered; docs/ike.md *Rekeying*)
    rekey_grace: float = 2.0
    # -- trap policies (start_action = "trap"; docs/operations.md) --
    trap_queue: int = 8  # packets the userspace dataplane holds per trap until the SA is up
    trap_hold: float = 5.0  # seconds a held packet waits before it is dropped
    trap_acquire_interval: float = 1.0  # at most one acquire per trap per interval

    def __post_init__(self) -> None:
        if not isinstance(self.crypto_backend, str) or not self.crypto_backend:
            raise ConfigValueError("crypto_backend", f"expected a backend name, got "
                                   f"{self.crypto_backend!r}")
        if self.dataplane not in ("auto", "userspace", "xfrm", "none"):
            raise ConfigValueError("dataplane", f"{self.dataplane!r}: expected auto, userspace, "
                                   "xfrm or none")
        _check_addrs("listen", self.listen)
        _check_port("port", self.port)
        _check_port("port_nat_t", self.port_nat_t)
        if isinstance(self.cookie_threshold, bool) or not isinstance(self.cookie_threshold, int) \
                or self.cookie_threshold < 0:
            raise ConfigValueError("cookie_threshold", f"expected an integer >= 0, got "
                                   f"{self.cookie_threshold!r}")
        _check_number("half_open_timeout", self.half_open_timeout, 0.001)
        _check_number("keepalive_interval", self.keepalive_interval)
        for key, low in (("fragment_size", 576), ("fragment_max_count", 1),
                         ("fragment_max_bytes", 1024)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigValueError(key, f"expected an integer >= {low}, got {v!r}")
        _check_number("fragment_timeout", self.fragment_timeout, 0.001)
        for key in ("udp_gso", "esp_offload", "signature_authentication"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigValueError(key, f"expected true or false, got "
                                       f"{getattr(self, key)!r}")
        if isinstance(self.esp_workers, bool) or not isinstance(self.esp_workers, int) \
                or not 1 <= self.esp_workers <= 16:
            raise ConfigValueError("esp_workers", f"expected an integer 1..16 (worker processes "
                                   f"per direction), got {self.esp_workers!r}")
        for key, low in (("half_open_limit", 0), ("half_open_limit_per_ip", 0),
                         ("init_rate_threshold", 0), ("max_packet", 576),
                         ("max_proposals", 1), ("max_transforms", 1), ("max_payloads", 1),
                         ("max_notifies", 1), ("max_peer_certs", 1),
                         ("max_chain_verifications", 1), ("max_child_sas", 1)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigValueError(key, f"expected an integer >= {low}, got {v!r}")
        if self.max_packet > 65535:
            raise ConfigValueError("max_packet", f"a UDP datagram holds at most 65535 bytes, "
                                   f"got {self.max_packet}")
        _check_number("cookie_rotation", self.cookie_rotation, 1)
        _check_number("cookie_grace", self.cookie_grace)
        _check_number("refusal_log_interval", self.refusal_log_interval)
        if isinstance(self.trap_queue, bool) or not isinstance(self.trap_queue, int) \
                or not 0 <= self.trap_queue <= 1024:
            raise ConfigValueError("trap_queue", f"expected an integer from 0 to 1024, got "
                                   f"{self.trap_queue!r}")
        _check_number("trap_hold", self.trap_hold, 0.001)
        _check_number("trap_acquire_interval", self.trap_acquire_interval)


@dataclass
class KeySecret:
    """swanctl secrets.private-NAME: a private key file (in private/) and its passphrase."""

    name: str
    file: str
    secret: bytes | None = None

    def __repr__(self) -> str:  # never print the passphrase
        return f"KeySecret(name={self.name!r}, file={self.file!r})"


@dataclass
class TokenSecret:
    """swanctl secrets.token-NAME: a key in a PKCS#11 token (RFC 7512 URI) and its PIN."""

    name: str
    handle: str
    pin: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.handle, str) or not self.handle.startswith("pkcs11:"):
            raise ConfigValueError("handle", f"expected a PKCS#11 URI (pkcs11:token=...;"
                                   f"object=..., RFC 7512), got {self.handle!r}")

    def __repr__(self) -> str:  # never print the PIN
        return f"TokenSecret(name={self.name!r}, handle={self.handle!r})"


@dataclass
class IkeConfig:
    connections: dict[str, Connection] = field(default_factory=dict)
    secrets: list[Secret] = field(default_factory=list)
    daemon: DaemonOptions = field(default_factory=DaemonOptions)
    private_keys: list[KeySecret] = field(default_factory=list)
    tokens: list[TokenSecret] = field(default_factory=list)
    # the configuration file: x509/, x509ca/, x509crl/ and private/ are beside it (swanctl's
    # layout); None for a configuration built in code
    path: str | None = None

    @property
    def base_dir(self) -> str | None:
        return self.path.rsplit("/", 1)[0] or "/" if self.path else None

    @property
    def uses_pubkey(self) -> bool:
        return any("pubkey" in (c.local.auth, c.remote.auth) for c in self.connections.values())

    def __post_init__(self) -> None:
        for name, conn in self.connections.items():
            if conn.name != name:
                raise ConfigValueError(f"connections.{name}", f"connection named {conn.name!r} "
                                       f"filed under {name!r}")
