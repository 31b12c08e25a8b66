"""How a kernel-accelerator driver reaches its device: the transport interface.

A transport opens keyed handles on one named implementation (a kernel crypto driver name such
as ``virtio_crypto_aes_cbc`` or ``qat_aes_cbc``) and nothing else: never "whatever the kernel
prefers for cbc(aes)", which would silently be AES-NI. Handles have the shapes below; the
contexts in `contexts.py` add the IKE/ESP conventions (salts, IV layout, truncation).

`AfAlgTransport` is the one in use today (ocfpy.kernel.afalg, bound by driver name). A vendor
library (Intel's QATlib, say) would be a second implementation of the same four methods; the
driver and its contexts would not change. AF_ALG is deprecated from Linux 7.2, which is one
reason the seam exists.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol


class CipherHandle(Protocol):
    def encrypt(self, iv: bytes, data: bytes) -> bytes: ...
    def decrypt(self, iv: bytes, data: bytes) -> bytes: ...
    def close(self) -> None: ...


class AeadHandle(Protocol):
    # The driver contract's order; aad keyword-only, so a swap cannot pass silently.
    def seal(self, iv: bytes, plaintext: bytes, *, aad: bytes) -> bytes: ...
    def open(self, iv: bytes, ciphertext: bytes, *, aad: bytes) -> bytes: ...
    def close(self) -> None: ...


class HashHandle(Protocol):
    def digest(self, data: bytes) -> bytes: ...
    def close(self) -> None: ...


class Transport(ABC):
    """Opens handles on exactly one kernel implementation, by its driver name.

    Errors follow ocfpy's vocabulary: DriverFailure when the device failed a request (the
    dispatcher migrates), AuthenticationError on a bad tag, InvalidKey / InvalidInput for what
    the caller got wrong, Unsupported(Reason.NOT_IN_KERNEL) when the implementation is absent.
    """

    name: str = ""

    @abstractmethod
    def unavailable(self) -> str | None:
        """None if the transport can be used on this machine, else why not."""

    @abstractmethod
    def cipher(self, implementation: str, key: bytes) -> CipherHandle: ...

    @abstractmethod
    def aead(self, implementation: str, key: bytes, authsize: int) -> AeadHandle: ...

    @abstractmethod
    def hash(self, implementation: str, key: bytes | None) -> HashHandle: ...

    def cipher_queue(self, handle: CipherHandle, depth: int):
        """An asynchronous queue on a cipher handle (several requests in the device at
        once), or None where the transport has none: then requests run one by one."""
        return None


class AfAlgTransport(Transport):
    """The kernel crypto API over AF_ALG sockets, bound by exact driver name."""

    name = "af_alg"

    def unavailable(self) -> str | None:
        from ocfpy.kernel import afalg

        return afalg.available()

    def cipher(self, implementation: str, key: bytes) -> CipherHandle:
        from ocfpy.kernel import afalg

        return afalg.SkcipherOp(implementation, key)

    def cipher_queue(self, handle: CipherHandle, depth: int):
        # Kernel AIO on operation sockets bound to the device's own driver name: the
        # requests reach the device's queue (virtio-crypto's data virtqueue) together.
        from ocfpy.kernel import afalg

        return afalg.AioQueue(handle, depth)  # type: ignore[arg-type]

    def aead(self, implementation: str, key: bytes, authsize: int) -> AeadHandle:
        from ocfpy.kernel import afalg

        return afalg.AeadOp(implementation, key, authsize)

    def hash(self, implementation: str, key: bytes | None) -> HashHandle:
        from ocfpy.kernel import afalg

        return afalg.HashOp(implementation, key)
