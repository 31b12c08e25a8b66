"""IKE identities (RFC 7296 3.5) from swanctl-style strings, and back.

"10.0.0.1" / "2001:db8::1" -> ID_IPV4_ADDR / ID_IPV6_ADDR; "user@example.org" -> ID_RFC822_ADDR;
"@example.org" or "example.org" -> ID_FQDN; "@#0a0b" -> ID_KEY_ID (hex); "C=CH, O=Example,
CN=moon" -> ID_DER_ASN1_DN (RDNs in the order written, most significant first, as strongSwan
writes DNs), as strongSwan spells them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ocfpy.ike.constants import IdType


@dataclass(frozen=True, slots=True)
class Identity:
    id_type: int
    data: bytes

    @classmethod
    def parse(cls, text: str) -> Identity:
        text = text.strip()
        if text.startswith("@#"):
            return cls(IdType.KEY_ID, bytes.fromhex(text[2:]))
        if text.startswith("@"):
            return cls(IdType.FQDN, text[1:].encode())
        if "=" in text:  # no FQDN, address or e-mail address has one
            return cls(IdType.DER_ASN1_DN, _dn_der(text))
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            return cls(IdType.IPV4_ADDR if addr.version == 4 else IdType.IPV6_ADDR, addr.packed)
        if "@" in text:
            return cls(IdType.RFC822_ADDR, text.encode())
        return cls(IdType.FQDN, text.encode())

    @classmethod
    def from_address(cls, addr: str) -> Identity:
        a = ipaddress.ip_address(addr)
        return cls(IdType.IPV4_ADDR if a.version == 4 else IdType.IPV6_ADDR, a.packed)

    def matches(self, other: Identity) -> bool:
        if self.id_type != other.id_type:
            return False
        if self.id_type in (IdType.FQDN, IdType.RFC822_ADDR):
            return self.data.lower() == other.data.lower()
        if self.id_type == IdType.DER_ASN1_DN:
            from ocfpy.ike.certs import same_dn

            return same_dn(self.data, other.data)
        return self.data == other.data

    def __str__(self) -> str:
        t = self.id_type
        try:
            if t in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
                return str(ipaddress.ip_address(self.data))
            if t in (IdType.FQDN, IdType.RFC822_ADDR):
                return self.data.decode("ascii")
        except (ValueError, UnicodeDecodeError):
            pass
        if t == IdType.KEY_ID:
            return "@#" + self.data.hex()
        if t == IdType.DER_ASN1_DN:  # a certificate's subject (auth = pubkey without an id)
            from ocfpy.ike.certs import dn_text

            return dn_text(self.data)
        return f"id-type-{t}:{self.data.hex()}"


def _dn_der(text: str) -> bytes:
    r"""DER of a DN written strongSwan's way ("C=CH, O=Example, CN=moon": the first RDN is
    the most significant, the reverse of RFC 4514's order); ``\,`` escapes a comma."""
    import re

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    parts = [p.strip() for p in re.split(r"(?<!\\),", text) if p.strip()]
    try:
        name = x509.Name.from_rfc4514_string(
            ",".join(reversed(parts)),
            {"E": NameOID.EMAIL_ADDRESS, "emailAddress": NameOID.EMAIL_ADDRESS,
             "SN": NameOID.SURNAME, "serialNumber": NameOID.SERIAL_NUMBER})
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a distinguished name: {exc}") from None
    return name.public_bytes()
