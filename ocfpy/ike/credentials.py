"""Pre-shared keys: THE one lookup from a pair of identities to a PSK (strongSwan's shared key
matching), used by IKE_AUTH and by anyone who asks a configuration which key it holds, and the
``prf(PSK, "Key Pad for IKEv2")`` cache (RFC 7296 2.15)."""

from __future__ import annotations

from collections.abc import Iterable

from ocfpy.ike.config import Secret
from ocfpy.ike.identity import Identity
from ocfpy.ike.keys import KEY_PAD


def _identity(who: Identity | str | None) -> Identity | None:
    return Identity.parse(who) if isinstance(who, str) else who


class Credentials:
    """The configured secrets, parsed once."""

    __slots__ = ("_secrets", "_dispatcher", "_pads")

    def __init__(self, secrets: Iterable[Secret], dispatcher=None):
        self._secrets = [([Identity.parse(i) for i in s.ids], bytes(s.secret)) for s in secrets]
        self._dispatcher = dispatcher
        self._pads: dict[tuple[str, bytes], bytes] = {}

    def psk_for(self, local: Identity | str | None, remote: Identity | str | None) -> bytes | None:
        """The best PSK for this pair of identities: a secret naming both beats one naming
        one, which beats one naming none (a wildcard); among equals the first configured wins.
        A secret that names identities but neither of these is not a candidate."""
        local, remote = _identity(local), _identity(remote)
        best: tuple[int, bytes] | None = None
        for ids, secret in self._secrets:
            score = 0
            if ids:
                score = sum(1 for who in (local, remote)
                            if who is not None and any(i.matches(who) for i in ids))
                if score == 0:
                    continue
            if best is None or score > best[0]:
                best = (score, secret)
        return best[1] if best else None

    def psk_pad(self, prf, psk: bytes) -> bytes:
        """prf(PSK, "Key Pad for IKEv2"): the same for every SA with this PSK and PRF, so it is
        computed once (the PSKs are in memory for the engine's life anyway)."""
        key = (prf.keyword, psk)
        pad = self._pads.get(key)
        if pad is None:
            with self._dispatcher.open(prf, psk) as s:
                pad = self._pads[key] = s.prf(KEY_PAD)
        return pad
