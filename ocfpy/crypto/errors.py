"""Errors of the framework. Each carries what a user needs to act on it.

Consumers see: UnknownAlgorithm, BackendUnavailable, AuthenticationError, InvalidPublicValue,
InvalidKey, InvalidInput. Drivers raise: Unsupported (with a Reason), DriverFailure (the
dispatcher migrates the session), DriverUnavailable (at probe time).
"""

from __future__ import annotations

from enum import StrEnum


class OcfError(Exception):
    """Base of every ocfpy error."""


class UnknownAlgorithm(OcfError, ValueError):
    def __init__(self, name: str, known: list[str]):
        self.name = name
        close = [k for k in known if k.startswith(str(name)[:4].lower())][:6]
        hint = f"; similar: {', '.join(close)}" if close else ""
        super().__init__(
            f"unknown algorithm {name!r}: not a strongSwan proposal keyword ocfpy knows{hint}"
            " (see docs/algorithms.md or `ocfpy algorithms`)"
        )


class Reason(StrEnum):
    """Why a driver cannot serve something (pyca/cryptography's _Reasons idea)."""

    NOT_OFFERED = "not offered by this driver"
    NOT_IN_KERNEL = "not available in the running kernel"
    DEVICE_GONE = "the device is gone"
    QUARANTINED = "failed its known-answer test"
    DRIVER_FAILED = "the driver failed at run time"
    KEY_SIZE = "key size not supported"
    KEY_STORE = "the key is not where this driver can reach it"


class Unsupported(OcfError):
    def __init__(self, what: str, reason: Reason, detail: str = ""):
        self.what = what
        self.reason = reason
        self.detail = detail
        super().__init__(f"{what}: {reason.value}" + (f" ({detail})" if detail else ""))


class DriverUnavailable(OcfError):
    """Raised by Driver.probe(): the driver cannot run on this machine. The message says why."""


class DriverFailure(OcfError):
    """A driver could not complete a request it accepted (device error, vanished device).

    The dispatcher catches it, moves the session to the next driver and retries the request,
    so the consumer never sees it unless no driver is left.
    """


class BackendUnavailable(OcfError):
    """A forced backend (or override) cannot serve an algorithm, or no driver can."""

    def __init__(self, backend: str | None, algorithm: str, why: str, alternatives: list[str]):
        self.backend = backend
        self.algorithm = algorithm
        self.why = why
        self.alternatives = alternatives
        alt = ", ".join(alternatives) if alternatives else "none"
        who = f"backend {backend!r}" if backend else "no active driver"
        super().__init__(
            f"{who} cannot serve {algorithm}: {why}; drivers that can: {alt}"
            " (run `ocfpy drivers` for the full list)"
        )


class AuthenticationError(OcfError):
    """An AEAD tag or MAC did not verify. Nothing of the plaintext is returned."""


class InvalidPublicValue(OcfError, ValueError):
    """A peer's key-exchange public value failed validation (RFC 6989, RFC 7748 section 6)."""


class InvalidKey(OcfError, ValueError):
    """Key material of the wrong length or form for the algorithm."""


class InvalidInput(OcfError, ValueError):
    """Input of the wrong shape for the operation (IV length, block alignment, empty AEAD)."""


class InvalidSignature(OcfError):
    """A signature did not verify with the given public key (or was malformed for the scheme).
    Like AuthenticationError, it says nothing about why beyond the scheme."""
