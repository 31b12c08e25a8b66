"""The daemon's TOML configuration file -> `ocfpy.ike.config` dataclasses.

The format mirrors swanctl.conf (connections, children, secrets) in TOML; docs/configuration.md
describes every key. Every value is checked here, once, so that the daemon never starts on a
file it misunderstood: an unknown key names the nearest known one, an algorithm keyword is
looked up in `ocfpy.crypto.catalogue`, addresses and traffic selectors are parsed. Every error names
the file, the line, the dotted key and the reason::

    home.conf:12: connections.home.proposals: unknown algorithm 'aes129' ...

tomllib keeps no positions, so `KeyLines` finds a key's line by scanning the text: tables,
dotted keys and inline tables are understood; a key inside an inline table reports the line of
the table. That is good enough for an error message, and the tests hold it to that.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import logging
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from ocfpy.crypto.calibration import Calibration, CalibrationError
from ocfpy.crypto.calibration import default_path as default_calibration_path
from ocfpy.crypto.errors import OcfError
from ocfpy.ike.config import ConfigValueError, DaemonOptions
from ocfpy.ike.proposals import ProposalSyntaxError, check_proposal_strings
from ocfpy.iked import logsetup, metrics

log = logging.getLogger(__name__)

Key = tuple[str, ...]


class ConfigError(OcfError, ValueError):
    """A configuration file the daemon refuses, with where and why."""

    def __init__(self, path: str | Path | None, line: int | None, key: str | None, reason: str):
        self.path = str(path) if path is not None else "<config>"
        self.line = line
        self.key = key
        self.reason = reason
        where = self.path + (f":{line}" if line else "")
        super().__init__(f"{where}: {key}: {reason}" if key else f"{where}: {reason}")


class _Invalid(Exception):
    """Raised by a value converter; the loader adds file, line and key."""

    def __init__(self, reason: str, subkey: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.subkey = subkey  # set when the fault is in a nested key of the value


# -- where keys are -------------------------------------------------------------------------
_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _split_key(text: str) -> tuple[list[str], str]:
    """Parse a (dotted, possibly quoted) TOML key at the start of text; return (parts, rest)."""
    parts: list[str] = []
    s = text.lstrip()
    while s:
        if s[0] in "\"'":
            quote = s[0]
            end = s.find(quote, 1)
            if end < 0:
                return parts, ""
            parts.append(s[1:end])
            s = s[end + 1:].lstrip()
        else:
            m = _BARE.match(s)
            if not m:
                return parts, s
            parts.append(m.group(0))
            s = s[m.end():].lstrip()
        if s.startswith("."):
            s = s[1:].lstrip()
            continue
        return parts, s
    return parts, s


def _value_balance(text: str) -> tuple[int, str | None]:
    """How many brackets a value leaves open, and whether it leaves a ''' / \"\"\" string open."""
    depth = 0
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if text.startswith('"""', i) or text.startswith("'''", i):
            q = text[i:i + 3]
            end = text.find(q, i + 3)
            if end < 0:
                return depth, q
            i = end + 3
            continue
        if c in "\"'":
            end = i + 1
            while end < n and text[end] != c:
                end += 2 if (c == '"' and text[end] == "\\") else 1
            i = end + 1
            continue
        if c == "#":
            break
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        i += 1
    return depth, None


class KeyLines:
    """Line numbers of tables and keys in a TOML text (1-based)."""

    def __init__(self, text: str):
        self.lines: dict[Key, int] = {}
        table: Key = ()
        depth = 0
        open_string: str | None = None
        for number, raw in enumerate(text.splitlines(), start=1):
            if open_string:
                if open_string in raw:
                    rest = raw.split(open_string, 1)[1]
                    d, open_string = _value_balance(rest)
                    depth = max(depth + d, 0)
                continue
            if depth > 0:
                d, open_string = _value_balance(raw)
                depth += d
                continue
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                inner = line[2:] if line.startswith("[[") else line[1:]
                parts, _ = _split_key(inner)
                table = tuple(parts)
                for i in range(1, len(table) + 1):  # [a.b] also opens a
                    self.lines.setdefault(table[:i], number)
                continue
            parts, rest = _split_key(line)
            if not parts or not rest.startswith("="):
                continue
            key = table + tuple(parts)
            self.lines.setdefault(key, number)
            # every table a dotted key creates starts here too, if nothing named it earlier
            for i in range(len(table) + 1, len(key)):
                self.lines.setdefault(key[:i], number)
            d, open_string = _value_balance(rest[1:])
            depth = max(d, 0)

    def find(self, key: Key) -> int | None:
        """The line of key, or of the closest enclosing table/key that has one."""
        for i in range(len(key), 0, -1):
            if key[:i] in self.lines:
                return self.lines[key[:i]]
        return None


