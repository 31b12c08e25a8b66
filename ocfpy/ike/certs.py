"""X.509 for IKE: the peer's chain validated to our trust anchors, its identity, CERTREQ.

Pure (sans-I/O, like the rest of ocfpy.ike): certificates, CRLs and the time come in as
arguments; `load_certificates` / `load_crls` are the only functions that read files, and only
the paths they are given.

What `validate_chain` checks, in this order, each failure a `Validation` whose ``check`` names
the test and whose ``reason`` is what `ocfpy sa why` shows:

1. the chain: from the end-entity certificate, each issuer found among the certificates the peer
   sent (CERT payloads) or our trust anchors, by name *and* signature, up to a trust anchor
   (RFC 5280 section 6.1); a chain that ends at an unknown self-signed CA, or whose top issuer
   is nowhere (a CA we do not trust, or a missing intermediate: the two look alike), is
   UNTRUSTED; one whose issuer name matches but whose signature does not verify is SIGNATURE;
2. validity times of every certificate at ``now`` (EXPIRED, NOT_YET_VALID);
3. basicConstraints cA and pathLenConstraint of every CA certificate (NOT_A_CA, PATH_LENGTH);
4. keyUsage, where present: digitalSignature on the end-entity (RFC 4945 section 5.1.3.2),
   keyCertSign on CAs (KEY_USAGE);
5. extendedKeyUsage of the end-entity (EXTENDED_KEY_USAGE). RFC 4945 section 5.1.3.12 wants
   id-kp-ipsecIKE or none, but IKE certificates in the field carry serverAuth (Windows
   requires it on gateways) or clientAuth (road warriors), and strongSwan does not refuse
   them; we accept a certificate without the extension, or with anyExtendedKeyUsage,
   id-kp-ipsecIKE, serverAuth or clientAuth among its purposes, and refuse one whose purposes
   are all something else (code signing, e-mail, TLS-unrelated);
6. name constraints (NAME_CONSTRAINTS), where any CA of the chain has them: by
   cryptography's RFC 5280 path validation (x509.verification), the only part we delegate,
   because it is the part where a second implementation would be most likely to be wrong;
7. revocation from the CRLs given (REVOKED): each CRL must be signed by the issuer it names;
   with no CRLs configured the result says so ("revocation not checked: no CRLs
   configured") and the chain is valid;
8. the peer's identity (IDi/IDr, RFC 7296 section 3.5): the subject DN (ID_DER_ASN1_DN) or a
   subjectAltName of the matching type (FQDN: dNSName, RFC822: rfc822Name, IPv4/IPv6:
   iPAddress, DN: also a directoryName), else IDENTITY. No fallback to the CN: strongSwan
   has none either, and it would let any certificate with a CN claim a name.

CERTREQ (RFC 7296 section 3.7): the concatenated SHA-1 hashes of our trust anchors'
SubjectPublicKeyInfo; `choose_chain` uses the peer's to pick which of our chains to send.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import ipaddress
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from ocfpy.ike.constants import IdType
from ocfpy.ike.errors import IkeError

ID_KP_IPSEC_IKE = ObjectIdentifier("1.3.6.1.5.5.7.3.17")  # RFC 4945 section 5.1.3.12
ACCEPTED_EKUS = {
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
    ID_KP_IPSEC_IKE: "ipsecIKE",
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
}
MAX_DEPTH = 8  # certificates in a chain, anchor included (strongSwan's default is 7 CAs)
# The peer's CERT payloads are read and chained before its AUTH is verified, so by anyone who
# completes IKE_SA_INIT; these bound what that costs (DaemonOptions max_peer_certs and
# max_chain_verifications; each verification may be a 16,384-bit RSA key with a 64-bit
# exponent: 17 ms on the lab machine)
MAX_PEER_CERTS = 16
MAX_VERIFICATIONS = 16
CERT_ENCODING_X509_SIGNATURE = 4  # RFC 7296 section 3.6, CERT and CERTREQ payloads


class CertificateError(IkeError):
    """A certificate or CRL file that cannot be read (the loader's error, with the path)."""


class Check(StrEnum):
    OK = "ok"
    UNTRUSTED = "untrusted"
    SIGNATURE = "signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    NOT_A_CA = "not-a-ca"
    PATH_LENGTH = "path-length"
    TOO_LONG = "too-long"
    KEY_USAGE = "key-usage"
    EXTENDED_KEY_USAGE = "extended-key-usage"
    NAME_CONSTRAINTS = "name-constraints"
    REVOKED = "revoked"
    IDENTITY = "identity"


@dataclass(frozen=True)
class Validation:
    """The outcome of `validate_chain`. ``chain`` runs end-entity first, anchor last, as far as
    it could be built; ``revocation`` always says what was (not) checked."""

    check: Check
    reason: str = ""
    chain: tuple[x509.Certificate, ...] = ()
    revocation: str = ""

    @property
    def ok(self) -> bool:
        return self.check is Check.OK

    @property
    def end_entity(self) -> x509.Certificate | None:
        return self.chain[0] if self.chain else None

    def __bool__(self) -> bool:
        return self.ok


# -- words ---------------------------------------------------------------------------------
def dn(name: x509.Name) -> str:
    """A DN as people read it (RFC 4514 string)."""
    return name.rfc4514_string()


def _when(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def _who(cert: x509.Certificate, position: int) -> str:
    kind = "the peer's certificate" if position == 0 else "the CA certificate"
    return f"{kind} '{dn(cert.subject)}'"


def extension(cert: x509.Certificate, cls):
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def subject_alt_names(cert: x509.Certificate) -> list[str]:
    """The SANs as strings, for messages and `ocfpy certs list`."""
    san = extension(cert, x509.SubjectAlternativeName)
    if san is None:
        return []
    out = []
    for name in san:
        if isinstance(name, x509.DirectoryName):
            out.append(f"dirName:{dn(name.value)}")
        elif isinstance(name, x509.IPAddress):
            out.append(str(name.value))
        elif isinstance(name, (x509.DNSName, x509.RFC822Name, x509.UniformResourceIdentifier)):
            out.append(name.value)
        else:
            out.append(repr(name.value))
    return out


def spki_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


# -- chain building --------------------------------------------------------------------------
def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Names and signature (RFC 5280 section 6.1.3 (a)(1), (a)(4))."""
    # The answer is a function of the two certificates' bytes alone, and every IKE_AUTH of a
    # peer brings the same certificate again: verified signatures are remembered, as
    # strongSwan's cert_cache remembers issued_by results (the expensive step of building a
    # chain; validity, constraints, revocation and identity are still checked every time).
    key = (hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest(),
           hashlib.sha256(issuer.public_bytes(serialization.Encoding.DER)).digest())
    if key in _VERIFIED:
        _VERIFIED.move_to_end(key)
        return True
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False  # failures are not remembered: a forged certificate costs its sender
    _VERIFIED[key] = None
    if len(_VERIFIED) > _VERIFIED_MAX:
        _VERIFIED.popitem(last=False)
    return True


# SHA-256 of (certificate, issuer) DER: 64 bytes an entry, so a peer that sends chains of
# its own making (its own CA as an intermediate) can fill it only to this bound, LRU-evicted
_VERIFIED: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
_VERIFIED_MAX = 1024


class _Budget(Exception):
    """build_chain used up its signature verifications."""


def build_chain(end_entity: x509.Certificate, intermediates: Sequence[x509.Certificate],
                anchors: Sequence[x509.Certificate], *,
                max_verifications: int = MAX_VERIFICATIONS) -> Validation:
    left = [max_verifications]

    def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        if left[0] <= 0:
            raise _Budget
        left[0] -= 1
        return _issued_by(cert, issuer)

    chain = [end_entity]
    try:
        return _build(chain, [c for c in intermediates if c != end_entity], anchors, issued_by)
    except _Budget:
        return Validation(Check.UNTRUSTED,
                          f"building the chain of '{dn(end_entity.subject)}' took more than "
                          f"{max_verifications} signature verifications (max_chain_verifications"
                          "): too many certificates named like the issuer sought", tuple(chain))


def _build(chain: list[x509.Certificate], pool: list[x509.Certificate],
           anchors: Sequence[x509.Certificate], issued_by) -> Validation:
    while True:
        top = chain[-1]
        for anchor in anchors:
            if top.issuer == anchor.subject and issued_by(top, anchor):
                if top != anchor:
                    chain.append(anchor)
                return Validation(Check.OK, chain=tuple(chain))
            if top == anchor:  # the peer sent one of our anchors as its own certificate
                return Validation(Check.OK, chain=tuple(chain))
        if len(chain) >= MAX_DEPTH:
            return Validation(Check.TOO_LONG, f"the chain is longer than {MAX_DEPTH} "
                              "certificates without reaching a trusted CA", tuple(chain))
        if top.issuer == top.subject and issued_by(top, top):  # self-signed
            return Validation(Check.UNTRUSTED,
                              f"no trusted CA for issuer '{dn(top.issuer)}': the chain ends at "
                              "that self-signed CA, which is not one of our CA certificates",
                              tuple(chain))
        same_name = [a for a in anchors if a.subject == top.issuer]
        if same_name:
            return Validation(Check.SIGNATURE,
                              f"{_who(top, len(chain) - 1)} names the trusted CA "
                              f"'{dn(top.issuer)}' as issuer, but its signature does not verify "
                              "with that CA's key (another CA with the same name?)", tuple(chain))
        nxt = next((c for c in pool if c not in chain and top.issuer == c.subject
                    and issued_by(top, c)), None)
        if nxt is None:
            if any(c.subject == top.issuer for c in pool):
                return Validation(Check.SIGNATURE,
                                  f"{_who(top, len(chain) - 1)} does not verify with the key of "
                                  f"the CA certificate '{dn(top.issuer)}' the peer sent",
                                  tuple(chain))
            # An unknown root and a missing intermediate look the same from here: the
            # issuer's certificate is nowhere. The reason names both possibilities.
            return Validation(Check.UNTRUSTED,
                              f"no trusted CA for issuer '{dn(top.issuer)}' of "
                              f"'{dn(top.subject)}': it is neither one of our CA certificates "
                              "nor among the certificates the peer sent (a CA we do not trust, "
                              "or a missing intermediate CA certificate)", tuple(chain))
        chain.append(nxt)


# -- the checks on a built chain ---------------------------------------------------------------
def _times(chain: Sequence[x509.Certificate], now: dt.datetime) -> Validation | None:
    for i, cert in enumerate(chain):
        if now > cert.not_valid_after_utc:
            return Validation(Check.EXPIRED,
                              f"{_who(cert, i)} expired on {_when(cert.not_valid_after_utc)}",
                              tuple(chain))
        if now < cert.not_valid_before_utc:
            return Validation(Check.NOT_YET_VALID,
                              f"{_who(cert, i)} is not valid before "
                              f"{_when(cert.not_valid_before_utc)}", tuple(chain))
    return None


def _constraints(chain: Sequence[x509.Certificate]) -> Validation | None:
    for i, cert in enumerate(chain[1:], start=1):
        bc = extension(cert, x509.BasicConstraints)
        if bc is None or not bc.ca:
            return Validation(Check.NOT_A_CA,
                              f"'{dn(cert.subject)}' issued '{dn(chain[i - 1].subject)}' but is "
                              "not a CA (basicConstraints cA is not set)", tuple(chain))
        below = i - 1  # CA certificates between this one and the end-entity
        if bc.path_length is not None and below > bc.path_length:
            return Validation(Check.PATH_LENGTH,
                              f"the CA '{dn(cert.subject)}' allows {bc.path_length} intermediate "
                              f"CA(s) below it (pathLenConstraint), the chain has {below}",
                              tuple(chain))
        ku = extension(cert, x509.KeyUsage)
        if ku is not None and not ku.key_cert_sign:
            return Validation(Check.KEY_USAGE,
                              f"the CA '{dn(cert.subject)}' has keyUsage without keyCertSign",
                              tuple(chain))
    ee = chain[0]
    ku = extension(ee, x509.KeyUsage)
    if ku is not None and not ku.digital_signature:
        return Validation(Check.KEY_USAGE,
                          f"the peer's certificate '{dn(ee.subject)}' has keyUsage without "
                          "digitalSignature, so it may not sign IKE AUTH payloads", tuple(chain))
    eku = extension(ee, x509.ExtendedKeyUsage)
    if eku is not None and not any(oid in ACCEPTED_EKUS for oid in eku):
        names = ", ".join(getattr(o, "_name", o.dotted_string) for o in eku)
        return Validation(Check.EXTENDED_KEY_USAGE,
                          f"the peer's certificate '{dn(ee.subject)}' is for {names} only; IKE "
                          f"accepts {', '.join(ACCEPTED_EKUS.values())} or no extendedKeyUsage",
                          tuple(chain))
    return None


def _name_constraints(chain: Sequence[x509.Certificate], now: dt.datetime) -> Validation | None:
    if not any(extension(c, x509.NameConstraints) is not None for c in chain[1:]):
        return None
    from cryptography.x509 import verification as v

    # Only name constraints are delegated: the extension policies permit everything else
    # (checked above with IKE's rules, e.g. no EKU required), and the client verifier does
    # not match a name (that is the identity check below).
    ee_policy = v.ExtensionPolicy.permit_all()
    ca_policy = v.ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, v.Criticality.AGNOSTIC, None)  # the verifier insists on it
    anchor = chain[-1]
    verifier = (v.PolicyBuilder().store(v.Store([anchor])).time(now)
                .max_chain_depth(MAX_DEPTH)
                .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
                .build_client_verifier())
    try:
        verifier.verify(chain[0], list(chain[1:-1]))
    except v.VerificationError as exc:
        return Validation(Check.NAME_CONSTRAINTS,
                          f"the peer's certificate '{dn(chain[0].subject)}' fails the name "
                          f"constraints of its CA chain ({exc})", tuple(chain))
    return None


def _revocation(chain: Sequence[x509.Certificate], crls: Sequence[x509.CertificateRevocationList],
                now: dt.datetime) -> tuple[Validation | None, str]:
    if not crls:
        return None, "revocation not checked: no CRLs configured"
    notes = []
    for i, cert in enumerate(chain[:-1]):
        issuer = chain[i + 1]
        mine = [c for c in crls if c.issuer == issuer.subject
                and c.is_signature_valid(issuer.public_key())]
        if not mine:
            notes.append(f"'{dn(cert.subject)}' not checked: no CRL from '{dn(issuer.subject)}'")
            continue
        for crl in mine:
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is not None:
                when = entry.revocation_date_utc
                return Validation(Check.REVOKED,
                                  f"{_who(cert, i)} was revoked by the CRL of "
                                  f"'{dn(issuer.subject)}' on {_when(when)}",
                                  tuple(chain)), ""
        newest = max(mine, key=lambda c: c.last_update_utc)
        if newest.next_update_utc is not None and newest.next_update_utc < now:
            notes.append(f"'{dn(cert.subject)}' not revoked, but the CRL of "
                         f"'{dn(issuer.subject)}' is out of date since "
                         f"{_when(newest.next_update_utc)}")
        else:
            notes.append(f"'{dn(cert.subject)}' not revoked (CRL of '{dn(issuer.subject)}')")
    return None, "revocation: " + "; ".join(notes)


# -- identity ----------------------------------------------------------------------------------
_DN_LABELS = {"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST",
              "2.5.4.10": "O", "2.5.4.11": "OU", "1.2.840.113549.1.9.1": "E"}


def _tlvs(buf: bytes) -> list[tuple[int, bytes]]:
    out, at = [], 0
    while at < len(buf):
        tag, n = buf[at], buf[at + 1]
        at += 2
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(buf[at:at + k], "big")
            at += k
        if at + n > len(buf):
            raise ValueError("truncated DER")
        out.append((tag, buf[at:at + n]))
        at += n
    return out


MAX_OID_BYTES = 64  # an OID's encoded body; real attribute types take under 16


def _oid(body: bytes) -> str:
    # Decoding an arc is quadratic in its length (it grows one big int); a peer's
    # ID_DER_ASN1_DN is read before its AUTH is verified, so a 60 KB OID cost 0.6 s a time
    if not body or len(body) > MAX_OID_BYTES:
        raise ValueError(f"an OID of {len(body)} bytes")
    parts, value = [], 0
    for b in body:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(value)
            value = 0
    first = min(parts[0] // 40, 2)
    return ".".join(map(str, [first, parts[0] - 40 * first, *parts[1:]]))


def dn_text(der: bytes) -> str:
    """An ID_DER_ASN1_DN body as text (for messages only; matching compares DER bytes)."""
    try:
        ((tag, rdns),) = _tlvs(der)
        if tag != 0x30:
            raise ValueError("not a SEQUENCE")
        parts = []
        for _set_tag, rdn in _tlvs(rdns):
            for _seq_tag, atv in _tlvs(rdn):
                (_, oid), (_, value) = _tlvs(atv)[:2]
                label = _DN_LABELS.get(_oid(oid), _oid(oid))
                parts.append(f"{label}={value.decode('utf-8', 'replace')}")
        return ", ".join(reversed(parts))
    except (ValueError, IndexError):
        # the peer's bytes, so only their start: a whole 60 KB ID would go into every message
        more = f"... {len(der)} bytes" if len(der) > 32 else ""
        return f"(DER {der[:32].hex()}{more})"


def dn_key(der: bytes) -> tuple[tuple[str, str], ...] | None:
    """A DN as compared for identities: attribute types and values in order, values without
    their string type (PrintableString and UTF8String spell the same name) and without case,
    as strongSwan compares them; None if it does not parse."""
    try:
        ((tag, rdns),) = _tlvs(der)
        if tag != 0x30:
            return None
        out = []
        for _set_tag, rdn in _tlvs(rdns):
            for _seq_tag, atv in _tlvs(rdn):
                (_, oid), (_, value) = _tlvs(atv)[:2]
                out.append((_oid(oid), value.decode("utf-8", "replace").casefold()))
        return tuple(out)
    except (ValueError, IndexError):
        return None


def same_dn(a: bytes, b: bytes) -> bool:
    if bytes(a) == bytes(b):
        return True
    ka = dn_key(a)
    return ka is not None and ka == dn_key(b)


def _id_text(id_type: int, data: bytes) -> str:
    if id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
        try:
            return str(ipaddress.ip_address(data))
        except ValueError:
            return data.hex()
    if id_type == IdType.DER_ASN1_DN:
        return dn_text(data)
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        return data.hex()


def identity_mismatch(cert: x509.Certificate, id_type: int, data: bytes,
                      label: str = "the peer's ID") -> str | None:
    """None if the identity (RFC 7296 section 3.5) is the certificate's subject DN or one of
    its subjectAltNames; else the reason, naming what the certificate does contain."""
    san = extension(cert, x509.SubjectAlternativeName)
    names = list(san) if san is not None else []
    if id_type == IdType.FQDN:
        want = data.decode("ascii", "replace").lower().rstrip(".")
        if any(isinstance(n, x509.DNSName) and n.value.lower().rstrip(".") == want
               for n in names):
            return None
    elif id_type == IdType.RFC822_ADDR:
        want = data.decode("ascii", "replace").lower()
        if any(isinstance(n, x509.RFC822Name) and n.value.lower() == want for n in names):
            return None
    elif id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
        try:
            want_ip = ipaddress.ip_address(data)
        except ValueError:
            return f"{label} is not a valid IP address ({data.hex()})"
        if any(isinstance(n, x509.IPAddress) and n.value == want_ip for n in names):
            return None
    elif id_type == IdType.DER_ASN1_DN:
        # DER is canonical: the same DN has the same bytes (strongSwan sends its subject's DER)
        # (a DN configured as text may spell a string type other than the certificate's)
        if same_dn(data, cert.subject.public_bytes()) or any(
                isinstance(n, x509.DirectoryName) and same_dn(n.value.public_bytes(), data)
                for n in names):
            return None
    else:
        return (f"{label} has type {id_type}, which cannot be matched to a certificate "
                "(use an FQDN, e-mail address, IP address or DN)")
    sans = ", ".join(subject_alt_names(cert)) or "none"
    return (f"{label} '{_id_text(id_type, data)}' is not in the certificate (subject "
            f"'{dn(cert.subject)}', SANs: {sans})")


# -- the whole validation ----------------------------------------------------------------------
def validate_chain(end_entity: x509.Certificate, intermediates: Sequence[x509.Certificate],
                   anchors: Sequence[x509.Certificate], *, now: dt.datetime,
                   crls: Sequence[x509.CertificateRevocationList] = (),
                   peer_id: tuple[int, bytes] | None = None,
                   id_label: str = "the peer's ID",
                   max_verifications: int = MAX_VERIFICATIONS) -> Validation:
    """Validate the peer's certificate and the CA certificates it sent to our trust anchors at
    ``now`` (an aware datetime); with ``peer_id`` = (ID type, ID data) also its identity."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    built = build_chain(end_entity, intermediates, anchors, max_verifications=max_verifications)
    if not built.ok:
        return built
    chain = built.chain
    for failed in (_times(chain, now), _constraints(chain), _name_constraints(chain, now)):
        if failed is not None:
            return failed
    revoked, revocation = _revocation(chain, crls, now)
    if revoked is not None:
        return revoked
    if peer_id is not None:
        reason = identity_mismatch(end_entity, peer_id[0], peer_id[1], id_label)
        if reason is not None:
            return Validation(Check.IDENTITY, reason, chain, revocation)
    return Validation(Check.OK, "", chain, revocation)


# -- CERTREQ (RFC 7296 section 3.7) --------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def ca_key_hash(cert: x509.Certificate) -> bytes:
    """SHA-1 of the CA's SubjectPublicKeyInfo: one Certification Authority entry. Kept per
    certificate (our anchors and chains are the same objects for every SA: each IKE_SA_INIT
    and IKE_AUTH would otherwise re-encode and re-hash them)."""
    return hashlib.sha1(spki_der(cert)).digest()  # noqa: S324 - the RFC's choice, not ours


def certreq_data(anchors: Iterable[x509.Certificate]) -> bytes:
    """CERTREQ payload data for encoding 4: the 20-byte hashes of our trust anchors."""
    return b"".join(ca_key_hash(a) for a in anchors)


def parse_certreq(data: bytes) -> list[bytes]:
    """The 20-byte CA hashes of a CERTREQ (a trailing partial hash is ignored, as RFC 7296
    3.7 gives no other way to read it)."""
    return [data[i:i + 20] for i in range(0, len(data) - len(data) % 20, 20)]


def requested_cas(datas: Iterable[bytes], ours: set[bytes] | frozenset[bytes]) -> list[bytes]:
    """The CA hashes of CERTREQ payload data ``datas`` that name one of ``ours`` (the CAs of
    our own chains), each once. The others cannot change which chain we send (choose_chain),
    and keeping them would let anyone who completes IKE_SA_INIT park 500 hashes per 10 KB
    datagram in each SA for its whole life."""
    return list(dict.fromkeys(h for d in datas for h in parse_certreq(d) if h in ours))


@dataclass(frozen=True)
class LocalChain:
    """One of our certificates with the CA certificates that lead to its anchor."""

    certificate: x509.Certificate
    cas: tuple[x509.Certificate, ...] = field(default=())

    def cert_payloads(self) -> list[bytes]:
        """DER of the CERT payloads to send: ours, then the intermediates (not the root: the
        peer must have it already, RFC 4945 section 3.2.2)."""
        return list(self._payloads)

    @functools.cached_property
    def _payloads(self) -> tuple[bytes, ...]:
        # encoded once per loaded chain, not once per IKE_AUTH (the chain never changes)
        ders = [self.certificate.public_bytes(serialization.Encoding.DER)]
        ders += [c.public_bytes(serialization.Encoding.DER) for c in self.cas
                 if not (c.issuer == c.subject)]
        return tuple(ders)


def choose_chain(chains: Sequence[LocalChain], requested: Iterable[bytes]) -> LocalChain | None:
    """The first of our chains with a CA (or the certificate's issuer) the peer asked for by
    CERTREQ hash; without a match, or without CERTREQ, the first chain (RFC 7296 3.7 lets
    us send a certificate the peer did not ask for). None only when we have none."""
    wanted = set(requested)
    if wanted:
        for chain in chains:
            if any(ca_key_hash(ca) in wanted for ca in chain.cas):
                return chain
    return chains[0] if chains else None


# -- loading (the only I/O: files the caller names) ----------------------------------------------
def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CertificateError(f"{path}: cannot read: {exc.strerror}") from None


def load_certificates(path: str) -> list[x509.Certificate]:
    """Every certificate of a PEM file (one or more) or a DER file."""
    data = _read(path)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise CertificateError(f"{path}: not an X.509 certificate ({exc})") from None


_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)


def load_crls(path: str) -> list[x509.CertificateRevocationList]:
    """Every CRL of a PEM file (one or more: `load_pem_x509_crl` reads only the first, and
    the revocations of the others would go unchecked) or the one of a DER file."""
    data = _read(path)
    try:
        if b"-----BEGIN" in data:
            blocks = _PEM_CRL.findall(data)
            if not blocks:
                raise ValueError("no X509 CRL PEM block")
            return [x509.load_pem_x509_crl(b) for b in blocks]
        return [x509.load_der_x509_crl(data)]
    except ValueError as exc:
        raise CertificateError(f"{path}: not a CRL ({exc})") from None
