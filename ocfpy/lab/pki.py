"""Test PKIs for the lab: a root CA, optional intermediates, end-entity certificates for IKE
gateways, CRLs, and the swanctl-style folders (x509/, x509ca/, x509crl/, private/) that
both ocfpy iked and strongSwan's charon (--load-all) read. Made with `cryptography`.

Key kinds: "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048", "rsa-3072", "rsa-4096",
"ed25519", "ed448". CA certificates are signed with SHA-256 (EdDSA: no separate hash), and
each end-entity certificate names its identity as subjectAltName (dNSName, rfc822Name or
iPAddress), since IKE identities are matched against SANs (RFC 4945 3.1).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

DAY = dt.timedelta(days=1)
_CURVES = {"ecdsa-p256": ec.SECP256R1, "ecdsa-p384": ec.SECP384R1, "ecdsa-p521": ec.SECP521R1}
KINDS = ("ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048", "rsa-3072", "rsa-4096",
         "ed25519", "ed448")


def new_key(kind: str):
    if kind in _CURVES:
        return ec.generate_private_key(_CURVES[kind]())
    if kind.startswith("rsa-"):
        return rsa.generate_private_key(65537, int(kind[4:]))
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ed448":
        return ed448.Ed448PrivateKey.generate()
    raise ValueError(f"unknown key kind {kind!r}")


def dn(cn: str, org: str = "ocfpy lab") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def san(identity: str) -> x509.GeneralName:
    """The subjectAltName that an IKE identity string (swanctl spelling) is matched against."""
    text = identity.lstrip("@")
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        pass
    return x509.RFC822Name(text) if "@" in text else x509.DNSName(text)


@dataclass
class Cert:
    cert: x509.Certificate
    key: object

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def key_pem(self, passphrase: bytes | None = None) -> bytes:
        enc = (serialization.BestAvailableEncryption(passphrase) if passphrase
               else serialization.NoEncryption())
        return self.key.private_bytes(serialization.Encoding.PEM,  # type: ignore[attr-defined]
                                      serialization.PrivateFormat.PKCS8, enc)

    @property
    def serial(self) -> int:
        return self.cert.serial_number


def _hash_for(key):
    return None if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey) \
        else hashes.SHA256()


def issue(cn: str, issuer: Cert | None = None, *, kind: str = "ecdsa-p256", ca: bool = False,
          path_length: int | None = None, ids: list[str] | None = None,
          now: dt.datetime | None = None, not_before: dt.datetime | None = None,
          not_after: dt.datetime | None = None, key=None) -> Cert:
    """A certificate for ``cn``; ``issuer`` None makes a self-signed root. End entities get
    keyUsage digitalSignature and the ``ids`` as SANs (default: ``cn``)."""
    now = now or dt.datetime.now(dt.UTC)
    key = key or new_key(kind)
    signer = issuer.key if issuer else key
    b = (x509.CertificateBuilder().subject_name(dn(cn))
         .issuer_name(issuer.cert.subject if issuer else dn(cn))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(not_before or now - DAY)
         .not_valid_after(not_after or now + 365 * DAY)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None),
                        critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                        critical=False))
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                          False), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                          False), critical=True)
        b = b.add_extension(x509.SubjectAlternativeName([san(i) for i in (ids or [cn])]),
                            critical=False)
    if issuer is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.key.public_key()), critical=False)  # type: ignore[attr-defined]
    return Cert(b.sign(signer, _hash_for(signer)), key)  # type: ignore[arg-type]


def crl(issuer: Cert, revoked: list[Cert], *, now: dt.datetime | None = None
        ) -> x509.CertificateRevocationList:
    now = now or dt.datetime.now(dt.UTC)
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
         .last_update(now - DAY).next_update(now + 7 * DAY))
    for c in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder()
                                      .serial_number(c.serial).revocation_date(now - DAY).build())
    return b.sign(issuer.key, _hash_for(issuer.key))  # type: ignore[arg-type]


def write_layout(base: str, *, own: Cert | None = None, cas: list[Cert] = (),  # type: ignore[assignment]
                 crls: list[x509.CertificateRevocationList] = (),  # type: ignore[assignment]
                 name: str = "gw", key_in_file: bool = True) -> dict[str, str]:
    """Write the swanctl folders under ``base``: x509/NAME.pem, private/NAME.key.pem,
    x509ca/ca-N.pem, x509crl/crl-N.pem. Returns the paths written, by role."""
    out: dict[str, str] = {}

    def put(rel: str, data: bytes, mode: int = 0o644) -> str:
        path = os.path.join(base, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        return path

    if own is not None:
        out["cert"] = put(f"x509/{name}.pem", own.pem)
        if key_in_file:
            out["key"] = put(f"private/{name}.key.pem", own.key_pem(), 0o600)
    for i, ca in enumerate(cas):
        out[f"ca{i}"] = put(f"x509ca/ca-{i}.pem", ca.pem)
    for i, c in enumerate(crls):
        out[f"crl{i}"] = put(f"x509crl/crl-{i}.pem",
                             c.public_bytes(serialization.Encoding.PEM))
    return out


__all__ = ["KINDS", "Cert", "crl", "dn", "issue", "new_key", "san", "write_layout"]