# -- value converters -----------------------------------------------------------------------
Converter = Callable[[Any], Any]


def _typename(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_typename(value)}")
    return value


def nonempty_string(value: Any) -> str:
    if not string(value).strip():
        raise _Invalid("must not be empty")
    return value


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("yes", "no", "true", "false"):
        return value.lower() in ("yes", "true")  # swanctl spelling
    raise _Invalid(f"expected true or false, got {_typename(value)}")


def integer(minimum: int | None = None, maximum: int | None = None) -> Converter:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected an integer, got {_typename(value)}")
        if minimum is not None and value < minimum:
            raise _Invalid(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise _Invalid(f"must be at most {maximum}, got {value}")
        return value
    return convert


port = integer(1, 65535)


def number(minimum: float = 0.0) -> Converter:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"expected a number, got {_typename(value)}")
        if value < minimum:
            raise _Invalid(f"must be at least {minimum}, got {value}")
        return float(value)
    return convert


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(value: Any) -> float:
    """Seconds from 30, 2.5, "30s", "10m", "4h" or "1d" (strongSwan's time suffixes)."""
    if isinstance(value, bool):
        raise _Invalid("expected a duration like \"30s\", \"10m\", \"4h\", \"1d\", got a boolean")
    if isinstance(value, (int, float)):
        if value < 0:
            raise _Invalid(f"a duration cannot be negative, got {value}")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        raise _Invalid(f"not a duration: {value!r} (use a number of seconds or a number "
                       "followed by s, m, h or d, e.g. \"30s\", \"4h\")")
    raise _Invalid(f"expected a duration like \"30s\", got {_typename(value)}")


_AMOUNT = re.compile(r"^\s*(\d+)\s*([kKmMgGtT]?)\s*$")


def amount(value: Any) -> int:
    """A count of bytes or packets: 0 (unlimited), 1000000, "500M", "4G" (swanctl suffixes)."""
    if isinstance(value, bool):
        raise _Invalid("expected a number like 1000000 or \"500M\", got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise _Invalid(f"cannot be negative, got {value}")
        return value
    if isinstance(value, str):
        m = _AMOUNT.match(value)
        if m:
            return int(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " ")
        raise _Invalid(f"not an amount: {value!r} (use an integer, optionally with K, M, G or T)")
    raise _Invalid(f"expected an integer or a string like \"500M\", got {_typename(value)}")


def choice(*options: str) -> Converter:
    def convert(value: Any) -> str:
        text = string(value).strip().lower()
        if text not in options:
            raise _Invalid(f"{value!r} is not one of: {', '.join(options)}")
        return text
    return convert


def list_of(item: Converter, *, allow_empty: bool = True, single_ok: bool = True) -> Converter:
    """An array of items; a single item is taken as an array of one (swanctl's comma lists)."""
    def convert(value: Any) -> list:
        if isinstance(value, str) and single_ok:
            value = [v.strip() for v in value.split(",")] if "," in value else [value]
        if not isinstance(value, list):
            raise _Invalid(f"expected an array, got {_typename(value)}")
        if not value and not allow_empty:
            raise _Invalid("must not be empty")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except _Invalid as exc:
                raise _Invalid(f"item {i + 1} ({v!r}): {exc.reason}") from None
        return out
    return convert


def ip_address(value: Any) -> str:
    text = string(value).strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _Invalid(f"{text!r} is not an IPv4 or IPv6 address") from None


def peer_address(value: Any) -> str:
    """local_addrs / remote_addrs: an address, a subnet (responder match) or %any."""
    text = string(value).strip()
    if text.lower() in ("%any", "%any4", "%any6"):
        return text.lower()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        pass
    raise _Invalid(f"{text!r} is not an IP address, a subnet (10.0.0.0/24) or %any "
                   "(host names are not resolved)")


_PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132,
              "gre": 47, "esp": 50, "ah": 51}
