"""Public-key authentication as IKE_AUTH uses it (RFC 7296 2.15, 3.6-3.8; RFC 7427).

The sans-I/O core gets its certificates, keys and CRLs already loaded (ocfpy.iked.credentials
reads the swanctl-style folders) as one `CertStore`, and the wall-clock time from a callable
the daemon injects (certificate validity is calendar time; the engine's ``now`` is monotonic
and ocfpy.ike may not read a clock). Signing happens in framework sessions
(Dispatcher.open_signer), opened once per (key, scheme) and kept: the pairwise check at open
costs a signature, and a token key should be logged into once, not per IKE SA.

`AuthState` is what one IKE SA learns and decides about public-key authentication: the peer's
SIGNATURE_HASH_ALGORITHMS and CERTREQ, both sides' methods, the peer's certificate subject
(what ``sa list`` shows), and what revocation checking did.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography import x509

from ocfpy.crypto.errors import BackendUnavailable, InvalidKey
from ocfpy.ike import auth_sig
from ocfpy.ike import certs as ikecerts
from ocfpy.ike.constants import AuthMethod, NotifyType
from ocfpy.ike.errors import IkeProtocolError

METHOD_NAMES = {
    AuthMethod.RSA_SIG: "rsa-sig", AuthMethod.SHARED_KEY_MIC: "psk",
    AuthMethod.ECDSA_256: "ecdsa-256", AuthMethod.ECDSA_384: "ecdsa-384",
    AuthMethod.ECDSA_521: "ecdsa-521", AuthMethod.DIGITAL_SIGNATURE: "digital-signature",
}


def method_text(method: int | None, scheme: str | None = None) -> str | None:
    """"psk", "ecdsa-256", "digital-signature (rsa/pss-sha256)": what ``sa list`` shows."""
    if method is None:
        return None
    text = METHOD_NAMES.get(method, f"method {method}")
    return f"{text} ({scheme})" if scheme and method == AuthMethod.DIGITAL_SIGNATURE else text


def _fail(reason: str) -> IkeProtocolError:
    return IkeProtocolError(NotifyType.AUTHENTICATION_FAILED, reason)


@dataclass(frozen=True)
class LocalCert:
    """One of our certificates: ``path`` as configured (x509/gw.pem), the chain we send, the
    private key reference (signatures.KeyFile / Pkcs11Key) and where it lives, in words."""

    path: str
    chain: ikecerts.LocalChain
    key: object
    where: str

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain.certificate

    @functools.cached_property
    def spki(self) -> bytes:
        # encoded once: every IKE_AUTH we sign picks a scheme by our key's kind
        return ikecerts.spki_der(self.chain.certificate)

    @functools.cached_property
    def kind(self) -> auth_sig.KeyKind:
        return auth_sig.key_kind(self.spki)


def _named(path: str, names: Sequence[str]) -> bool:
    """swanctl's certs = [...] / cacerts = [...] name files in x509/ or x509ca/; accept the
    bare file name or the path below the configuration directory."""
    base = path.rsplit("/", 1)[-1]
    return any(n == path or n == base for n in names)


@dataclass
class CertStore:
    local: list[LocalCert] = field(default_factory=list)
    cas: list[tuple[str, x509.Certificate]] = field(default_factory=list)
    crls: list[x509.CertificateRevocationList] = field(default_factory=list)
    _signers: dict = field(default_factory=dict, repr=False)
    # answers that depend only on the store (never changed once loaded: a reload builds a
    # new one) and the connection's names: worked out on the first SA, not on every one
    _memo: dict = field(default_factory=dict, repr=False)

    # -- what a connection may use -------------------------------------------------------------
    def local_for(self, names: Sequence[str]) -> list[LocalCert]:
        """Our certificates for a connection's ``local.certs`` (empty: all of them)."""
        key = ("local", tuple(names))
        if key not in self._memo:
            self._memo[key] = [c for c in self.local if not names or _named(c.path, names)]
        return list(self._memo[key])

    def anchors_for(self, names: Sequence[str]) -> list[x509.Certificate]:
        """Trust anchors for a connection's ``remote.cacerts`` (empty: every self-signed CA
        certificate of x509ca/)."""
        key = ("anchors", tuple(names))
        if key not in self._memo:
            self._memo[key] = [c for p, c in self.cas if c.issuer == c.subject
                               and (not names or _named(p, names))]
        return list(self._memo[key])

    def holds_identity(self, cred: LocalCert, id_type: int, data: bytes) -> bool:
        """Whether our certificate ``cred`` holds the identity we are configured with
        (certs.identity_mismatch, asked once per certificate and identity)."""
        key = ("id", cred.path, id_type, data)
        if key not in self._memo:
            self._memo[key] = ikecerts.identity_mismatch(cred.certificate, id_type, data) is None
        return self._memo[key]

    def ca_hashes(self) -> set[bytes]:
        """CERTREQ hashes (RFC 7296 3.7) of the CAs in our own chains: the only ones a
        peer's CERTREQ can usefully name."""
        return {ikecerts.ca_key_hash(ca) for c in self.local for ca in c.chain.cas}

    @property
    def intermediates(self) -> list[x509.Certificate]:
        """CA certificates below a root: they help build a peer's chain when it sends only
        its own certificate (RFC 7296 3.6 does not oblige it to send intermediates)."""
        return [c for _p, c in self.cas if c.issuer != c.subject]

    # -- signing -------------------------------------------------------------------------------
    def signer(self, cred: LocalCert, scheme, dispatcher):
        """The SignSession for (our key, scheme), opened on first use and kept."""
        key = (cred.path, scheme.keyword)
        s = self._signers.get(key)
        if s is None:
            try:
                s = dispatcher.open_signer(scheme, cred.key)
            except (InvalidKey, BackendUnavailable) as exc:
                raise _fail(f"cannot sign with {cred.where} ({scheme.name}): {exc}") from None
            self._signers[key] = s
        return s

    def open_signers(self, dispatcher) -> list[str]:
        """Open each key's signer for the scheme we would most likely use (method 14, the
        first of our preferences that fits), so a key that cannot sign shows at start; the
        problems, one line each (the key stays configured: another scheme may work)."""
        problems = []
        for cred in self.local:
            kind = cred.kind
            try:
                _method, scheme = auth_sig.choose_scheme(kind, auth_sig.DEFAULT_HASHES)
                self.signer(cred, scheme, dispatcher)
            except IkeProtocolError as exc:
                problems.append(f"{cred.path}: {exc.reason}")
        return problems

    def close(self) -> None:
        for s in self._signers.values():
            s.close()
        self._signers.clear()


