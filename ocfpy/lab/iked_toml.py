"""TOML configs for an `ocfpy iked` (docs/configuration.md), for labs, benchmarks, demos.

The tests, `ocfpy bench ike` and `ocfpy demo` generate their daemons' configs; these builders
are the one way they do it: the ``[daemon]`` table, one PSK connection with its children, and
a secret, each a plain dict fragment that :func:`config_toml` merges and writes with tomli-w.
Writing goes through a real TOML writer rather than string pasting so that any name (a
connection called ``a.b``, a PSK with quotes and backslashes) is quoted the way the loader
(ocfpy.iked.configfile) reads it back. Keys a caller passes as None are left out, so the
daemon's defaults apply. A nested table (``retransmit={"timeout": 0.5, "tries": 3}``) is a dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import tomli_w

Fragment = dict[str, Any]


def _present(options: Mapping[str, Any]) -> dict[str, Any]:
    """The keys whose value is not None, values made TOML-ready (tuples and other iterables
    become lists, mappings are cleaned the same way)."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            value = _present(value)
        elif isinstance(value, Iterable) and not isinstance(value, str | bytes):
            value = list(value)
        out[key] = value
    return out


def daemon_table(*, listen: Iterable[str], backend: str = "openssl", dataplane: str = "none",
                 **options: Any) -> Fragment:
    """The ``[daemon]`` table; ``options`` are further keys (None: left out)."""
    return {"daemon": _present({"crypto_backend": backend, "dataplane": dataplane,
                                "listen": listen, **options})}


def connection_table(name: str, *, local_addr: str, remote_addr: str, local_id: str,
                     remote_id: str | None, proposals: Iterable[str] | None,
                     children: Mapping[str, tuple[Iterable[str], Iterable[str]]],
                     esp_proposals: Iterable[str] | None,
                     child_options: Mapping[str, Any] | None = None,
                     auth: tuple[str, str] = ("psk", "psk"), certs: Iterable[str] | None = None,
                     cacerts: Iterable[str] | None = None, **options: Any) -> Fragment:
    """One connection; ``children`` maps a name to (local_ts, remote_ts). ``remote_id``
    None accepts any peer identity; proposals None leave ocfpy's defaults. ``auth`` is
    (local, remote): "psk" or "pubkey", with our ``certs`` (x509/) and the ``cacerts``
    (x509ca/) we trust. ``options`` are further connection keys, ``child_options`` further
    keys of every child (None: left out)."""
    conn = _present({"local_addrs": [local_addr], "remote_addrs": [remote_addr],
                     "proposals": proposals, **options})
    conn["local"] = _present({"auth": auth[0], "id": local_id, "certs": certs})
    if remote_id is not None or auth[1] != "psk":
        conn["remote"] = _present({"auth": auth[1], "id": remote_id, "cacerts": cacerts})
    conn["children"] = {
        child: _present({"local_ts": local_ts, "remote_ts": remote_ts,
                         "esp_proposals": esp_proposals, **(child_options or {})})
        for child, (local_ts, remote_ts) in children.items()}
    return {"connections": {name: conn}}


def secret_table(name: str, psk: str, ids: Iterable[str] | None = None) -> Fragment:
    """``[secrets.<name>]``: the PSK, for the identities given (None: any identity)."""
    return {"secrets": {name: _present({"id": ids, "secret": psk})}}


def private_key_table(name: str, file: str, passphrase: str | None = None) -> Fragment:
    """``[secrets.private-<name>]``: a key file in private/ and its passphrase."""
    return {"secrets": {f"private-{name}": _present({"file": file, "secret": passphrase})}}


def token_table(name: str, handle: str, pin: str | None = None) -> Fragment:
    """``[secrets.token-<name>]``: a PKCS#11 key (RFC 7512 URI) and the token's PIN."""
    return {"secrets": {f"token-{name}": _present({"handle": handle, "pin": pin})}}


def config_toml(*fragments: Fragment) -> str:
    """The fragments merged into one document, as TOML text. Two fragments naming the same
    connection or secret are a mistake in the caller, not something to merge silently."""
    doc: dict[str, Any] = {}
    for fragment in fragments:
        for section, body in fragment.items():
            if section == "daemon":
                doc.setdefault("daemon", {}).update(body)
                continue
            target = doc.setdefault(section, {})
            for name, table in body.items():
                if name in target:
                    raise ValueError(f"{section}.{name} is given twice")
                target[name] = table
    return tomli_w.dumps(doc)