_TS = re.compile(r"^\s*([^\[\]\s]*)\s*(?:\[([^\]]*)\])?\s*$")


def traffic_selector(value: Any) -> str:
    """10.1.0.0/16, 10.1.0.1 or dynamic, each optionally with [proto/port]."""
    text = string(value).strip()
    m = _TS.match(text)
    if not m or not (m.group(1) or m.group(2) is not None):
        raise _Invalid(f"{text!r} is not a traffic selector (e.g. 10.1.0.0/16, dynamic, "
                       "10.1.0.0/16[tcp/443])")
    addr, extra = m.group(1), m.group(2)
    if addr and addr.lower() != "dynamic":
        where = f" in {text!r}" if addr != text else ""
        if "-" in addr:
            raise _Invalid(f"address ranges ({addr!r}) are not supported yet; write the "
                           "covering subnets as separate selectors")
        try:
            ipaddress.ip_network(addr, strict=False)
        except ValueError:
            raise _Invalid(f"{addr!r}{where} is not a subnet (10.1.0.0/16), an address "
                           "or 'dynamic'") from None
    if extra is not None:
        proto, _, ports = extra.partition("/")
        proto = proto.strip().lower()
        if proto and proto not in ("%any", "any") and proto not in _PROTOCOLS:
            if not proto.isdigit() or not 0 <= int(proto) <= 255:
                raise _Invalid(f"unknown protocol {proto!r} in {text!r} (a number 0-255 or "
                               f"one of {', '.join(sorted(_PROTOCOLS))})")
        ports = ports.strip()
        if ports and ports.lower() not in ("%any", "any"):
            bounds = ports.split("-", 1)
            if not all(b.isdigit() and 0 <= int(b) <= 65535 for b in bounds) or (
                    len(bounds) == 2 and int(bounds[0]) > int(bounds[1])):
                raise _Invalid(f"bad port or port range {ports!r} in {text!r}")
    return text


def _proposal(kind: str) -> Converter:
    """One strongSwan proposal string ("aes128gcm16-prfsha256-x25519"). The core's parser is
    the one authority on what a complete proposal is; "default" stands for the defaults."""

    def convert(value: Any) -> str:
        text = nonempty_string(value).strip().lower()
        if text == "default":
            return text
        try:
            check_proposal_strings([text], esp=(kind == "esp"))
        except ProposalSyntaxError as exc:
            raise _Invalid(str(exc)) from None
        return text

    return convert


def secret_value(value: Any) -> bytes:
    """swanctl encodings: "0s" + base64, "0x" + hex, anything else is the text itself (UTF-8)."""
    text = string(value)
    if text.startswith("0s"):
        try:
            data = base64.b64decode(text[2:], validate=True)
        except (binascii.Error, ValueError):
            raise _Invalid("the 0s prefix promises base64, but the rest is not valid "
                           "base64") from None
    elif text.startswith("0x"):
        try:
            data = bytes.fromhex(text[2:])
        except ValueError:
            raise _Invalid("the 0x prefix promises hexadecimal, but the rest is not an even "
                           "number of hex digits") from None
    else:
        data = text.encode()
    if not data:
        raise _Invalid("an empty pre-shared key is not allowed")
    return data


# -- schema -------------------------------------------------------------------------------
class Table:
    """Allowed keys of one table: name -> converter, or name -> Table / TableOf for sub-tables."""

    def __init__(self, keys: Mapping[str, Any], *, required: tuple[str, ...] = (),
                 extra: Callable[[str], Converter | None] | None = None):
        self.keys = dict(keys)
        self.required = required
        self.extra = extra  # for swanctl's numbered keys (id-1, id-2 ...)


