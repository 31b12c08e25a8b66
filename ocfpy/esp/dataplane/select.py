"""Which ESP dataplane a daemon gets: ``auto``, ``xfrm``, ``userspace`` or ``none``.

``auto`` takes the kernel (xfrm) when it can do ESP, because the kernel's ESP is faster and
needs no process of ours per packet; otherwise the userspace one, and it logs which it took
and why (the kernel's own words: "Requested type not found" and the kernel option to enable).
``none`` must be asked for by name; ``auto`` never falls back to it silently (a VPN that
negotiates tunnels and carries nothing must not look like one that works). When nothing
works, the error lists every candidate with its reason.
"""

from __future__ import annotations

import logging
from typing import Any

from ocfpy.crypto.errors import OcfError
from ocfpy.esp.dataplane.base import Dataplane

log = logging.getLogger(__name__)

CHOICES = ("auto", "xfrm", "userspace", "none")


class DataplaneUnavailable(OcfError):
    """The requested dataplane cannot run here; the message says why, per candidate."""


def _xfrm(netns: str | None) -> Dataplane:
    from ocfpy.esp.dataplane.xfrm import XfrmDataplane, XfrmUnavailable

    try:
        return XfrmDataplane(netns=netns)
    except XfrmUnavailable as exc:
        raise DataplaneUnavailable(str(exc)) from exc


def _userspace(dispatcher: Any, config: Any = None) -> Dataplane:
    from ocfpy.esp.dataplane.userspace import DataplaneError, create

    try:
        return create(dispatcher, config)  # it checks whether it can run here, and says why
    except DataplaneError as exc:
        raise DataplaneUnavailable(str(exc)) from exc


def _none() -> Dataplane:
    from ocfpy.esp.dataplane.null import NullDataplane

    log.warning("dataplane none: IKE only, CHILD_SAs will be negotiated but carry no traffic")
    return NullDataplane()


def choose_dataplane(name: str, dispatcher: Any = None, config: Any = None, *,
                     netns: str | None = None) -> Dataplane:
    """The dataplane called ``name``; ``auto`` picks xfrm or userspace and logs why.

    Raises DataplaneUnavailable naming the reason (for ``auto``: each candidate's)."""
    name = (name or "auto").strip().lower()
    if name not in CHOICES:
        raise DataplaneUnavailable(f"unknown dataplane {name!r}: use one of {', '.join(CHOICES)}")
    if name == "none":
        return _none()
    if name == "xfrm":
        try:
            return _xfrm(netns)
        except DataplaneUnavailable as exc:
            raise DataplaneUnavailable(f"dataplane xfrm is not available: {exc}") from exc
    if name == "userspace":
        try:
            return _userspace(dispatcher, config)
        except DataplaneUnavailable as exc:
            raise DataplaneUnavailable(f"dataplane userspace is not available: {exc}") from exc
    try:
        dp = _xfrm(netns)
    except DataplaneUnavailable as exc:
        kernel_reason = str(exc)
    else:
        log.info("dataplane auto: xfrm (the kernel does ESP)")
        return dp
    try:
        dp = _userspace(dispatcher, config)
    except DataplaneUnavailable as exc:
        raise DataplaneUnavailable(
            f"dataplane auto found no working ESP dataplane (xfrm: {kernel_reason}; userspace: "
            f"{exc}); set dataplane = \"none\" to run IKE without one") from exc
    log.info("dataplane auto: userspace, because the kernel cannot: %s", kernel_reason)
    return dp
