"""PKCS#11 URIs (RFC 7512) naming a private key: ``pkcs11:token=VPN;object=gw-key`` or with
``id=%01%02``, ``serial=``, ``manufacturer=``, ``model=``, ``slot-id=``, ``type=private``, and
the query attributes ``module-path`` / ``module-name``.

``pin-value`` and ``pin-source`` are refused: a PIN in a URI ends up in configuration files,
process listings and logs; ocfpy takes it from ``[secrets.token-NAME]`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from ocfpy.crypto.errors import InvalidKey

_PATH_ATTRS = {"token", "object", "id", "serial", "manufacturer", "model", "type",
               "library-manufacturer", "library-description", "library-version", "slot-id",
               "slot-description", "slot-manufacturer"}
_QUERY_ATTRS = {"module-path", "module-name"}
_SECRET_ATTRS = {"pin-value", "pin-source"}


@dataclass(frozen=True)
class Pkcs11Uri:
    token: str | None = None
    object: str | None = None
    id: bytes | None = None
    serial: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    slot_id: int | None = None
    module_path: str | None = None
    module_name: str | None = None

    def describe(self) -> str:
        parts = [f"token={self.token}" if self.token else "",
                 f"object={self.object}" if self.object else "",
                 f"id={self.id.hex()}" if self.id else ""]
        return "pkcs11:" + ";".join(p for p in parts if p)


def parse(uri: str) -> Pkcs11Uri:
    """Parse an RFC 7512 URI; InvalidKey says what is wrong with it."""
    if not uri.startswith("pkcs11:"):
        raise InvalidKey(f"{uri!r} is not a PKCS#11 URI (RFC 7512: it starts with 'pkcs11:')")
    rest = uri[len("pkcs11:"):]
    path, _, query = rest.partition("?")
    found: dict[str, bytes] = {}
    for part, sep, allowed in ((path, ";", _PATH_ATTRS), (query, "&", _QUERY_ATTRS)):
        for item in filter(None, part.split(sep)):
            name, eq, value = item.partition("=")
            name = name.strip().lower()
            if name in _SECRET_ATTRS:
                raise InvalidKey(f"{name} is not accepted in a PKCS#11 URI: put the PIN in the "
                                 "configuration's [secrets.token-NAME] section")
            if not eq or name not in allowed:
                raise InvalidKey(f"PKCS#11 URI attribute {name!r} is not known here "
                                 f"(RFC 7512 section 2.3; path: {', '.join(sorted(_PATH_ATTRS))};"
                                 f" query: {', '.join(sorted(_QUERY_ATTRS))})")
            if name in found:
                raise InvalidKey(f"PKCS#11 URI attribute {name!r} given twice")
            found[name] = unquote_to_bytes(value)
    if found.get("type", b"private") != b"private":
        raise InvalidKey("a signing key's PKCS#11 URI must name type=private (or no type)")
    if not any(k in found for k in ("object", "id")):
        raise InvalidKey("a PKCS#11 URI for a key needs object= (its label) or id=")

    def text(name: str) -> str | None:
        v = found.get(name)
        return None if v is None else v.decode("utf-8")

    slot = text("slot-id")
    try:
        slot_id = int(slot) if slot is not None else None
    except ValueError:
        raise InvalidKey(f"slot-id {slot!r} is not a number") from None
    return Pkcs11Uri(token=text("token"), object=text("object"), id=found.get("id"),
                     serial=text("serial"), manufacturer=text("manufacturer"),
                     model=text("model"), slot_id=slot_id, module_path=text("module-path"),
                     module_name=text("module-name"))
