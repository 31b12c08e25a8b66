"""The Encrypted payload (RFC 7296 section 3.14; AEAD per RFC 5282).

AEAD (AES-GCM, ChaCha20-Poly1305): body = IV(8) || ciphertext || ICV; the AAD is the IKE header
and the SK generic header; nonce = salt || IV, done by the session. IVs are a per-SA counter,
never repeated under one key (RFC 5282 section 3.1; strongSwan's iv_gen_seq does the same).
CBC + integrity: body = IV(16) || ciphertext || ICV, IV random; the ICV covers the message from
the IKE header to the end of the ciphertext, computed after encryption (encrypt-then-MAC).
"""

from __future__ import annotations

from collections.abc import Callable

from ocfpy.crypto.catalogue import Primitive, Transform
from ocfpy.crypto.errors import AuthenticationError, InvalidInput
from ocfpy.ike.errors import DecodeError, IkeError

SK_HEADER_SIZE = 4


class IntegrityCheckFailed(IkeError):
    """The ICV of an encrypted payload did not verify: drop silently (RFC 7296 2.21.2)."""


class Unauthenticated(DecodeError):
    """A protected message that fails *before* its integrity check could be made (no SK
    payload, plaintext payloads before SK, an SK body shorter than IV + ICV, CBC ciphertext
    that is not whole blocks). Nothing vouches for it, so, like an ICV failure, it must change
    nothing and get no answer (RFC 7296 2.21.2, 3.14). ``reason`` names the counter."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.why = reason


class SkCrypto:
    """Protects SK payloads of one IKE SA in one direction pair.

    ``out_keys``/``in_keys`` are (encryption keymat, integrity key): SK_ei/SK_ai for the
    initiator's outbound side, SK_er/SK_ar inbound, and the reverse for the responder.
    """

    __slots__ = ("encr", "integ", "_seal", "_open", "_mac_out", "_mac_in", "_random", "_iv",
                 "iv_size", "icv_size", "block")

    def __init__(self, dispatcher, encr: Transform, integ: Transform | None,
                 out_keys: tuple[bytes, bytes], in_keys: tuple[bytes, bytes],
                 random: Callable[[int], bytes]):
        self.encr = encr
        self.integ = integ
        self._random = random
        self._iv = 0
        self.iv_size = encr.iv_size
        if encr.primitive is Primitive.AEAD:
            self._seal = dispatcher.open(encr, out_keys[0])
            self._open = dispatcher.open(encr, in_keys[0])
            self._mac_out = self._mac_in = None
            self.icv_size = encr.icv_size
            self.block = 1
        else:
            if integ is None:
                raise ValueError(f"{encr} needs an integrity algorithm")
            self._seal = dispatcher.open(encr, out_keys[0])
            self._open = dispatcher.open(encr, in_keys[0])
            self._mac_out = dispatcher.open(integ, out_keys[1])
            self._mac_in = dispatcher.open(integ, in_keys[1])
            self.icv_size = integ.icv_size
            self.block = encr.block_size

    @property
    def aead(self) -> bool:
        return self._mac_out is None

    def drivers(self) -> dict[str, str]:
        out = {"encr": self._seal.driver}
        if self._mac_out is not None:
            out["integ"] = self._mac_out.driver
        return out

    def close(self) -> None:
        for s in (self._seal, self._open, self._mac_out, self._mac_in):
            if s is not None:
                s.close()

    def padded(self, inner: bytes) -> bytes:
        """inner || padding || pad length, to the cipher's block size."""
        pad = (-(len(inner) + 1)) % self.block
        return inner + bytes(pad) + bytes((pad,))

    def sk_length(self, plaintext_len: int) -> int:
        return SK_HEADER_SIZE + self.iv_size + plaintext_len + self.icv_size

    def seal(self, prefix: bytes, plaintext: bytes) -> bytes:
        """``prefix`` is the IKE header and SK header (lengths final); returns the message."""
        if self.aead:
            self._iv += 1
            iv = self._iv.to_bytes(8, "big")
            return prefix + iv + self._seal.seal(iv, plaintext, prefix)
        iv = self._random(self.iv_size)
        signed = prefix + iv + self._seal.encrypt(iv, plaintext)
        return signed + self._mac_out.compute(signed)  # type: ignore[union-attr]

    def open(self, raw: bytes, sk_offset: int, body: bytes) -> bytes:
        """The decrypted inner payload chain (padding removed)."""
        n_iv, n_icv = self.iv_size, self.icv_size
        if len(body) < n_iv + n_icv + 1:
            raise Unauthenticated(f"encrypted payload of {len(body)} bytes is too short",
                                  "short_sk")
        iv = body[:n_iv]
        try:
            if self.aead:
                pt = self._open.open(iv, body[n_iv:], raw[:sk_offset + SK_HEADER_SIZE])
            else:
                ct = body[n_iv:-n_icv]
                if len(ct) % self.block:
                    raise Unauthenticated(f"ciphertext of {len(ct)} bytes is not whole blocks",
                                          "partial_block")
                self._mac_in.verify(raw[:-n_icv], raw[-n_icv:])  # type: ignore[union-attr]
                pt = self._open.decrypt(iv, ct)
        except AuthenticationError:
            raise IntegrityCheckFailed("encrypted payload failed its integrity check") from None
        except InvalidInput as exc:
            raise DecodeError(f"encrypted payload: {exc}") from None
        if not pt:
            raise DecodeError("encrypted payload with no padding length")
        pad = pt[-1]
        if pad + 1 > len(pt):
            raise DecodeError(f"pad length {pad} exceeds the {len(pt)}-byte plaintext")
        return pt[:-(pad + 1)]
