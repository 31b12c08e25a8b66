"""PKCS#11 driver: signatures with private keys that stay in a token (HSM, TPM through its
PKCS#11 module, smart card, SoftHSM2), through python-pkcs11.

Registered as the ``pkcs11`` entry point of ``ocfpy.drivers``. The module (shared library) is
``$OCFPY_PKCS11_MODULE`` or the first of the usual SoftHSM2 / p11-kit paths that exists;
`probe` says which path it tried and why it failed. Keys are named by RFC 7512 URIs
(`ocfpy.crypto.signatures.Pkcs11Key`) with the PIN from configuration, never from the URI.

The private key is used only through C_Sign: the process never sees its value (a key created
with CKA_SENSITIVE=true / CKA_EXTRACTABLE=false cannot give it, tests/unit/test_pkcs11.py).
``offers()`` is what the present, initialised tokens' mechanisms allow:

* CKM_SHA*_RSA_PKCS -> rsa-sha*; CKM_SHA*_RSA_PKCS_PSS -> rsa/pss-sha* (MGF1 with the same
  hash, salt = hash length, RFC 7427 / RFC 8247);
* CKM_ECDSA -> every ECDSA scheme: we hash (the digest is not secret) and the token signs
  the digest; its r || s is what RFC 4754 methods 9-11 carry, and is DER-encoded for
  RFC 7427's method 14 (SoftHSM2 has no CKM_ECDSA_SHA256, so this is the portable way);
* CKM_EDDSA -> ed25519/ed448 (pure EdDSA, RFC 8032) where a token has it (SoftHSM2 2.6.1 as
  Debian 12 builds it does, with CKK_EC_EDWARDS keys).

The driver does not verify (a token gains nothing there): public keys are refused with
Reason.KEY_STORE and the dispatcher verifies on a software driver, so this driver's signatures
are checked by open_signer's pairwise test and not by the admission KATs, whose keys cannot be
put into a token without its PIN.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Iterable

from ocfpy.crypto.catalogue import Primitive, Transform
from ocfpy.crypto.catalogue import get as get_transform
from ocfpy.crypto.driver import Context, Driver, DriverKind, Offer, SignContext
from ocfpy.crypto.errors import (
    DriverFailure,
    DriverUnavailable,
    InvalidKey,
    Reason,
    Unsupported,
)
from ocfpy.crypto.signatures import Pkcs11Key, SignatureScheme, all_schemes

from .uri import Pkcs11Uri, parse

log = logging.getLogger(__name__)

__all__ = ["Pkcs11Driver", "MODULE_CANDIDATES"]

MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so",
)

_RSA = {"sha1": "SHA1_RSA_PKCS", "sha256": "SHA256_RSA_PKCS", "sha384": "SHA384_RSA_PKCS",
        "sha512": "SHA512_RSA_PKCS"}
_EC_PARAMS = {  # DER OID of the named curve (RFC 5480 section 2.1.1.1)
    bytes.fromhex("06082a8648ce3d030107"): "secp256r1",
    bytes.fromhex("06052b81040022"): "secp384r1",
    bytes.fromhex("06052b81040023"): "secp521r1",
}
_EDWARDS_PARAMS = {  # RFC 8410 OIDs, or the PrintableString form PKCS#11 3.0 also allows
    bytes.fromhex("06032b6570"): "ed25519", bytes.fromhex("06032b6571"): "ed448",
    b"\x13\x0cedwards25519": "ed25519", b"\x13\x0aedwards448": "ed448",
}
_TOKEN_INITIALIZED = 0x400  # CKF_TOKEN_INITIALIZED
_LOGIN_REQUIRED = 0x4  # CKF_LOGIN_REQUIRED


def _mechanism_for(scheme: SignatureScheme) -> str:
    if scheme.family == "rsa":
        return _RSA[scheme.digest]  # type: ignore[index]
    if scheme.family == "rsa-pss":
        return _RSA[scheme.digest] + "_PSS"  # type: ignore[index]
    if scheme.family == "ecdsa":
        return "ECDSA"
    return "EDDSA"


def _module_path() -> tuple[str, list[str]]:
    explicit = os.environ.get("OCFPY_PKCS11_MODULE")
    if explicit:
        return explicit, [explicit]
    for path in MODULE_CANDIDATES:
        if os.path.exists(path):
            return path, list(MODULE_CANDIDATES)
    return "", list(MODULE_CANDIDATES)


class Pkcs11Driver(Driver):
    name = "pkcs11"
    kind = DriverKind.HARDWARE
    priority = 10

    def __init__(self) -> None:
        self._module, self._tried = _module_path()
        self._lib = None
        self._pkcs11 = None
        self._sessions: dict[bytes, object] = {}  # token serial -> logged-in session
        self._pins: dict[bytes, bytes] = {}  # token serial -> SHA-256 of the PIN it used
        self._lock = threading.RLock()
        self.description = f"PKCS#11 module {self._module or '(none found)'}"

    # -- discovery ---------------------------------------------------------------------------
    def probe(self) -> None:
        try:
            import pkcs11
        except ImportError as exc:
            raise DriverUnavailable(f"python-pkcs11 is not installed ({exc}); "
                                    "pip install 'ocfpy[pkcs11]'") from None
        if not self._module:
            raise DriverUnavailable("no PKCS#11 module: tried " + ", ".join(self._tried)
                                    + " (set OCFPY_PKCS11_MODULE; Debian: apt install softhsm2)")
        if not os.path.exists(self._module):
            raise DriverUnavailable(f"PKCS#11 module {self._module} does not exist "
                                    "(OCFPY_PKCS11_MODULE)")
        try:
            self._lib = pkcs11.lib(self._module)
        except Exception as exc:  # noqa: BLE001 - dlopen and C_Initialize errors alike
            raise DriverUnavailable(f"PKCS#11 module {self._module} failed to load: "
                                    f"{type(exc).__name__}: {exc}") from None
        self._pkcs11 = pkcs11
        tokens = self._tokens()
        if not tokens:
            raise DriverUnavailable(f"PKCS#11 module {self._module} has no initialised token "
                                    "(SoftHSM2: softhsm2-util --init-token --free --label L)")
        labels = ", ".join(repr(t.label) for _s, t in tokens)
        self.description = (f"PKCS#11 module {self._module} "
                            f"({self._lib.manufacturer_id.strip()}), tokens: {labels}")

    def _tokens(self) -> list:
        out = []
        for slot in self._lib.get_slots(token_present=True):  # type: ignore[union-attr]
            token = slot.get_token()
            if token.flags & _TOKEN_INITIALIZED:
                out.append((slot, token))
        return out

    def offers(self) -> Iterable[Offer]:
        if self._lib is None:
            return []
        mech = self._pkcs11.Mechanism  # type: ignore[union-attr]
        by_token: dict[str, list[str]] = {}
        for slot, token in self._tokens():
            names = {m.name for m in slot.get_mechanisms() if isinstance(m, mech)}
            for scheme in all_schemes():
                if _mechanism_for(scheme) in names:
                    by_token.setdefault(scheme.keyword, []).append(token.label)
        return [Offer(k, f"CKM_{_mechanism_for(get_transform(k))} on token(s) "
                         f"{', '.join(repr(t) for t in labels)}")  # type: ignore[arg-type]
                for k, labels in by_token.items()]

    # -- contexts ----------------------------------------------------------------------------
    def new_context(self, transform: Transform, key) -> Context:
        scheme = get_transform(transform)
        if scheme.primitive is not Primitive.SIGNATURE:
            raise Unsupported(scheme.keyword, Reason.NOT_OFFERED)
        if not isinstance(key, Pkcs11Key):
            raise Unsupported(scheme.keyword, Reason.KEY_STORE,
                              "the pkcs11 driver signs with keys in tokens (pkcs11: URIs) only")
        if self._lib is None:
            raise DriverFailure("the PKCS#11 module is not loaded")
        return Pkcs11Signer(self, scheme, key)  # type: ignore[arg-type]

    def _token_for(self, uri: Pkcs11Uri):
        if uri.module_path and os.path.realpath(uri.module_path) != os.path.realpath(self._module):
            raise InvalidKey(f"{uri.describe()} names module {uri.module_path}, but this process "
                             f"uses {self._module} (set OCFPY_PKCS11_MODULE)")
        matches = []
        for slot, token in self._tokens():
            if uri.token is not None and token.label != uri.token:
                continue
            if uri.serial is not None and token.serial.decode(errors="replace").strip() != uri.serial:
                continue
            if uri.manufacturer is not None and token.manufacturer_id.strip() != uri.manufacturer:
                continue
            if uri.model is not None and token.model.strip() != uri.model:
                continue
            if uri.slot_id is not None and slot.slot_id != uri.slot_id:
                continue
            matches.append(token)
        if not matches:
            raise InvalidKey(f"no initialised token matches {uri.describe()}")
        if len(matches) > 1:
            raise InvalidKey(f"{len(matches)} tokens match {uri.describe()}: add token= or serial=")
        return matches[0]

    def _session(self, token, pin: str | None):
        """One logged-in session per token, shared by its contexts: PKCS#11 logs in per
        application, so a second C_Login fails (CKR_USER_ALREADY_LOGGED_IN)."""
        with self._lock:
            if pin is None and token.flags & _LOGIN_REQUIRED:
                raise InvalidKey(f"token {token.label!r} needs a PIN: set it in "
                                 f"[secrets.token-NAME]")
            # The session is shared, so a key reference with another PIN would ride on an
            # earlier login: compare with the PIN that logged in (a digest of it), so that a
            # wrong PIN in the configuration is an error whichever key is opened first.
            digest = hashlib.sha256((pin or "").encode()).digest()
            session = self._sessions.get(token.serial)
            if session is not None and not hmac.compare_digest(digest,
                                                               self._pins[token.serial]):
                raise InvalidKey(f"token {token.label!r}: wrong PIN (not the one this process "
                                 "logged in with)")
            if session is None:
                try:
                    session = token.open(user_pin=pin) if pin is not None else token.open()
                except self._pkcs11.exceptions.PinIncorrect:  # type: ignore[union-attr]
                    raise InvalidKey(f"token {token.label!r}: wrong PIN") from None
                except self._pkcs11.exceptions.PinLocked:  # type: ignore[union-attr]
                    raise InvalidKey(f"token {token.label!r}: the PIN is locked") from None
                self._sessions[token.serial] = session
                self._pins[token.serial] = digest
            return session

    def _forget(self, token_serial: bytes) -> None:
        with self._lock:
            session = self._sessions.pop(token_serial, None)
            self._pins.pop(token_serial, None)
        if session is not None:
            try:
                session.close()
            except Exception:  # noqa: BLE001 - the token may be gone already
                log.debug("closing a PKCS#11 session failed", exc_info=True)

    def close(self) -> None:
        for serial in list(self._sessions):
            self._forget(serial)


class Pkcs11Signer(SignContext):
    def __init__(self, driver: Pkcs11Driver, scheme: SignatureScheme, key: Pkcs11Key) -> None:
        self.transform = scheme
        self._driver = driver
        p11 = driver._pkcs11
        self._p11 = p11
        uri = parse(key.uri)
        token = driver._token_for(uri)
        self._serial = token.serial
        self._where = f"{uri.describe()} (token {token.label!r})"
        session = driver._session(token, key.pin)
        attrs = {p11.Attribute.CLASS: p11.ObjectClass.PRIVATE_KEY}
        if uri.object is not None:
            attrs[p11.Attribute.LABEL] = uri.object
        if uri.id is not None:
            attrs[p11.Attribute.ID] = uri.id
        with driver._lock:
            found = list(session.get_objects(attrs))
        if not found:
            raise InvalidKey(f"no private key {self._where}")
        if len(found) > 1:
            raise InvalidKey(f"{len(found)} private keys match {self._where}: add id=")
        self._key = found[0]
        self._spki = self._public_key(session, attrs)
        self._mechanism = getattr(p11.Mechanism, _mechanism_for(scheme))
        self._param = None
        if scheme.family == "rsa-pss":
            h = scheme.digest.upper()  # type: ignore[union-attr]
            self._param = (getattr(p11.Mechanism, h), getattr(p11.MGF, h), scheme.salt_size)

    def _public_key(self, session, attrs) -> bytes:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        p11, s = self._p11, self.transform
        kt = self._key.key_type
        if kt == p11.KeyType.RSA:
            if s.family not in ("rsa", "rsa-pss"):
                raise InvalidKey(f"{s}: {self._where} is an RSA key")
            n = int.from_bytes(self._key[p11.Attribute.MODULUS], "big")
            e = int.from_bytes(self._key[p11.Attribute.PUBLIC_EXPONENT], "big")
            public = rsa.RSAPublicNumbers(e, n).public_key()
        elif kt == p11.KeyType.EC:
            curve = _EC_PARAMS.get(bytes(self._key[p11.Attribute.EC_PARAMS]))
            if s.family != "ecdsa":
                raise InvalidKey(f"{s}: {self._where} is an EC key")
            if curve is None:
                raise InvalidKey(f"{self._where}: a curve other than P-256/384/521")
            if s.curve is not None and s.curve != curve:
                raise InvalidKey(f"{s}: needs a key on {s.curve}, {self._where} is on {curve}")
            public = ec.EllipticCurvePublicKey.from_encoded_point(
                getattr(ec, curve.upper())(), self._public_point(session, attrs))
        elif kt == getattr(p11.KeyType, "EC_EDWARDS", None):
            curve = _EDWARDS_PARAMS.get(bytes(self._key[p11.Attribute.EC_PARAMS]))
            if s.family != "eddsa" or s.keyword != curve:
                raise InvalidKey(f"{s}: {self._where} is an {curve or 'Edwards'} key")
            point = self._public_point(session, attrs)
            public = serialization.load_der_public_key(
                bytes.fromhex("302a300506032b6570032100" if curve == "ed25519"
                              else "3043300506032b6571033a00") + point)
        else:
            raise InvalidKey(f"{s}: {self._where} is a key of type {kt!r}")
        return public.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)

    def _public_point(self, session, attrs) -> bytes:
        """CKA_EC_POINT of the public key object beside the private key (same label / id):
        the private key object does not carry it."""
        p11 = self._p11
        pub_attrs = dict(attrs)
        pub_attrs[p11.Attribute.CLASS] = p11.ObjectClass.PUBLIC_KEY
        with self._driver._lock:
            pubs = list(session.get_objects(pub_attrs))
        if len(pubs) != 1:
            raise InvalidKey(f"{self._where}: no single public key object beside the private "
                             "key (needed for its public point)")
        point = bytes(pubs[0][p11.Attribute.EC_POINT])
        if len(point) > 2 and point[0] == 0x04 and point[1] == len(point) - 2:
            point = point[2:]  # DER OCTET STRING around the point (PKCS#11 2.40 2.3.3)
        return point

    def sign(self, data: bytes) -> bytes:
        s = self.transform
        try:
            with self._driver._lock:
                if s.family == "ecdsa":
                    digest = hashlib.new(s.digest, data).digest()  # type: ignore[arg-type]
                    raw = self._key.sign(digest, mechanism=self._mechanism)
                else:
                    return self._key.sign(data, mechanism=self._mechanism,
                                          mechanism_param=self._param)
        except self._p11.exceptions.PKCS11Error as exc:
            # a token pulled, a session gone, a device error: the dispatcher may move the
            # session (to another driver that can reach the key, if any)
            self._driver._forget(self._serial)
            raise DriverFailure(f"{self._where}: {type(exc).__name__} {exc}") from None
        if s.encoding == "der":
            from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

            n = len(raw) // 2
            return encode_dss_signature(int.from_bytes(raw[:n], "big"),
                                        int.from_bytes(raw[n:], "big"))
        return raw

    def public_key(self) -> bytes:
        return self._spki

    def close(self) -> None:
        self._key = None
