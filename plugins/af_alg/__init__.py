"""The Linux kernel crypto API backend (AF_ALG sockets, keyctl MODP DH). See docs/af_alg.md."""

from .driver import AfAlgDriver

__all__ = ["AfAlgDriver"]
