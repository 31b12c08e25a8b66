"""The dispatcher: picks the driver for each session, and moves sessions when a driver fails.

Selection (FreeBSD's probe scores in three classes, VPP's per-algorithm handler):
  1. a per-algorithm override (``overrides={"aes256gcm16": "af_alg"}``), else
  2. a forced backend (``backend="af_alg"``), else
  3. the best kind: hardware > accelerated software > software; within a kind the measured
     speed (with a calibration), then the driver's priority; ties go to the driver with the
     fewest open sessions, then to the one registered first.
A forced backend or override that cannot serve the algorithm raises BackendUnavailable when
``strict`` (the default), naming the backend, the algorithm and who could serve it; with
``strict=False`` the session falls back to the next driver by rule 3, logged and counted.

Migration (OpenBSD's EAGAIN, done here because the dispatcher holds the session parameters):
when a driver raises DriverFailure or is removed from the registry, each of its sessions is
re-created on the next driver with the same key and the failed request runs again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping

from .calibration import Calibration, CalibrationError
from .catalogue import Transform
from .catalogue import get as get_transform
from .errors import BackendUnavailable, DriverFailure
from .registry import DriverRecord, DriverStatus, Registry
from .session import SESSION_CLASS, Session
from .stats import Counters

log = logging.getLogger(__name__)

AUTO = "auto"
CALIBRATED = "calibrated"  # auto, ranked by a calibration (the one given, else the default file)


class Dispatcher:
    def __init__(
        self,
        registry: Registry | None = None,
        *,
        backend: str | None = None,
        strict: bool = True,
        overrides: Mapping[str, str] | None = None,
        calibration: Calibration | None = None,
    ):
        self.registry = registry if registry is not None else Registry.load()
        if backend == CALIBRATED and calibration is None:
            calibration = _default_calibration()
        self.policy = CALIBRATED if backend == CALIBRATED else (backend or AUTO)
        self.backend = None if backend in (None, AUTO, CALIBRATED) else backend
        self.strict = strict
        self.overrides: dict[str, str] = {}
        for keyword, driver in (overrides or {}).items():
            self.set_handler(keyword, driver)
        self.calibration = calibration
        self.fallbacks = 0  # sessions that a non-strict forced backend could not take
        # keyword -> active drivers serving it, valid while the registry is at this generation
        self._cache: dict[str, list[DriverRecord]] = {}
        self._cache_generation = -1
        self._lock = threading.RLock()
        self.registry.subscribe(self._on_registry_event)
        if self.backend is not None:
            try:
                self._check_backend(self.backend)
            except BackendUnavailable as exc:
                # strict=False promises a fallback per session (logged, counted), also when
                # the forced backend is unusable here as a whole (af_alg on a host kernel
                # without AF_ALG); only a strict dispatcher refuses up front.
                if strict:
                    raise
                log.warning("%s; sessions will fall back", exc)

    # -- policy ------------------------------------------------------------------------------
    def set_handler(self, algorithm: str, driver: str | None) -> None:
        """Per-algorithm override (VPP's `set crypto handler`); None removes it."""
        keyword = get_transform(algorithm).keyword
        if driver in (None, AUTO):
            self.overrides.pop(keyword, None)
        else:
            self.overrides[keyword] = driver

    def _check_backend(self, name: str) -> None:
        record = self.registry.get(name)
        if record is None:
            raise BackendUnavailable(name, "anything", "no such driver is registered",
                                     [r.name for r in self.registry.active()])
        if record.status is not DriverStatus.ACTIVE:
            raise BackendUnavailable(name, "anything", f"it is {record.status.value}: "
                                     f"{record.reason}", [r.name for r in self.registry.active()])

    def can_serve(self, algorithm: str | Transform, backend: str | None = None) -> bool:
        """Whether a session for this algorithm would open under the current policy."""
        try:
            self._choose(get_transform(algorithm), backend, None, set(), count=False)
            return True
        except BackendUnavailable:
            return False

    def driver_for(self, algorithm: str | Transform, backend: str | None = None) -> str:
        """The driver a session for this algorithm would open on now (raises like open())."""
        return self._choose(get_transform(algorithm), backend, None, set(), count=False).name

    def candidates(self, algorithm: str | Transform, size_hint: int | None = None
                   ) -> list[DriverRecord]:
        """Active drivers that serve the algorithm, best first (rule 3; with a calibration,
        drivers of the same kind are ordered by measured speed at ``size_hint``)."""
        transform = get_transform(algorithm)
        serving = self._serving(transform)
        if len(serving) < 2:
            return list(serving)
        cal = self.calibration

        def rank(r: DriverRecord):
            speed = (cal.rate(transform.keyword, r.name, size_hint) or 0.0) if cal else 0.0
            prio = r.driver.priority if r.driver is not None else 0
            return (-int(r.kind or 0), -speed, -prio, len(r.sessions), r.order)
        return sorted(serving, key=rank)

    def explain(self, algorithm: str | Transform, driver: str, size_hint: int | None = None,
                backend: str | None = None) -> str:
        """Why this policy has ``driver`` serve ``algorithm`` (for `ocfpy sa list`):

        - ``forced``: a forced backend or per-algorithm override names it;
        - ``kind``: it is the only active driver of the best kind that serves the algorithm;
        - ``calibrated``: the calibration measured it fastest among drivers of that kind;
        - ``priority``: within that kind, its priority (or registration order, on a tie);
        - ``fallback``: a non-strict forced backend could not serve the algorithm;
        - ``migrated``: the policy would pick another driver now, so the session moved here
          after its driver failed or left (or the registry changed since it opened).
        """
        transform = get_transform(algorithm)
        forced = backend if backend not in (None, AUTO, CALIBRATED) else None
        forced = forced or self.overrides.get(transform.keyword) or self.backend
        serving = self._serving(transform)
        if forced is not None:
            if forced == driver:
                return "forced"
            return "migrated" if any(r.name == forced for r in serving) else "fallback"
        cal = self.calibration

        def rank(r: DriverRecord) -> tuple:
            speed = (cal.rate(transform.keyword, r.name, size_hint) or 0.0) if cal else 0.0
            return (int(r.kind or 0), speed, r.driver.priority if r.driver is not None else 0)
        ranks = {r.name: rank(r) for r in serving}
        mine = ranks.get(driver)
        if mine is None or any(other > mine for other in ranks.values()):
            return "migrated"
        rivals = [v for name, v in ranks.items() if name != driver and v[0] == mine[0]]
        if not rivals:
            return "kind"
        runner_up = max(rivals)
        return "calibrated" if runner_up[1] != mine[1] else "priority"

    def _serving(self, transform: Transform) -> list[DriverRecord]:
        """Active drivers serving a transform, cached until the registry changes: sessions are
        opened on every IKE exchange, so this must not walk the registry each time."""
        if self._cache_generation != self.registry.generation:
            self._cache = {}
            self._cache_generation = self.registry.generation
        serving = self._cache.get(transform.keyword)
        if serving is None:
            serving = [r for r in self.registry.active() if r.serves(transform)]
            self._cache[transform.keyword] = serving
        return serving

    def _choose(self, transform: Transform, backend: str | None, strict: bool | None,
                exclude: set[str], count: bool = True, size_hint: int | None = None
                ) -> DriverRecord:
        strict = self.strict if strict is None else strict
        forced = backend if backend not in (None, AUTO, CALIBRATED) else None
        forced = forced or self.overrides.get(transform.keyword) or self.backend
        ranked = [r for r in self.candidates(transform, size_hint) if r.name not in exclude]
        if forced is not None:
            for r in ranked:
                if r.name == forced:
                    return r
            why = self._why_not(forced, transform, exclude)
            if strict:
                raise BackendUnavailable(forced, transform.keyword, why,
                                         [r.name for r in ranked])
            if ranked:
                if count:
                    self.fallbacks += 1
                log.info("%s: backend %s cannot serve it (%s); falling back to %s",
                         transform.keyword, forced, why, ranked[0].name)
        if not ranked:
            raise BackendUnavailable(None, transform.keyword,
                                     "no active driver offers it" if not exclude else
                                     f"every driver that offered it failed ({', '.join(exclude)})",
                                     [])
        return ranked[0]

    def _why_not(self, name: str, transform: Transform, exclude: set[str]) -> str:
        record = self.registry.get(name)
        if record is None:
            return "no such driver is registered"
        if name in exclude:
            return "it failed during this session"
        if record.status is not DriverStatus.ACTIVE:
            return f"it is {record.status.value}: {record.reason}"
        if transform.keyword in record.quarantined:
            return f"quarantined: {record.quarantined[transform.keyword]}"
        return "it does not offer this algorithm"

    # -- sessions --------------------------------------------------------------------------
    def open(
        self,
        algorithm: str | Transform,
        key: bytes | None = None,
        *,
        backend: str | None = None,
        strict: bool | None = None,
        size_hint: int | None = None,
    ) -> Session:
        """A session for one transform and key, on the driver the policy picks.

        ``key`` is the keying material (cipher key || salt for AEADs and CTR; the private value,
        or None to generate one, for key exchange). ``backend`` forces a driver for this session.
        ``size_hint`` (typical bytes per operation) only matters with a calibration.
        """
        transform = get_transform(algorithm)
        exclude: set[str] = set()
        while True:
            record = self._choose(transform, backend, strict, exclude, size_hint=size_hint)
            try:
                ctx = record.driver.new_context(transform, key)  # type: ignore[union-attr]
            except DriverFailure as exc:
                log.warning("driver %s failed to open %s: %s", record.name, transform, exc)
                exclude.add(record.name)
                continue
            session = SESSION_CLASS[transform.primitive](self, transform, key, record, ctx,
                                                         (backend, strict))
            record.sessions.add(session)
            return session

    def random(self, n: int) -> bytes:
        """n bytes from the kernel CSPRNG (getrandom), never from a driver (see ocfpy.crypto.driver)."""
        return os.urandom(n)

    # -- signatures (ocfpy.crypto.signatures): the key decides who may serve ---------------
    def open_signer(self, scheme, key, *, backend: str | None = None,
                    strict: bool | None = None, check: bool = True):
        """A SignSession for a signature scheme and a private key reference (signatures.KeyFile,
        Pkcs11Key, KeyBytes), on the best driver that offers the scheme *and can reach the key*.

        With ``check`` (the default), a pairwise consistency test (FIPS 140-3 IG 10.3.A): one
        signature over a fixed message, verified with the matching public key by the best
        verifier; a key that does not fit the scheme, or a driver that signs wrongly, is
        refused here and not at the peer. Callers open a signer once per loaded credential."""
        from .errors import InvalidKey, InvalidSignature
        from .session import SignSession
        from .signatures import PublicKey

        session = self._open_with_key(scheme, key, SignSession, backend, strict)
        if check:
            probe = b"ocfpy pairwise consistency test"
            try:
                # strict=False: a backend forced for signing (a token) need not verify too.
                with self.open_verifier(session.transform, PublicKey(session.public_key()),
                                        strict=False) as v:
                    v.verify(probe, session.sign(probe))
            except (InvalidSignature, InvalidKey) as exc:
                session.close()
                raise InvalidKey(f"{key.describe()} on {session.driver}: its {session.transform}"
                                 f" signature does not verify with its own public key ({exc})"
                                 ) from None
        return session

    def open_verifier(self, scheme, public_key, *, backend: str | None = None,
                      strict: bool | None = None):
        """A VerifySession for a scheme and a signatures.PublicKey (DER SubjectPublicKeyInfo)."""
        from .session import VerifySession

        return self._open_with_key(scheme, public_key, VerifySession, backend, strict)

    def _open_with_key(self, scheme, key, session_class, backend, strict):
        """Like open(), but a driver that cannot reach the key (Unsupported with
        Reason.KEY_STORE: a file key for a token driver, a token key for OpenSSL) is passed
        over like one that does not offer the scheme, and named if nobody can."""
        from .errors import Reason, Unsupported

        transform = get_transform(scheme)
        exclude: set[str] = set()
        unreachable: dict[str, str] = {}
        while True:
            try:
                record = self._choose(transform, backend, strict, exclude)
            except BackendUnavailable as exc:
                if not unreachable:
                    raise
                raise BackendUnavailable(exc.backend, transform.keyword,
                                         f"no driver that offers it can reach {key.describe()} ("
                                         + "; ".join(f"{n}: {r}" for n, r in unreachable.items())
                                         + ")", exc.alternatives) from None
            try:
                ctx = record.driver.new_context(transform, key)  # type: ignore[union-attr]
            except Unsupported as exc:
                if exc.reason is not Reason.KEY_STORE:
                    raise
                unreachable[record.name] = exc.detail or exc.reason.value
                exclude.add(record.name)
                continue
            except DriverFailure as exc:
                log.warning("driver %s failed to open %s: %s", record.name, transform, exc)
                exclude.add(record.name)
                continue
            session = session_class(self, transform, key, record, ctx, (backend, strict))
            record.sessions.add(session)
            return session

    def _session_closed(self, session: Session) -> None:
        record = session._record
        record.closed.add(Counters(**session.counters()))
        record.sessions.discard(session)

    def _migrate(self, session: Session, failure: BaseException | str,
                 failed: set[str] | None = None, failed_ctx: object | None = None) -> None:
        """Re-create the session on the next driver, with the same key, avoiding the drivers
        that already failed this request.

        With ``failed_ctx``, only if the session still runs on that context: a registry event
        may have moved it already while the failed request was in flight.
        """
        with self._lock:
            if failed_ctx is not None and session._ctx is not failed_ctx:
                return
            old = session._record
            backend, strict = session._policy
            exclude = {old.name} | (failed or set())
            while True:
                try:
                    record = self._choose(session.transform, backend, strict, exclude)
                except BackendUnavailable as exc:
                    raise DriverFailure(
                        f"{session.transform} on {old.name} failed ({failure}) and no other "
                        f"driver may take it: {exc}") from None
                try:
                    ctx = record.driver.new_context(session.transform, session._key)  # type: ignore[union-attr]
                except DriverFailure:
                    exclude.add(record.name)
                    continue
                break
            old_ctx = session._ctx
            session._bind(ctx)
            session._record = record
            session.migrations += 1
            old.sessions.discard(session)
            record.sessions.add(session)
            log.warning("session %s moved from %s to %s: %s", session.transform, old.name,
                        record.name, failure)
        try:
            old_ctx.close()
        except Exception:  # the old driver is broken; closing is best effort
            log.debug("closing context on %s failed", old.name, exc_info=True)

    def _on_registry_event(self, event: str, record: DriverRecord) -> None:
        if event != "removed":
            return
        for session in list(record.sessions):
            if session._ctx is None:
                continue
            try:
                self._migrate(session, f"driver {record.name} removed: {record.reason}")
            except DriverFailure as exc:
                log.error("%s", exc)  # the next operation will raise it to the consumer

    # -- reporting -------------------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, int]]:
        return {r.name: r.counters().as_dict() for r in self.registry.records()}


def _default_calibration() -> Calibration:
    """The calibration `ocfpy bench crypto --save` writes by default, for backend="calibrated"
    without one given; refused with the way to make it when it is missing or unreadable."""
    from .calibration import default_path

    path = default_path()
    try:
        return Calibration.load(path)
    except CalibrationError as exc:  # every problem of the file, with its path and reason
        raise BackendUnavailable(CALIBRATED, "anything", f"no usable calibration at {path} "
                                 f"({exc.reason}); run `ocfpy bench crypto --save` first",
                                 []) from None