@dataclass(slots=True)
class AuthState:
    """Per IKE SA: what public-key authentication learnt and chose."""

    peer_hashes: tuple[int, ...] | None = None  # SIGNATURE_HASH_ALGORITHMS, None: not sent
    peer_certreq: list[bytes] = field(default_factory=list)  # CA key hashes it asked for
    local_method: int | None = None
    local_scheme: str | None = None
    remote_method: int | None = None
    remote_scheme: str | None = None
    peer_subject: str | None = None  # the peer's end-entity certificate, RFC 4514
    local_subject: str | None = None
    signer: str | None = None  # the driver that made our signature (openssl, pkcs11...)
    revocation: str | None = None

    def as_dict(self) -> dict:
        return {
            "local": method_text(self.local_method, self.local_scheme),
            "remote": method_text(self.remote_method, self.remote_scheme),
            "local_cert": self.local_subject,
            "signed_by": self.signer,
            "peer_cert": self.peer_subject,
            "revocation": self.revocation,
        }


def sign(store: CertStore, cred: LocalCert, peer_hashes, dispatcher, octets: bytes
         ) -> tuple[int, str, bytes, str]:
    """(AUTH method, scheme keyword, AUTH data, the driver that signed) over ``octets`` with
    our key (RFC 7427 4: method 14 when the peer announced hashes, else the key's own)."""
    method, scheme = auth_sig.choose_scheme(cred.kind, peer_hashes)
    signer = store.signer(cred, scheme, dispatcher)
    data = auth_sig.build_auth(method, scheme, signer, octets)
    return method, scheme.keyword, data, getattr(signer, "driver", "")


def verify_peer(store: CertStore, cert_payloads: Sequence[bytes], auth_method: int,
                auth_data: bytes, octets: bytes, *, cacerts: Sequence[str],
                signatures: Sequence[str] | None, peer_id: tuple[int, bytes], id_label: str,
                now: dt.datetime, dispatcher, max_certs: int = ikecerts.MAX_PEER_CERTS,
                max_verifications: int = ikecerts.MAX_VERIFICATIONS,
                ) -> tuple[ikecerts.Validation, str]:
    """Check a peer that authenticates with a signature: its chain to our anchors at ``now``,
    its identity in the certificate, then the AUTH signature with the certificate's key.
    Returns (the validation, the scheme keyword); raises AUTHENTICATION_FAILED with a
    reason in words."""
    if auth_method == AuthMethod.SHARED_KEY_MIC:
        raise _fail("the peer authenticates with a pre-shared key; we expect a signature "
                    "with a certificate (remote auth = \"pubkey\")")
    if not cert_payloads:
        raise _fail("the peer sent no certificate (CERT payload, X.509 Certificate - "
                    "Signature); we do not keep peer certificates locally")
    if len(cert_payloads) > max_certs:  # before parsing any: each costs a DER parse
        raise _fail(f"the peer sent {len(cert_payloads)} certificates; at most {max_certs} "
                    "are accepted (max_peer_certs)")
    try:
        ee, *rest = [x509.load_der_x509_certificate(d) for d in cert_payloads]
    except ValueError as exc:
        raise _fail(f"a CERT payload of the peer is not a DER X.509 certificate ({exc})") from None
    anchors = store.anchors_for(cacerts)
    if not anchors:
        raise _fail("no trust anchor configured (x509ca/ holds no self-signed CA certificate"
                    + (f" named by cacerts = {list(cacerts)}" if cacerts else "") + ")")
    v = ikecerts.validate_chain(ee, [*rest, *store.intermediates], anchors, now=now,
                                crls=store.crls, peer_id=peer_id, id_label=id_label,
                                max_verifications=max_verifications)
    if not v:
        raise _fail(v.reason)
    scheme = auth_sig.verify_auth(auth_method, auth_data, octets, ikecerts.spki_der(ee),
                                  dispatcher, accepted=signatures or None)
    return v, scheme.keyword


__all__ = ["AuthState", "CertStore", "LocalCert", "method_text", "sign", "verify_peer"]

WallClock = Callable[[], dt.datetime]
