"""MODP Diffie-Hellman computed by the kernel: keyctl(KEYCTL_DH_COMPUTE).

The kernel offers no DH through AF_ALG. keyctl(2) does: three "user" keys hold the private
value, the prime and the base (big-endian), and KEYCTL_DH_COMPUTE returns
``base ^ private mod prime`` (keyctl_dh_compute(3), CONFIG_KEY_DH_OPERATIONS). With base 2
that is our public value; with the peer's public value as base it is the shared secret.

Neither glibc nor Python wraps add_key/keyctl, so this calls the syscalls by number through
ctypes. Each computation adds its keys to the process keyring and invalidates them at once,
so no secret outlives the call in the kernel and a forked child inherits nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import itertools
import os
import platform

from ocfpy.crypto.errors import DriverFailure, DriverUnavailable, InvalidInput
from ocfpy.crypto.modp import MODP_GROUPS

KEYCTL_INVALIDATE = 21
KEYCTL_DH_COMPUTE = 23
KEY_SPEC_PROCESS_KEYRING = -2

# (add_key, keyctl) syscall numbers per architecture (asm/unistd*.h).
_SYSCALLS = {
    "x86_64": (248, 250),
    "aarch64": (217, 219),
    "riscv64": (217, 219),
    "ppc64le": (269, 271),
    "s390x": (278, 280),
    "i686": (286, 288),
}


class KeyctlUnavailable(DriverUnavailable):
    """The kernel cannot compute DH through keyctl. Says why."""


class _DhParams(ctypes.Structure):
    _fields_ = [("private", ctypes.c_int32), ("prime", ctypes.c_int32),
                ("base", ctypes.c_int32)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long
_counter = itertools.count()


def _numbers() -> tuple[int, int]:
    machine = platform.machine()
    try:
        return _SYSCALLS[machine]
    except KeyError:
        raise KeyctlUnavailable(f"keyctl syscall numbers unknown for {machine}") from None


def _add_user_key(description: bytes, payload: bytes) -> int:
    add_key, _ = _numbers()
    serial = _libc.syscall(ctypes.c_long(add_key), ctypes.c_char_p(b"user"),
                           ctypes.c_char_p(description), ctypes.c_char_p(payload),
                           ctypes.c_size_t(len(payload)),
                           ctypes.c_int32(KEY_SPEC_PROCESS_KEYRING))
    if serial < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"add_key: {os.strerror(err)}")
    return serial


def _invalidate(serial: int) -> None:
    _, keyctl = _numbers()
    _libc.syscall(ctypes.c_long(keyctl), ctypes.c_long(KEYCTL_INVALIDATE),
                  ctypes.c_long(serial))


def _compute(private: int, prime: int, base: int, out_len: int) -> bytes:
    _, keyctl = _numbers()
    params = _DhParams(private, prime, base)
    buf = ctypes.create_string_buffer(out_len)
    n = _libc.syscall(ctypes.c_long(keyctl), ctypes.c_long(KEYCTL_DH_COMPUTE),
                      ctypes.byref(params), buf, ctypes.c_size_t(out_len), None)
    if n < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"KEYCTL_DH_COMPUTE: {os.strerror(err)}")
    return buf.raw[:n]


def dh_compute(private: bytes, prime: bytes, base: bytes) -> bytes:
    """``base ^ private mod prime`` computed by the kernel, left-padded to len(prime).

    Raises InvalidInput when the kernel rejects the parameters (EINVAL: e.g. a prime below
    the kernel's minimum size), DriverFailure for any other kernel error.
    """
    tag = f"ocfpy-dh-{os.getpid()}-{next(_counter)}".encode()
    serials: list[int] = []
    try:
        for role, value in ((b"x", private), (b"p", prime), (b"g", base)):
            serials.append(_add_user_key(tag + b"-" + role, value))
        out = _compute(*serials, out_len=len(prime))
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise InvalidInput(f"kernel DH rejected the parameters: {exc.strerror} "
                               f"({len(prime) * 8}-bit prime)") from None
        if exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
            raise KeyctlUnavailable(_unavailable_reason(exc.errno)) from None
        raise DriverFailure(f"kernel DH failed: {exc.strerror}") from None
    finally:
        for serial in serials:
            _invalidate(serial)
    return out.rjust(len(prime), b"\0")


def _unavailable_reason(err: int) -> str:
    if err == errno.ENOSYS:
        return "kernel built without CONFIG_KEYS (keyctl fails: ENOSYS)"
    return ("kernel built without CONFIG_KEY_DH_OPERATIONS "
            "(KEYCTL_DH_COMPUTE fails: EOPNOTSUPP)")


def available() -> str | None:
    """None if KEYCTL_DH_COMPUTE works here, else the reason (a tiny computation proves it)."""
    try:
        _numbers()
        # 2^3 mod p = 8 in the 2048-bit MODP group: a real group (the kernel refuses primes
        # under 1536 bits, 2048 in FIPS mode) and a tiny exponent, so it costs nothing.
        prime = MODP_GROUPS[14][2].to_bytes(256, "big")
        out = dh_compute(b"\x03", prime, b"\x02")
    except KeyctlUnavailable as exc:
        return str(exc)
    except (InvalidInput, DriverFailure) as exc:
        return f"KEYCTL_DH_COMPUTE does not work: {exc}"
    if int.from_bytes(out, "big") != 8:
        return "KEYCTL_DH_COMPUTE gave a wrong answer (2^3 mod p is not 8)"
    return None
