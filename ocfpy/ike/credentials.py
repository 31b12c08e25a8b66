"""Pre-shared keys: THE one lookup from a pair of identities to a PSK (strongSwan's shared key
matching), used by IKE_AUTH and by anyone who asks a configuration which key it holds, and the
``prf(PSK, "Key Pad for IKEv2")`` cache (RFC 7296 2.15).

Certificates and private keys arrive loaded (a `pubkey.CertStore`, from the daemon, which
reads the credentials folders), with the wall clock that certificate validity is judged by:
the core reads neither files nor clocks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

from ocfpy.ike.config import Secret
from ocfpy.ike.constants import NotifyType
from ocfpy.ike.errors import IkeProtocolError
from ocfpy.ike.identity import Identity
from ocfpy.ike.keys import KEY_PAD
from ocfpy.ike.pubkey import CertStore


def _identity(who: Identity | str | None) -> Identity | None:
    return Identity.parse(who) if isinstance(who, str) else who


class Credentials:
    """The configured secrets, parsed once."""

    __slots__ = ("_secrets", "_dispatcher", "_pads", "certs", "wall_clock")

    def __init__(self, secrets: Iterable[Secret], dispatcher=None, *,
                 certs: CertStore | None = None,
                 wall_clock: Callable[[], dt.datetime] | None = None):
        self._secrets = [([Identity.parse(i) for i in s.ids], bytes(s.secret)) for s in secrets]
        self._dispatcher = dispatcher
        self._pads: dict[tuple[str, bytes], bytes] = {}
        self.certs = certs if certs is not None else CertStore()
        self.wall_clock = wall_clock

    def use_certificates(self, certs: CertStore,
                         wall_clock: Callable[[], dt.datetime] | None = None) -> None:
        """Install (or, at reload, replace) the loaded certificates and keys, and the clock
        they are judged by. SAs being authenticated pick them up at their next IKE_AUTH."""
        old, self.certs = self.certs, certs
        if old is not certs:
            old.close()
        if wall_clock is not None:
            self.wall_clock = wall_clock

    def now(self) -> dt.datetime:
        """Calendar time for certificate validity; without an injected clock no certificate
        can be judged, and saying so beats guessing."""
        if self.wall_clock is None:
            raise IkeProtocolError(NotifyType.AUTHENTICATION_FAILED, "no wall clock was given "
                                   "to the IKE engine: certificate validity cannot be checked")
        return self.wall_clock()

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