class TableOf:
    """A table whose keys are user-chosen names (connections, children, secrets)."""

    def __init__(self, item: Table):
        self.item = item


DAEMON = Table({
    "trap_queue": integer(0, 1024),
    "trap_hold": duration,
    "trap_acquire_interval": duration,
    "crypto_backend": nonempty_string,
    "strict_backend": boolean,
    "dataplane": choice("auto", "userspace", "xfrm", "none"),
    "listen": list_of(ip_address),
    "port": port,
    "port_nat_t": port,
    "control_socket": nonempty_string,
    "cookie_threshold": integer(0),
    "half_open_timeout": duration,
    "keepalive_interval": duration,
    "udp_gso": boolean,
    "esp_offload": boolean,
    "esp_workers": integer(1, 16),
    "half_open_limit": integer(0),
    "half_open_limit_per_ip": integer(0),
    "init_rate_threshold": integer(0),
    "cookie_rotation": duration,
    "cookie_grace": duration,
    "max_packet": integer(576, 65535),
    "max_proposals": integer(1),
    "max_transforms": integer(1),
    "max_payloads": integer(1),
    "max_notifies": integer(1),
    "max_child_sas": integer(1),
    "max_peer_certs": integer(1),
    "max_chain_verifications": integer(1),
    "refusal_log_interval": duration,
    "rekey_grace": duration,
    "strict_permissions": boolean,
    "calibration": nonempty_string,  # checked (the file read) in _build, where the path is known
    "pkcs11_module": nonempty_string,  # checked (the file exists) in _build, as calibration
    "signature_authentication": boolean,
    "fragment_size": integer(576, 65535),
    "fragment_max_count": integer(1, 0xFFFF),
    "fragment_max_bytes": integer(1024),
    "fragment_timeout": duration,
    "log": logsetup.log_schema(),  # [daemon.log]: target and per-subsystem levels
    "metrics": metrics.listen_converter,  # "127.0.0.1:9641" -> ("127.0.0.1", 9641)
})

AUTH = Table({
    "auth": choice("psk", "pubkey"),
    "id": nonempty_string,
    "certs": list_of(nonempty_string),  # local: files in x509/ (swanctl local.certs)
    "cacerts": list_of(nonempty_string),  # remote: trust anchors in x509ca/ (remote.cacerts)
    "signatures": list_of(nonempty_string),  # remote: accepted signature schemes
})

RETRANSMIT = Table({"timeout": duration, "tries": integer(0, 100), "base": number(1.0)})

CHILD = Table({
    "local_ts": list_of(traffic_selector),
    "remote_ts": list_of(traffic_selector),
    "esp_proposals": list_of(_proposal("esp"), allow_empty=False),
    "start_action": choice("none", "start", "trap"),
    "dpd_action": choice("none", "trap", "start"),
    "close_action": choice("none", "trap", "start"),
    "mode": choice("tunnel", "transport"),
    "replay_window": integer(0, 1 << 16),
    "rekey_time": duration,
    "life_bytes": amount,
    "life_packets": amount,
})

CONNECTION = Table({
    "version": integer(2, 2),
    "local_addrs": list_of(peer_address),
    "remote_addrs": list_of(peer_address),
    "local_port": port,
    "remote_port": port,
    "proposals": list_of(_proposal("ike"), allow_empty=False),
    "dpd_delay": duration,
    "dpd_timeout": duration,
    "rekey_time": duration,
    "encap": boolean,
    "keyingtries": integer(0),
    "retransmit": RETRANSMIT,
    "fragmentation": choice("yes", "no", "force"),
    "local": AUTH,
    "remote": AUTH,
    "children": TableOf(CHILD),
})

# One schema for swanctl's three secret kinds; _build checks which keys each kind needs:
# ike-NAME (id, secret), private-NAME (file, secret: the passphrase), token-NAME (handle, pin).
SECRET = Table(
    {"id": list_of(nonempty_string), "secret": secret_value, "file": nonempty_string,
     "handle": nonempty_string, "pin": string},
    extra=lambda k: nonempty_string if re.fullmatch(r"id-[A-Za-z0-9_]+", k) else None,
)
_SECRET_KEYS = {"ike": ({"secret"}, {"secret", "id"}), "private": ({"file"}, {"file", "secret"}),
                "token": ({"handle"}, {"handle", "pin"})}

