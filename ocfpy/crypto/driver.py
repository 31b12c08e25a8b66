"""The driver contract: what every backend (plugin, accelerator, third party) implements.

A driver is found through the ``ocfpy.drivers`` entry point group. The entry point names a
*factory*: a callable taking no arguments that returns one `Driver` or an iterable of them
(an accelerator plugin returns one driver per detected device, or none).

The contract is a capability query plus a factory (pyca/cryptography's old backend
interfaces, without the method explosion): ``offers()`` says what the driver can do,
``new_context(transform, key)`` makes the object that does it. Growth goes into the catalogue,
not into new driver methods.

Contexts are the hazardous layer: consumers never see them, they use `ocfpy.crypto.session`.
A context raises `DriverFailure` when the driver itself failed (the dispatcher then migrates
the session), `AuthenticationError` / `InvalidPublicValue` / `InvalidInput` for bad input.

Randomness is not part of the contract. The framework takes it from the kernel CSPRNG
(getrandom, through `Dispatcher.random`), which Linux already feeds from the hardware sources
(hwrng devices such as virtio-rng and TPMs, RDRAND/RDSEED). A driver's RNG could not be
admitted the way its algorithms are: a known-answer test cannot tell good random bytes from
bad ones, so routing randomness through drivers would bypass admission.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from .catalogue import Primitive, Transform


class DriverKind(IntEnum):
    """Selection preference: higher wins (FreeBSD's probe scores, in three classes)."""

    SOFTWARE = 1
    ACCELERATED = 2  # software using CPU acceleration outside the interpreter (kernel, vendor lib)
    HARDWARE = 3

    def __str__(self) -> str:
        return {1: "software", 2: "accelerated", 3: "hardware"}[self.value]


@dataclass(frozen=True, slots=True)
class Offer:
    """One algorithm a driver offers, with where it runs (for `ocfpy drivers`)."""

    keyword: str
    implementation: str = ""  # e.g. "generic-gcm-aesni (priority 800)"


@dataclass
class DeviceInfo:
    """The device behind a hardware driver (filled in by drivers/ from pyudev)."""

    sys_path: str
    pci_id: str = ""
    kernel_driver: str = ""
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class Context(ABC):
    """One keyed instance of one transform on one driver.

    Besides the synchronous methods, every context takes requests asynchronously (OCF's
    crypto_dispatch / crypto_done model): ``submit`` hands over requests, ``collect`` returns
    their completions later. A synchronous context runs each request inside ``submit`` (the
    defaults below); an *asynchronous* one (``asynchronous = True``: AF_ALG with kernel AIO,
    a device queue) puts them in flight and returns at once, so that up to ``max_depth``
    requests are in the kernel or the device together.

    - ``submit(requests)``: each request is ``(ticket, method, args)``, ``method`` the name of
      a synchronous per-packet method (``seal``, ``open``, ``encrypt``, ``decrypt``,
      ``compute``) and ``args`` its arguments. Tickets are the caller's (increasing ints).
    - ``collect(wait)``: the completions available now, ``(ticket, result, error)`` each;
      with ``wait``, blocks until at least one of the requests in flight completed (returns
      [] if none is). A request's own failure (AuthenticationError, InvalidInput) is its
      ``error``, not an exception: the other requests of the batch are unaffected.
    - ``DriverFailure`` from either means the driver failed: every request submitted and not
      yet collected is then lost *on this context*; the session resubmits them all to the
      next driver (nothing lost), and never collects from this context again (nothing twice).
    - Completions may come in any order; the session hands them out in ticket order.
    """

    transform: Transform
    asynchronous = False
    max_depth = 1

    def submit(self, requests: Sequence[tuple[int, str, tuple]]) -> None:
        """Synchronous default: run each request now, keep its completion for collect()."""
        from .errors import DriverFailure, OcfError

        try:
            done = self._completions
        except AttributeError:
            done = self._completions = []
        for ticket, method, args in requests:
            try:
                done.append((ticket, getattr(self, method)(*args), None))
            except DriverFailure:
                raise
            except OcfError as exc:  # this request's fault (bad tag, bad input), reported
                done.append((ticket, None, exc))

    def collect(self, wait: bool = True) -> list[tuple[int, object, BaseException | None]]:
        done = getattr(self, "_completions", None)
        if not done:
            return []
        self._completions = []
        return done

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release driver resources (sockets, device handles)."""


class AeadContext(Context):
    """AEAD with IKE/ESP keying: key = cipher key || salt, nonce = salt || 8-byte IV."""

    @abstractmethod
    def seal(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """Return ciphertext || ICV."""

    def one_shot(self) -> tuple[Callable[[bytes, bytes, bytes], bytes],
                                Callable[[bytes, bytes, bytes], bytes], bytes] | None:
        """(encrypt(nonce, pt, aad), decrypt(nonce, ct, aad), salt) if seal() and open() are
        exactly those calls with nonce = salt + iv for an 8-byte IV, with no driver state that can
        fail on its own (a software call). The session then calls them directly and falls back
        to seal()/open() for anything they raise. Devices that can fail return None, so that
        every operation goes through seal()/open() and can migrate."""
        return None

    @abstractmethod
    def open(self, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Verify and decrypt ciphertext || ICV; raise AuthenticationError on a bad tag."""

    def seal_batch(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bytes]:
        seal = self.seal
        return [seal(iv, pt, aad) for iv, pt, aad in items]

    def open_batch(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bytes | None]:
        """Like open() per item; a failed tag yields None for that item, not an exception."""
        from .errors import AuthenticationError

        out: list[bytes | None] = []
        for iv, ct, aad in items:
            try:
                out.append(self.open(iv, ct, aad))
            except AuthenticationError:
                out.append(None)
        return out


class CipherContext(Context):
    """Unauthenticated cipher (AES-CBC, AES-CTR). CTR keys carry the 4-byte RFC 3686 nonce."""

    @abstractmethod
    def encrypt(self, iv: bytes, data: bytes) -> bytes: ...

    @abstractmethod
    def decrypt(self, iv: bytes, data: bytes) -> bytes: ...

    def encrypt_batch(self, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        enc = self.encrypt
        return [enc(iv, d) for iv, d in items]

    def decrypt_batch(self, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        dec = self.decrypt
        return [dec(iv, d) for iv, d in items]


class MacContext(Context):
    """Integrity transform: a keyed MAC truncated to the transform's ICV size."""

    @abstractmethod
    def compute(self, data: bytes) -> bytes:
        """The truncated ICV."""

    def verify(self, data: bytes, icv: bytes) -> None:
        import hmac

        from .errors import AuthenticationError

        if not hmac.compare_digest(self.compute(data), icv):
            raise AuthenticationError(f"{self.transform.keyword}: ICV mismatch")

    def compute_batch(self, items: Sequence[bytes]) -> list[bytes]:
        compute = self.compute
        return [compute(d) for d in items]


class PrfContext(Context):
    """A keyed PRF (RFC 7296 section 2.13). prf+ lives in the session, built on prf()."""

    @abstractmethod
    def prf(self, data: bytes) -> bytes: ...


class KeyExchangeContext(Context):
    """One side of one key exchange. The key given to new_context, if any, is the private value."""

    @abstractmethod
    def public_value(self) -> bytes:
        """Our public value in KE payload encoding (RFC 7296 3.4, RFC 5903 7, RFC 8031 2)."""

    @abstractmethod
    def shared_secret(self, peer_public: bytes) -> bytes:
        """Validate the peer's value (RFC 6989) and return the shared secret g^ir."""

    def private_value(self) -> bytes | None:
        """The private value, so the dispatcher can move this exchange to another driver.

        Return None where it cannot leave the device; such a session cannot migrate once its
        public value was sent.
        """
        return None


class HashContext(Context):
    @abstractmethod
    def digest(self, data: bytes) -> bytes: ...


CONTEXT_CLASS: dict[Primitive, type[Context]] = {
    Primitive.AEAD: AeadContext,
    Primitive.CIPHER: CipherContext,
    Primitive.INTEG: MacContext,
    Primitive.PRF: PrfContext,
    Primitive.KE: KeyExchangeContext,
    Primitive.HASH: HashContext,
}


class Driver(ABC):
    """A crypto driver. Subclass it, set name/kind/description, implement the three methods."""

    name: str = ""
    kind: DriverKind = DriverKind.SOFTWARE
    # Within a kind, the higher priority wins (FreeBSD's probe score inside its class): e.g.
    # OpenSSL in-process beats the kernel's CPU implementations behind two system calls.
    priority: int = 0
    description: str = ""
    device: DeviceInfo | None = None

    def probe(self) -> None:  # noqa: B027 - optional hook
        """Check that the driver can run here; raise DriverUnavailable(reason) if not."""

    @abstractmethod
    def offers(self) -> Iterable[Offer]:
        """The algorithms this driver claims. Each is known-answer tested before admission."""

    @abstractmethod
    def new_context(self, transform: Transform, key: bytes | None) -> Context:
        """A context for one transform. Raise Unsupported if the transform is not offered."""

    def watch(self, on_gone: Callable[[str], None]) -> None:  # noqa: B027 - optional hook
        """Call on_gone(reason) when the driver's device disappears (hot-unplug)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release global resources."""


DriverFactory = Callable[[], "Driver | Iterable[Driver]"]


# -- signatures (ocfpy.crypto.signatures; the context for a SIGNATURE scheme depends on the key:
# a private key reference opens a SignContext, a signatures.PublicKey a VerifyContext) --------
class SignContext(Context):
    """Signs with one private key, which may never leave the driver (a token, a TPM)."""

    @abstractmethod
    def sign(self, data: bytes) -> bytes:
        """The signature over ``data`` (the driver hashes it as the scheme says), in the
        scheme's encoding: DER or r || s for ECDSA, the raw value for RSA and EdDSA."""

    @abstractmethod
    def public_key(self) -> bytes:
        """The matching public key as DER SubjectPublicKeyInfo (to pick the certificate
        and for the pairwise consistency check)."""


class VerifyContext(Context):
    """Verifies signatures made with one public key."""

    @abstractmethod
    def verify(self, data: bytes, signature: bytes) -> None:
        """Return if ``signature`` is valid over ``data``; raise InvalidSignature if not."""
