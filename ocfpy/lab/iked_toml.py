"""TOML config text for an `ocfpy iked` (docs/configuration.md), for labs, benchmarks, demos.

The tests, `ocfpy bench ike` and `ocfpy demo` generate their daemons' configs; these three
builders are the one way they do it: the ``[daemon]`` table, one PSK connection with its
children, and a secret. Keys a caller does not pass are left out, so the daemon's defaults
apply. Values are rendered by type (str quoted, bool, numbers, lists); :class:`Raw` is text
put in as it is (an inline table such as ``retransmit``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any


class Raw(str):
    """A TOML value written as given (e.g. ``{ timeout = 0.5, tries = 3 }``)."""


def toml_value(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Iterable):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML rendering for {value!r}")


def _lines(options: Mapping[str, Any]) -> str:
    return "".join(f"{key} = {toml_value(value)}\n" for key, value in options.items()
                   if value is not None)


def daemon_toml(*, listen: Iterable[str], backend: str = "openssl", dataplane: str = "none",
                **options: Any) -> str:
    """The ``[daemon]`` table; ``options`` are further keys (None: left out)."""
    return "[daemon]\n" + _lines({"crypto_backend": backend, "dataplane": dataplane,
                                  "listen": list(listen), **options})


def connection_toml(name: str, *, local_addr: str, remote_addr: str, local_id: str,
                    remote_id: str | None, proposals: Iterable[str] | None,
                    children: Mapping[str, tuple[Iterable[str], Iterable[str]]],
                    esp_proposals: Iterable[str] | None, auth: tuple[str, str] = ("psk", "psk"),
                    certs: Iterable[str] | None = None, cacerts: Iterable[str] | None = None,
                    **options: Any) -> str:
    """One connection; ``children`` maps a name to (local_ts, remote_ts). ``remote_id``
    None accepts any peer identity; proposals None leave ocfpy's defaults. ``auth`` is
    (local, remote): "psk" or "pubkey", with our ``certs`` (x509/) and the ``cacerts``
    (x509ca/) we trust. ``options`` are connection keys written after ``proposals`` (None:
    left out)."""
    out = [f"[connections.{name}]\n", _lines({
        "local_addrs": [local_addr], "remote_addrs": [remote_addr],
        "proposals": list(proposals) if proposals is not None else None, **options})]
    out.append(f"\n[connections.{name}.local]\n" + _lines({
        "auth": auth[0], "id": local_id, "certs": list(certs) if certs is not None else None}))
    if remote_id is not None or auth[1] != "psk":
        out.append(f"\n[connections.{name}.remote]\n" + _lines({
            "auth": auth[1], "id": remote_id,
            "cacerts": list(cacerts) if cacerts is not None else None}))
    esp = list(esp_proposals) if esp_proposals is not None else None
    for child, (local_ts, remote_ts) in children.items():
        out.append(f"\n[connections.{name}.children.{child}]\n" + _lines({
            "local_ts": list(local_ts), "remote_ts": list(remote_ts), "esp_proposals": esp}))
    return "".join(out)


def secret_toml(name: str, psk: str, ids: Iterable[str] | None = None) -> str:
    """``[secrets.<name>]``: the PSK, for the identities given (None: any identity)."""
    return f"[secrets.{name}]\n" + _lines({"id": list(ids) if ids is not None else None,
                                           "secret": psk})


def config_toml(*sections: str) -> str:
    return "\n".join(sections)


def private_key_toml(name: str, file: str, passphrase: str | None = None) -> str:
    """``[secrets.private-<name>]``: a key file in private/ and its passphrase."""
    return f"[secrets.private-{name}]\n" + _lines({"file": file, "secret": passphrase})


def token_toml(name: str, handle: str, pin: str | None = None) -> str:
    """``[secrets.token-<name>]``: a PKCS#11 key (RFC 7512 URI) and the token's PIN."""
    return f"[secrets.token-{name}]\n" + _lines({"handle": handle, "pin": pin})