ROOT = Table({"daemon": DAEMON, "connections": TableOf(CONNECTION), "secrets": TableOf(SECRET)})


# -- loading --------------------------------------------------------------------------------
class _Loader:
    def __init__(self, text: str, path: str | Path | None):
        self.text = text
        self.path = path
        self.lines = KeyLines(text)

    def error(self, key: Key, reason: str) -> ConfigError:
        return ConfigError(self.path, self.lines.find(key), ".".join(key) or None, reason)

    def table(self, schema: Table, data: Any, key: Key) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.error(key, f"expected a table, got {_typename(data)}")
        out: dict[str, Any] = {}
        for name, value in data.items():
            sub = schema.keys.get(name)
            if sub is None and schema.extra is not None:
                sub = schema.extra(name)
            if sub is None:
                raise self.error(key + (name,), self._unknown(name, schema, key))
            if isinstance(sub, Table):
                out[name] = self.table(sub, value, key + (name,))
            elif isinstance(sub, TableOf):
                if not isinstance(value, dict):
                    raise self.error(key + (name,), f"expected a table of named entries, "
                                     f"got {_typename(value)}")
                out[name] = {n: self.table(sub.item, v, key + (name, n))
                             for n, v in value.items()}
            else:
                try:
                    out[name] = sub(value)
                except _Invalid as exc:
                    raise self.error(key + (name,), exc.reason) from None
        for name in schema.required:
            if name not in data:
                raise self.error(key, f"missing required key {name!r}")
        return out

    @staticmethod
    def _unknown(name: str, schema: Table, key: Key) -> str:
        known = sorted(schema.keys)
        where = f"in [{'.'.join(key)}]" if key else "at the top level"
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        if close:
            return f"unknown key {name!r} {where}; did you mean {close[0]!r}?"
        return f"unknown key {name!r} {where}; known keys: {', '.join(known)}"


def loads(text: str, path: str | Path | None = None):
    """Parse and check a configuration text; returns an `ocfpy.ike.config.IkeConfig`."""
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:  # RecursionError: deep nesting
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(path, int(m.group(1)) if m else None, None,
                          f"not valid TOML: {reason}") from None
    loader = _Loader(text, path)
    checked = loader.table(ROOT, data, ())
    return _build(loader, checked)


