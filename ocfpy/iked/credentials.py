"""Credentials laid out like swanctl's, next to the configuration file:

    x509/      our certificates (PEM or DER), end-entity first in a bundle
    x509ca/    CA certificates: trust anchors (self-signed) and intermediates we send
    x509crl/   CRLs (checked against the peer's chain, ocfpy.ike.certs)
    private/   our private keys: PEM or DER, PKCS#8 or traditional, optionally encrypted with a
               passphrase given by a ``[secrets.private-NAME]`` section (file, secret)

and keys in PKCS#11 tokens, named by ``[secrets.token-NAME]`` sections (an RFC 7512 URI as
``handle``, and the PIN). All paths are relative to the configuration file's directory
(swanctl's --load-creds does the same with swanctl.conf's).

`load_credentials` reads and checks everything at load time, so a mistake shows when the
daemon starts (or reloads) and not at the first IKE_AUTH: every problem is one line
"<file>: <reason>" (an unreadable or undecryptable key, a certificate whose private key is
nowhere, an expired or not yet valid certificate of ours, a file that is not what its folder
says). The configuration loader adds "file:line: key:" for the keys it maps here.

Key files are read here with cryptography only to learn their public key, then dropped; the
signers are opened through the dispatcher (KeyFile / Pkcs11Key), so a token key is checked
by a signature made in the token (the dispatcher's pairwise test), never by reading it.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ocfpy.crypto.errors import BackendUnavailable, InvalidKey, OcfError
from ocfpy.crypto.signatures import KeyFile, Pkcs11Key, PrivateKeyRef
from ocfpy.ike import certs as ikecerts
from ocfpy.ike.auth_sig import key_kind

FOLDERS = ("x509", "x509ca", "x509crl", "private")
# The scheme a token key is checked with, per key kind (any scheme of the kind would do).
_CHECK_SCHEME = {"rsa": "rsa/pss-sha256", "ecdsa": "ecdsa-sha256", "ed25519": "ed25519",
                 "ed448": "ed448"}


class CredentialError(OcfError, ValueError):
    """One or more credentials are unusable; ``problems`` are "<file>: <reason>" lines."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("credentials: " + "; ".join(problems))


@dataclass(frozen=True)
class PrivateSecret:
    """``[secrets.private-NAME]``: ``file`` (relative to private/) and its passphrase."""

    file: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class TokenSecret:
    """``[secrets.token-NAME]``: ``handle`` (an RFC 7512 URI) and the token's ``pin``."""

    handle: str
    pin: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class LocalCredential:
    """One of our certificates with where its private key lives and the CAs above it."""

    path: str
    certificate: x509.Certificate
    key: PrivateKeyRef
    key_where: str  # "private/gw.key.pem" or "pkcs11:token=...;object=..."
    chain: ikecerts.LocalChain

    @property
    def spki(self) -> bytes:
        return ikecerts.spki_der(self.certificate)


