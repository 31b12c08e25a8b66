"""A small PKI made with `cryptography`, for the certificate tests: CAs, end-entity
certificates with the extensions IKE cares about, CRLs, and key/cert files on disk."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def name(cn: str, org: str = "ocfpy test") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, passphrase: bytes | None = None) -> bytes:
        enc = (serialization.BestAvailableEncryption(passphrase) if passphrase
               else serialization.NoEncryption())
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8, enc)


def issue(subject: x509.Name, issuer: Issued | None = None, *, ca: bool = False,
          path_length: int | None = None, not_before: dt.datetime = NOW - 30 * DAY,
          not_after: dt.datetime = NOW + 365 * DAY, sans: list[x509.GeneralName] | None = None,
          key_usage: str | None = "default", ekus: list | None = None,
          name_constraints: x509.NameConstraints | None = None, serial: int | None = None,
          key: ec.EllipticCurvePrivateKey | None = None) -> Issued:
    """A certificate; ``issuer`` None makes it self-signed."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    signer_key = issuer.key if issuer else key
    b = (x509.CertificateBuilder().subject_name(subject)
         .issuer_name(issuer.cert.subject if issuer else subject)
         .public_key(key.public_key()).serial_number(serial or x509.random_serial_number())
         .not_valid_before(not_before).not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None),
                        critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                        critical=False))
    if key_usage == "default":
        key_usage = "cert_sign" if ca else "digital_signature"
    if key_usage is not None:
        flags = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment",
                               "data_encipherment", "key_agreement", "key_cert_sign",
                               "crl_sign", "encipher_only", "decipher_only"), False)
        if key_usage == "cert_sign":
            flags.update(key_cert_sign=True, crl_sign=True)
        else:
            flags[key_usage] = True
        b = b.add_extension(x509.KeyUsage(**flags), critical=True)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ekus:
        b = b.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    if name_constraints is not None:
        b = b.add_extension(name_constraints, critical=True)
    if issuer is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.key.public_key()), critical=False)
    return Issued(b.sign(signer_key, hashes.SHA256()), key)


def crl(issuer: Issued, revoked: list[tuple[int, dt.datetime]], *,
        next_update: dt.datetime = NOW + 7 * DAY) -> x509.CertificateRevocationList:
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
         .last_update(NOW - DAY).next_update(next_update))
    for serial, when in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                      .revocation_date(when).build())
    return b.sign(issuer.key, hashes.SHA256())


def dns(*names: str) -> list[x509.GeneralName]:
    return [x509.DNSName(n) for n in names]


def ip(addr: str) -> x509.GeneralName:
    return x509.IPAddress(ipaddress.ip_address(addr))


def three_level(gw: str = "gw.example.org") -> tuple[Issued, Issued, Issued]:
    root = issue(name("Root CA"), ca=True, path_length=1)
    inter = issue(name("Intermediate CA"), root, ca=True, path_length=0)
    ee = issue(name(gw), inter, sans=dns(gw))
    return root, inter, ee


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


__all__ = ["NOW", "DAY", "ExtendedKeyUsageOID", "Issued", "issue", "crl", "dns", "ip", "name",
           "three_level", "write"]