def load(path: str | Path):
    """Read, parse and check a configuration file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, None, None, f"cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, None, None, f"not UTF-8 text: {exc}") from None
    conf = loads(text, path)
    _check_permissions(p, conf)
    return conf


def _check_permissions(path: Path, conf) -> None:
    """A file holding pre-shared keys must not be readable by group or others (issue 13
    finding 9): a warning at load, an error with ``strict_permissions = true``."""
    if not conf.secrets:
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # it was just read; a race with its removal is not ours to report
    if not mode & 0o044:
        return
    who = "group and others" if mode & 0o044 == 0o044 else "group" if mode & 0o040 else "others"
    reason = (f"holds secrets ({len(conf.secrets)} in [secrets]) and is readable by {who} "
              f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it")
    if getattr(conf.daemon, "strict_permissions", False):
        raise ConfigError(path, None, None, reason + " (daemon.strict_permissions = true)")
    log.warning("%s: %s", path, reason)


# -- the calibration a daemon's dispatcher ranks drivers by ------------------------------------
@dataclass
class IkedOptions(DaemonOptions):
    """The ``[daemon]`` table as `ocfpy iked` reads it: the IKE core's options, plus what only
    the daemon process uses (its dispatcher's calibration), which the core need not know."""

    calibration: str | None = None  # absolute path of a `ocfpy bench crypto --save` file
    # a config holding secrets that group/others can read: refused (True) or a warning
    strict_permissions: bool = False
    #: the checked ``[daemon.log]`` table (logsetup.LogOptions.from_table builds the options)
    log: dict = field(default_factory=dict)
    #: ``[daemon] metrics``: where to serve Prometheus text, None = not served
    metrics: tuple[str, int] | None = None
    #: ``[daemon] pkcs11_module``: absolute path of the PKCS#11 module (shared library) the
    #: pkcs11 driver loads; None: $OCFPY_PKCS11_MODULE, else the usual SoftHSM2/p11-kit paths
    pkcs11_module: str | None = None


PKCS11_MODULE_ENV = "OCFPY_PKCS11_MODULE"


def use_pkcs11_module(config) -> str | None:
    """Hand ``[daemon] pkcs11_module`` to the pkcs11 driver before the drivers are loaded.

    The driver is an entry point that the registry builds without arguments, and the layers
    keep the daemon from importing a plugin, so the path travels the way an operator's
    choice already did: $OCFPY_PKCS11_MODULE. The file wins over the environment (it is the
    daemon's configuration; the variable stays the fallback for commands without a config).
    A module is loaded once per process: a changed path takes effect at the next start, not
    on reload. Returns the path now in effect, or None when neither names one."""
    path = getattr(config.daemon, "pkcs11_module", None)
    if path:
        import os

        os.environ[PKCS11_MODULE_ENV] = path
        return path
    import os

    return os.environ.get(PKCS11_MODULE_ENV) or None


def calibration_path(value: str, relative_to: str | Path | None = None) -> Path:
    """``default`` is where `ocfpy bench crypto --save` writes; a relative path is taken
    from ``relative_to`` (the config file's folder; None: the working directory), at load
    time, because a detached daemon changes to /."""
    if value == "default":
        return default_calibration_path()
    path = Path(value).expanduser()
    if not path.is_absolute() and relative_to is not None:
        path = Path(relative_to) / path
    return path.absolute()


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file, or refuse it with a ConfigError that says what is wrong
    (Calibration.load's checks: the file is read and parsed once, so what is used is what
    was checked)."""
    try:
        return Calibration.load(Path(path))
    except CalibrationError as exc:
        raise ConfigError(path, None, None, exc.reason) from None


# -- building the dataclasses -----------------------------------------------------------------
def _make(cls: type, key: Key, loader: _Loader, /, **values: Any):
    """cls(**values) for the values that are set, so the dataclass keeps its own defaults.
    The dataclass's own check (ConfigValueError) is reported under key, with file and line."""
    if is_dataclass(cls):
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:  # the schema names a field the config dataclass lacks: a bug, say so
            raise loader.error(key, f"internal error: {cls.__name__} has no field(s) "
                               f"{', '.join(sorted(unknown))}")
    try:
        return cls(**values)
    except ConfigValueError as exc:
        raise loader.error(key + tuple(exc.key.split(".")), exc.reason) from None
    except (TypeError, ValueError) as exc:
        raise loader.error(key, str(exc)) from None


def _expand_default(proposals: list[str], defaults: list[str]) -> list[str]:
    out: list[str] = []
    for p in proposals:
        out += defaults if p == "default" else [p]
    return out


def _build(loader: _Loader, checked: dict[str, Any]):
    from ocfpy.ike import config as cfg

    daemon_keys = dict(checked.get("daemon", {}))
    if daemon_keys.get("crypto_backend") == "calibrated" and "calibration" not in daemon_keys:
        # the calibrated policy without a file named: the one `ocfpy bench crypto --save`
        # writes by default, checked now like a named one
        daemon_keys["calibration"] = "default"
    if "calibration" in daemon_keys:
        key = ("daemon", "calibration")
        base = Path(loader.path).parent if loader.path is not None else None
        path = calibration_path(daemon_keys["calibration"], base)
        try:
            load_calibration(path)  # refused now, not when the first session opens
        except ConfigError as exc:
            raise loader.error(key, str(exc)) from None
        daemon_keys["calibration"] = str(path)
    if "pkcs11_module" in daemon_keys:
        # strongSwan names modules in strongswan.conf (charon.plugins.pkcs11.modules.NAME.path),
        # daemon-wide, not per secret: so does this; a relative path is the config folder's
        key = ("daemon", "pkcs11_module")
        path = Path(daemon_keys["pkcs11_module"]).expanduser()
        if not path.is_absolute() and loader.path is not None:
            path = Path(loader.path).parent / path
        if not path.is_file():
            raise loader.error(key, f"PKCS#11 module {path} does not exist (Debian's SoftHSM2: "
                               "/usr/lib/softhsm/libsofthsm2.so, apt install softhsm2)")
        daemon_keys["pkcs11_module"] = str(path.absolute())
    daemon = _make(IkedOptions, ("daemon",), loader, **daemon_keys)
    connections = {}
    for name, c in checked.get("connections", {}).items():
        key = ("connections", name)
        c = dict(c)
        children = {}
        for cname, ch in c.pop("children", {}).items():
            ch = dict(ch)
            if "esp_proposals" in ch:
                ch["esp_proposals"] = _expand_default(ch["esp_proposals"],
                                                      cfg.DEFAULT_ESP_PROPOSALS)
            children[cname] = _make(cfg.ChildConfig, key + ("children", cname), loader,
                                    name=cname, **ch)
        for side in ("local", "remote"):
            if side in c:
                c[side] = _make(cfg.AuthConfig, key + (side,), loader, **c[side])
        if "retransmit" in c:  # Retransmit names its own keys "retransmit.*"
            c["retransmit"] = _make(cfg.Retransmit, key, loader, **c["retransmit"])
        if "proposals" in c:
            c["proposals"] = _expand_default(c["proposals"], cfg.DEFAULT_IKE_PROPOSALS)
        # A connection sends from the daemon's port unless told otherwise: with port = 15500
        # and no local_port it used to send from 500, where nothing listens (issue 16). The
        # peer's port stays 500 by default, as swanctl's remote_port.
        c.setdefault("local_port", daemon.port)
        conn = _make(cfg.Connection, key, loader, name=name, children=children, **c)
        _check_connection(loader, key, conn, children)
        connections[name] = conn
    secrets, private_keys, tokens = [], [], []
    for name, s in checked.get("secrets", {}).items():
        key = ("secrets", name)
        kind, _, label = name.partition("-")
        kind = kind.lower()
        if kind not in _SECRET_KEYS:
            raise loader.error(key, f"secret type of {name!r} is not supported: name it "
                               "ike[-NAME] (a pre-shared key), private-NAME (a key file's "
                               "passphrase) or token-NAME (a PKCS#11 key), as in swanctl")
        needed, allowed = _SECRET_KEYS[kind]
        for k in sorted(needed - set(s)):
            raise loader.error(key, f"missing required key {k!r}")
        for k in sorted(set(s) - allowed):
            if not (kind == "ike" and k.startswith("id-")):
                raise loader.error(key + (k,), f"{k!r} does not belong in a {kind} secret "
                                   f"(it takes {', '.join(sorted(allowed))})")
        if kind == "private":
            private_keys.append(_make(cfg.KeySecret, key, loader, name=label or name,
                                      file=s["file"], secret=s.get("secret")))
        elif kind == "token":
            tokens.append(_make(cfg.TokenSecret, key, loader, name=label or name,
                                handle=s["handle"], pin=s.get("pin")))
        else:
            ids = list(s.get("id", []))
            ids += [v for k, v in sorted(s.items()) if k.startswith("id-")]
            secrets.append(_make(cfg.Secret, key, loader, ids=ids, secret=s["secret"]))
    conf = _make(cfg.IkeConfig, (), loader, connections=connections, secrets=secrets,
                 daemon=daemon, private_keys=private_keys, tokens=tokens,
                 path=str(Path(loader.path).resolve()) if loader.path is not None else None)
    for name, conn in connections.items():
        _check_secret(loader, ("connections", name), conn, secrets)
    return conf


def _check_connection(loader: _Loader, key: Key, conn: Any, children: dict) -> None:
    remote = [a for a in conn.remote_addrs if not a.startswith("%")]
    single = [a for a in remote if "/" not in a]
    for cname, child in children.items():
        if child.start_action == "start" and not single:
            raise loader.error(key + ("children", cname, "start_action"),
                               "start_action = \"start\" needs a remote address to start to: "
                               "set connections." + key[1] + ".remote_addrs to an address")


def _check_secret(loader: _Loader, key: Key, conn: Any, secrets: list) -> None:
    """A PSK connection without any matching secret would fail only at IKE_AUTH: say it now."""
    if getattr(conn.local, "auth", "psk") != "psk" and getattr(conn.remote, "auth", "psk") != "psk":
        return
    wanted = {i for i in (getattr(conn.local, "id", None), getattr(conn.remote, "id", None)) if i}
    wanted |= {a for a in [*conn.local_addrs, *conn.remote_addrs] if not a.startswith("%")}
    for s in secrets:
        if not s.ids or wanted & set(s.ids):
            return
    ids = " or ".join(sorted(wanted)) or "its addresses"
    raise loader.error(key, f"uses pre-shared keys but no [secrets.ike-*] entry names {ids} "
                       "(add one, or a secret without ids to match any peer)")


# -- credentials (swanctl's x509/, x509ca/, x509crl/, private/ beside the file) ---------------
def load_cert_store(config, *, now, dispatcher=None):
    """Load and check the certificates, keys and CRLs beside the configuration file into an
    `ocfpy.ike.pubkey.CertStore` (None when no connection authenticates by certificate).
    Raises ConfigError: one "file:line: key: <credential file>: reason" line per problem,
    pointing at the certs/cacerts key or [secrets.*] section that names the file where one
    does, else at the file itself. Warnings (no chain to a CA of ours...) are returned."""
    from ocfpy.ike.pubkey import CertStore, LocalCert
    from ocfpy.iked import credentials as creds

    if not config.uses_pubkey:
        return None, []
    if config.base_dir is None:
        raise ConfigError(None, None, None, "auth = \"pubkey\" needs the configuration to be "
                          "a file: x509/, x509ca/ and private/ are found beside it")
    try:
        loaded = creds.load_credentials(
            config.base_dir, now=now,
            private_secrets={k.name: creds.PrivateSecret(k.file, k.secret)  # type: ignore[arg-type]
                             for k in config.private_keys},
            token_secrets={t.name: creds.TokenSecret(t.handle, t.pin) for t in config.tokens},
            dispatcher=dispatcher)
    except creds.CredentialError as exc:
        raise _credential_error(config, config.path, exc.problems) from None
    store = CertStore([LocalCert(c.path, c.chain, c.key, c.key_where) for c in loaded.local],
                      list(loaded.cas), [c for _p, c in loaded.crls])
    return store, list(loaded.warnings)


def open_cert_store(config, *, now, dispatcher):
    """What the daemon does with its credentials at start, in one place for start and for
    `ocfpy iked --check`: load_cert_store, then open each key's signer once (a key that
    cannot sign, or a token that refuses its PIN, shows now, not at the first IKE_AUTH).
    Returns (store or None, warnings: load warnings then signer problems, which start logs
    and survives); raises ConfigError for what start refuses."""
    store, warnings = load_cert_store(config, now=now, dispatcher=dispatcher)
    if store is not None and dispatcher is not None:
        warnings = [*warnings, *store.open_signers(dispatcher)]
    return store, warnings


def _credential_error(config, path, problems: list[str]) -> ConfigError:
    text = ""
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError:
            pass
    lines = KeyLines(text)
    first = problems[0]
    fname = first.split(":", 1)[0].rsplit("/", 1)[-1]
    key: Key = ()
    for name, conn in config.connections.items():
        for side, attr in (("local", "certs"), ("remote", "cacerts")):
            if fname in getattr(getattr(conn, side), attr):
                key = ("connections", name, side, attr)
    for k in config.private_keys:
        if k.file.rsplit("/", 1)[-1] == fname:
            key = ("secrets", f"private-{k.name}")
    more = f" (and {len(problems) - 1} more: " + "; ".join(problems[1:]) + ")" \
        if len(problems) > 1 else ""
    return ConfigError(path, lines.find(key) if key else None, ".".join(key) or None,
                       first + more)