@dataclass
class Credentials:
    local: list[LocalCredential] = field(default_factory=list)
    cas: list[tuple[str, x509.Certificate]] = field(default_factory=list)
    crls: list[tuple[str, x509.CertificateRevocationList]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def anchors(self) -> list[x509.Certificate]:
        """Trust anchors: the self-signed CA certificates of x509ca/."""
        return [c for _p, c in self.cas if c.issuer == c.subject]

    @property
    def intermediates(self) -> list[x509.Certificate]:
        return [c for _p, c in self.cas if c.issuer != c.subject]

    def chains(self) -> list[ikecerts.LocalChain]:
        return [c.chain for c in self.local]

    def certreq(self) -> bytes:
        """CERTREQ data for our anchors (RFC 7296 section 3.7)."""
        return ikecerts.certreq_data(self.anchors)

    def rows(self) -> list[dict]:
        """What `ocfpy certs list` shows, one row per certificate (swanctl --list-certs)."""
        out = []
        for path, cert, key_where in ([(c.path, c.certificate, c.key_where) for c in self.local]
                                      + [(p, c, "") for p, c in self.cas]):
            out.append({
                "file": path, "subject": ikecerts.dn(cert.subject),
                "issuer": ikecerts.dn(cert.issuer),
                "not_before": cert.not_valid_before_utc.isoformat(),
                "not_after": cert.not_valid_after_utc.isoformat(),
                "sans": ikecerts.subject_alt_names(cert),
                "key": str(key_kind(ikecerts.spki_der(cert))),
                "ca": cert.issuer == cert.subject or path.startswith("x509ca"),
                "private_key": key_where,
            })
        return out


def _files(base: str, folder: str, names: Sequence[str] | None) -> list[str]:
    """Relative paths: the named files (relative to the folder, or to the config directory
    when they contain a '/'), or every regular file of the folder."""
    if names is not None:
        return [n if "/" in n else os.path.join(folder, n) for n in names]
    d = os.path.join(base, folder)
    if not os.path.isdir(d):
        return []
    return sorted(os.path.join(folder, n) for n in os.listdir(d)
                  if os.path.isfile(os.path.join(d, n)) and not n.startswith("."))


def _public_of_key_file(base: str, rel: str, passphrase: bytes | None) -> bytes:
    try:
        with open(os.path.join(base, rel), "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InvalidKey(f"cannot read: {exc.strerror}") from None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, passphrase)
        else:
            key = serialization.load_der_private_key(data, passphrase)
    except TypeError:
        if passphrase is None:
            raise InvalidKey("the key is encrypted and no [secrets.private-NAME] gives its "
                             "passphrase") from None
        raise InvalidKey("a passphrase is configured but the key is not encrypted") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        if passphrase is not None:
            raise InvalidKey("wrong passphrase, or not a private key") from None
        raise InvalidKey(f"not a private key ({exc})") from None
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def _when(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def load_credentials(config_dir: str, *, now: dt.datetime, certs: Sequence[str] | None = None,
                     cacerts: Sequence[str] | None = None,
                     private_secrets: Mapping[str, PrivateSecret] | None = None,
                     token_secrets: Mapping[str, TokenSecret] | None = None,
                     dispatcher=None) -> Credentials:
    """Load and check the swanctl-style credentials under ``config_dir``.

    ``certs`` / ``cacerts``: the connection's ``certs = [...]`` / ``cacerts = [...]`` (file
    names in x509/ and x509ca/); None loads every file there. ``private_secrets`` and
    ``token_secrets`` are the ``[secrets.private-NAME]`` / ``[secrets.token-NAME]`` sections
    by NAME. ``dispatcher``: needed for token keys (they are checked by signing in the token).
    Raises CredentialError listing every problem; warnings are kept on the result."""
    private_secrets = private_secrets or {}
    token_secrets = token_secrets or {}
    problems: list[str] = []
    creds = Credentials()

    # -- CA certificates and CRLs ------------------------------------------------------------
    for rel in _files(config_dir, "x509ca", cacerts):
        try:
            loaded = ikecerts.load_certificates(os.path.join(config_dir, rel))
        except ikecerts.CertificateError as exc:
            problems.append(f"{rel}: {str(exc).split(': ', 1)[-1]}")
            continue
        for cert in loaded:
            bc = ikecerts.extension(cert, x509.BasicConstraints)
            if bc is None or not bc.ca:
                problems.append(f"{rel}: '{ikecerts.dn(cert.subject)}' is not a CA certificate "
                                "(basicConstraints cA); our own certificates go in x509/")
                continue
            if now > cert.not_valid_after_utc:
                creds.warnings.append(f"{rel}: the CA certificate '{ikecerts.dn(cert.subject)}' "
                                      f"expired on {_when(cert.not_valid_after_utc)}")
            creds.cas.append((rel, cert))
    for rel in _files(config_dir, "x509crl", None):
        try:
            for crl in ikecerts.load_crls(os.path.join(config_dir, rel)):
                creds.crls.append((rel, crl))
        except ikecerts.CertificateError as exc:
            problems.append(f"{rel}: {str(exc).split(': ', 1)[-1]}")

    # -- private keys: files, then tokens, each known by its public key ------------------------
    keys: dict[bytes, tuple[PrivateKeyRef, str]] = {}
    by_file = {s.file if "/" in s.file else os.path.join("private", s.file): s
               for s in private_secrets.values()}
    for name, secret in private_secrets.items():
        rel = secret.file if "/" in secret.file else os.path.join("private", secret.file)
        if not os.path.exists(os.path.join(config_dir, rel)):
            problems.append(f"{rel}: no such key file (named by [secrets.private-{name}])")
    for rel in _files(config_dir, "private", None):
        secret = by_file.get(rel)
        passphrase = secret.secret if secret else None
        try:
            spki = _public_of_key_file(config_dir, rel, passphrase)
        except InvalidKey as exc:
            problems.append(f"{rel}: {exc}")
            continue
        keys[spki] = (KeyFile(os.path.join(config_dir, rel), passphrase), rel)
    token_refs = [(name, Pkcs11Key(t.handle, t.pin)) for name, t in token_secrets.items()]

    # -- our certificates -----------------------------------------------------------------------
    for rel in _files(config_dir, "x509", certs):
        try:
            loaded = ikecerts.load_certificates(os.path.join(config_dir, rel))
        except ikecerts.CertificateError as exc:
            problems.append(f"{rel}: {str(exc).split(': ', 1)[-1]}")
            continue
        cert, bundled = loaded[0], loaded[1:]
        who = f"the certificate '{ikecerts.dn(cert.subject)}'"
        if now > cert.not_valid_after_utc:
            problems.append(f"{rel}: {who} expired on {_when(cert.not_valid_after_utc)}")
            continue
        if now < cert.not_valid_before_utc:
            problems.append(f"{rel}: {who} is not valid before "
                            f"{_when(cert.not_valid_before_utc)}")
            continue
        spki = ikecerts.spki_der(cert)
        found = keys.get(spki)
        token_errors: list[str] = []
        if found is None:
            found = _token_key_for(spki, token_refs, dispatcher, token_errors)
        if found is None:
            tokens = f" nor the tokens {', '.join(n for n, _ in token_refs)}" if token_refs else ""
            problems.append(f"{rel}: no private key for {who}: no file in private/{tokens} "
                            "holds its key")
            problems.extend(e for e in token_errors if e not in problems)
            continue
        key, where = found
        built = ikecerts.build_chain(cert, bundled + creds.intermediates, creds.anchors)
        if built.ok:
            chain = ikecerts.LocalChain(cert, built.chain[1:])
        else:
            chain = ikecerts.LocalChain(cert, tuple(bundled))
            creds.warnings.append(f"{rel}: no chain to a CA in x509ca/ ({built.reason}); the "
                                  "peer must know our issuer")
        creds.local.append(LocalCredential(rel, cert, key, where, chain))

    if problems:
        raise CredentialError(problems)
    return creds


def _token_key_for(spki: bytes, token_refs, dispatcher, errors: list[str]):
    """The token key whose public key is the certificate's, checked by a signature made in
    the token; why each token could not be asked goes to ``errors`` (reported only if no key
    is found: a token holding an EC key refuses an RSA scheme, and that is no problem)."""
    if not token_refs:
        return None
    if dispatcher is None:
        errors.append("token keys are configured but no dispatcher was given to check them")
        return None
    scheme = _CHECK_SCHEME[key_kind(spki).family]
    for name, ref in token_refs:
        try:
            with dispatcher.open_signer(scheme, ref) as signer:  # pairwise-checked
                if signer.public_key() == spki:
                    return ref, ref.uri
        except (InvalidKey, BackendUnavailable) as exc:
            errors.append(f"[secrets.token-{name}] {ref.uri}: {exc}")
    return None
