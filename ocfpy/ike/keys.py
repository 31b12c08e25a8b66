"""IKEv2 key derivation (RFC 7296 sections 2.13, 2.14, 2.15, 2.17), on dispatcher PRF sessions.

SKEYSEED = prf(Ni | Nr, g^ir)
{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)
KEYMAT (CHILD_SA) = prf+(SK_d, [g^ir (new) |] Ni | Nr): initiator-to-responder keys first,
    encryption before integrity within each direction.
AUTH (PSK) = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)
"""

from __future__ import annotations

from dataclasses import dataclass

from ocfpy.crypto.catalogue import Transform

KEY_PAD = b"Key Pad for IKEv2"

# PRFs with a fixed key size take 64 bits of each nonce (RFC 7296 2.14).
_FIXED_KEY_PRFS = {"prfaesxcbc", "prfaescmac"}


def nonce_key(prf: Transform, ni: bytes, nr: bytes) -> bytes:
    if prf.keyword in _FIXED_KEY_PRFS:
        return ni[:8] + nr[:8]
    return ni + nr


def skeyseed(dispatcher, prf: Transform, ni: bytes, nr: bytes, shared_secret: bytes) -> bytes:
    with dispatcher.open(prf, nonce_key(prf, ni, nr)) as s:
        return s.prf(shared_secret)


def prf_plus(dispatcher, prf: Transform, key: bytes, seed: bytes, length: int) -> bytes:
    with dispatcher.open(prf, key) as s:
        return s.prf_plus(seed, length)


@dataclass(slots=True)
class IkeKeys:
    sk_d: bytes
    sk_ai: bytes
    sk_ar: bytes
    sk_ei: bytes
    sk_er: bytes
    sk_pi: bytes
    sk_pr: bytes

    def __repr__(self) -> str:  # keys never reach logs by accident
        return "IkeKeys(<secret>)"


def ike_keys(dispatcher, prf: Transform, encr: Transform, integ: Transform | None,
             seed: bytes, ni: bytes, nr: bytes, spi_i: bytes, spi_r: bytes) -> IkeKeys:
    """The seven SK_* keys from SKEYSEED (RFC 7296 2.14)."""
    np_ = prf.key_size
    na = integ.key_size if integ is not None else 0
    ne = encr.keymat_size
    dkm = prf_plus(dispatcher, prf, seed, ni + nr + spi_i + spi_r, 3 * np_ + 2 * na + 2 * ne)
    cut = [np_, na, na, ne, ne, np_, np_]
    parts = []
    pos = 0
    for n in cut:
        parts.append(dkm[pos:pos + n])
        pos += n
    return IkeKeys(*parts)


@dataclass(slots=True)
class ChildKeys:
    """KEYMAT split by direction: i2r = initiator to responder."""

    encr_i2r: bytes
    integ_i2r: bytes
    encr_r2i: bytes
    integ_r2i: bytes

    def __repr__(self) -> str:
        return "ChildKeys(<secret>)"


def child_keys(dispatcher, prf: Transform, sk_d: bytes, ni: bytes, nr: bytes,
               encr: Transform, integ: Transform | None, shared_secret: bytes = b"") -> ChildKeys:
    """CHILD_SA KEYMAT (RFC 7296 2.17); ``shared_secret`` only for a CREATE_CHILD_SA with KE."""
    ne = encr.keymat_size
    na = integ.key_size if integ is not None else 0
    km = prf_plus(dispatcher, prf, sk_d, shared_secret + ni + nr, 2 * (ne + na))
    return ChildKeys(km[:ne], km[ne:ne + na], km[ne + na:2 * ne + na], km[2 * ne + na:])


def signed_octets(message: bytes, peer_nonce: bytes, sk_p: bytes, id_body: bytes,
                  dispatcher, prf: Transform) -> bytes:
    """<InitiatorSignedOctets> / <ResponderSignedOctets> (RFC 7296 2.15):
    our IKE_SA_INIT message | the peer's nonce | prf(SK_p, our ID payload body)."""
    with dispatcher.open(prf, sk_p) as s:
        return message + peer_nonce + s.prf(id_body)


def psk_auth(dispatcher, prf: Transform, psk: bytes, octets: bytes,
             padded: bytes | None = None) -> bytes:
    """``padded`` = prf(psk, KEY_PAD) when the caller has it already."""
    if padded is None:
        with dispatcher.open(prf, psk) as s:
            padded = s.prf(KEY_PAD)
    with dispatcher.open(prf, padded) as s:
        return s.prf(octets)
