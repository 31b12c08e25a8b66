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

AUTH_METHODS = ("psk",)
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
    id: str | None = None  # None: the IP address in use (strongSwan's default)

    def __post_init__(self) -> None:
        if self.auth not in AUTH_METHODS:
            raise ConfigValueError("auth", f"unsupported method {self.auth!r}; ocfpy supports "
                                   + ", ".join(AUTH_METHODS))
        if self.id is not None and (not isinstance(self.id, str) or not self.id):
            raise ConfigValueError("id", f"expected a non-empty identity string, got {self.id!r}")


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
        if not isinstance(self.udp_gso, bool):
            raise ConfigValueError("udp_gso", f"expected true or false, got {self.udp_gso!r}")


@dataclass
class IkeConfig:
    connections: dict[str, Connection] = field(default_factory=dict)
    secrets: list[Secret] = field(default_factory=list)
    daemon: DaemonOptions = field(default_factory=DaemonOptions)

    def __post_init__(self) -> None:
        for name, conn in self.connections.items():
            if conn.name != name:
                raise ConfigValueError(f"connections.{name}", f"connection named {conn.name!r} "
                                       f"filed under {name!r}")

    def psk_for(self, local_id: str | None, remote_id: str | None) -> bytes | None:
        """The best PSK for this pair of identities (strongSwan's shared key matching: a secret
        naming both IDs beats one naming one, which beats one naming none)."""
        best: tuple[int, bytes] | None = None
        for s in self.secrets:
            ids = {i.lower() for i in s.ids}
            if ids and not ({(local_id or "").lower(), (remote_id or "").lower()} & ids):
                continue
            score = (local_id or "").lower() in ids
            score += (remote_id or "").lower() in ids
            if best is None or score > best[0]:
                best = (score, bytes(s.secret))
        return best[1] if best else None
