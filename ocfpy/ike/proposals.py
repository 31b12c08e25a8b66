"""IKE and ESP proposals: strongSwan syntax, SA payload conversion and selection.

A proposal string is strongSwan's: keywords joined by '-', e.g. "aes128gcm16-prfsha256-x25519",
"aes128-sha256-modp2048" (sha256 doubles as PRF when no prf keyword is given, as in strongSwan),
"aes128gcm16-esn" for ESP. Several algorithms of one type in one string are alternatives.
Where strongSwan accepts a string whose meaning is unambiguous, so do we, with a warning: an
integrity algorithm next to AEAD ciphers ("aes128gcm16-sha256") is dropped, and in IKE it still
names the PRF when no prf keyword does (strongSwan's proposal.c check_proposal()).

Selection follows strongSwan's default: the responder walks the initiator's proposals in the
initiator's order and takes the first one that matches one of ours; within a matching pair, the
first of the initiator's transforms of each type that we also accept. When nothing matches,
`explain_mismatch` says in plain words which transform type had no overlap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ocfpy.crypto import catalogue
from ocfpy.crypto.catalogue import Primitive, Transform, TransformType
from ocfpy.crypto.errors import OcfError, UnknownAlgorithm

log = logging.getLogger(__name__)

PROTO_IKE = 1
PROTO_AH = 2
PROTO_ESP = 3

# strongSwan "sha256" in an IKE proposal means HMAC-SHA2-256-128 integrity and, when no PRF is
# named, PRF-HMAC-SHA2-256 (proposal_keywords / proposal.c add_prf_from_integ).
_INTEG_TO_PRF = {
    "sha1": "prfsha1", "sha256": "prfsha256", "sha384": "prfsha384", "sha512": "prfsha512",
    "aesxcbc": "prfaesxcbc",
}

TYPE_NAMES = {
    TransformType.ENCR: "encryption algorithm",
    TransformType.PRF: "pseudo-random function",
    TransformType.INTEG: "integrity algorithm",
    TransformType.KE: "key exchange method (DH group)",
    TransformType.ESN: "extended sequence numbers setting",
}


# Transforms ocfpy negotiates when a peer leaves no other choice, but never proposes first and
# warns about: RFC 8247 (IKEv2) and RFC 8221 (ESP) rate them MUST- (to be demoted) or SHOULD NOT.
# The defaults (ocfpy/ike/config.py) contain none of them except HMAC-SHA1-96 in ESP, last,
# because OpenIKED on Linux can install nothing else through PF_KEY (docs/interop.md).
WEAK: dict[str, str] = {
    "sha1": "HMAC-SHA1-96 is MUST- in RFC 8221 section 6 and RFC 8247 section 2.3 "
            "(kept for interoperability, to be phased out)",
    "prfsha1": "PRF-HMAC-SHA1 is MUST- in RFC 8247 section 2.2",
    "aesxcbc": "AES-XCBC-96 is SHOULD NOT+ for ESP in RFC 8221 section 6",
    "modp1024": "MODP 1024 (group 2) is SHOULD NOT in RFC 8247 section 2.4",
    "modp1536": "MODP 1536 (group 5) is SHOULD NOT in RFC 8247 section 2.4",
}


def weak_transforms(prop: Proposal) -> list[str]:
    """The keywords in ``prop`` that RFC 8247 / RFC 8221 rate as weak (see WEAK)."""
    return [t.keyword for lst in prop.transforms.values() for t in lst if t.keyword in WEAK]


def warn_if_weak(prop: Proposal) -> None:
    """A negotiated proposal with a weak transform is allowed (the peer offered nothing
    better) but logged, naming the transform and the RFC's rating."""
    for word in weak_transforms(prop):
        what = {PROTO_IKE: "IKE", PROTO_ESP: "ESP", PROTO_AH: "AH"}.get(prop.protocol, "?")
        log.warning("negotiated %s proposal %s uses the weak transform %s: %s", what, prop,
                    word, WEAK[word])


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """Config strings are parsed again on every use: say each thing once per process."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)


# RFC 7296 3.3.2, Transform Type 4 (Key Exchange Method) ID 0: NONE. In an ESP/AH proposal the
# key exchange is optional (3.3.3: "Optional Type: Diffie-Hellman Group"), and an initiator that
# wants it but can live without it lists NONE as one of the groups (3.3.3: "If an initiator wishes
# to make use of the transform optional to the responder, it includes a transform substructure
# with Transform ID = 0 as one of the options"). It is not a catalogue keyword: no one writes it
# in a proposal string; ocfpy adds it itself when it offers optional PFS (with_optional_pfs) and
# reads it from a peer's proposals (from_raw). An ESP proposal with no KE transform at all means
# the same as one with only NONE (OpenIKED's and strongSwan's reading too), see _ke_lists.
KE_NONE = Transform("none", Primitive.FLAG, TransformType.KE, 0,
                    description="no key exchange in CREATE_CHILD_SA (no PFS)", rfc="RFC 7296 3.3.2")


class ProposalSyntaxError(OcfError, ValueError):
    """A proposal string that does not parse; the message says which keyword and why."""


@dataclass(slots=True)
class Proposal:
    """One proposal: per transform type the acceptable transforms, in preference order."""

    protocol: int
    transforms: dict[TransformType, list[Transform]] = field(default_factory=dict)
    number: int = 1
    spi: bytes = b""
    # transforms we could not map to the catalogue, kept so a mismatch can name them
    unknown: list[tuple[int, int, int | None]] = field(default_factory=list)

    def of(self, ttype: TransformType) -> list[Transform]:
        return self.transforms.get(ttype, [])

    def first(self, ttype: TransformType) -> Transform | None:
        lst = self.transforms.get(ttype)
        return lst[0] if lst else None

    @property
    def is_aead(self) -> bool:
        encr = self.of(TransformType.ENCR)
        return bool(encr) and all(t.primitive is Primitive.AEAD for t in encr)

    def keywords(self) -> list[str]:
        return [t.keyword for lst in self.transforms.values() for t in lst]

    def __str__(self) -> str:
        order = (TransformType.ENCR, TransformType.INTEG, TransformType.PRF, TransformType.KE,
                 TransformType.ESN)
        words = [t.keyword for tt in order for t in self.of(tt)]
        words += [f"unknown({tt}/{tid}{'/' + str(kb) if kb else ''})" for tt, tid, kb in self.unknown]
        return "-".join(words) if words else "(empty)"


def _parse(text: str, protocol: int) -> Proposal:
    words = [w for w in text.strip().lower().split("-") if w]
    if not words:
        raise ProposalSyntaxError(f"empty proposal {text!r}")
    prop = Proposal(protocol)
    for word in words:
        try:
            t = catalogue.get(word)
        except UnknownAlgorithm as exc:
            raise ProposalSyntaxError(str(exc)) from None
        if t.transform_type is None:
            raise ProposalSyntaxError(f"{word!r} is a hash, not an IKE/ESP transform")
        lst = prop.transforms.setdefault(t.transform_type, [])
        if t not in lst:
            lst.append(t)
    return prop


def parse_ike(text: str) -> Proposal:
    """An IKE proposal; checks that it is complete (RFC 7296 3.3.3 mandatory types)."""
    prop = _parse(text, PROTO_IKE)
    if TransformType.ESN in prop.transforms:
        raise ProposalSyntaxError(f"{text!r}: esn/noesn belongs in ESP proposals, not IKE")
    encr = prop.of(TransformType.ENCR)
    if not encr:
        raise ProposalSyntaxError(f"{text!r}: no encryption algorithm (e.g. aes128gcm16, aes256)")
    aead = [t for t in encr if t.primitive is Primitive.AEAD]
    if aead and len(aead) != len(encr):
        raise ProposalSyntaxError(
            f"{text!r}: mixes AEAD ({aead[0]}) and non-AEAD ciphers in one proposal; "
            "write two proposals")
    if not aead and not prop.of(TransformType.INTEG):
        raise ProposalSyntaxError(f"{text!r}: {encr[0]} needs an integrity algorithm (e.g. sha256)")
    if not prop.of(TransformType.PRF):
        prfs = [catalogue.get(_INTEG_TO_PRF[t.keyword]) for t in prop.of(TransformType.INTEG)
                if t.keyword in _INTEG_TO_PRF]
        if not prfs:
            raise ProposalSyntaxError(f"{text!r}: no pseudo-random function (e.g. prfsha256)")
        prop.transforms[TransformType.PRF] = prfs
    if not prop.of(TransformType.KE):
        raise ProposalSyntaxError(f"{text!r}: no key exchange method (e.g. x25519, modp2048)")
    if aead and prop.of(TransformType.INTEG):
        _drop_aead_integrity(text, prop, "IKE")
    return _ordered(prop)


def _drop_aead_integrity(text: str, prop: Proposal, what: str) -> None:
    """An AEAD cipher authenticates by itself, so an AEAD proposal carries no integrity
    transform (RFC 5282 section 8 for IKE, RFC 4106 section 8.1 / RFC 7634 section 3 for ESP).
    strongSwan silently removes one written next to it; we remove it and say so."""
    dropped = prop.transforms.pop(TransformType.INTEG)
    _warn_once(f"{what} proposal {text!r}: {', '.join(t.keyword for t in prop.of(TransformType.ENCR))} "
               f"authenticates by itself, so the integrity algorithm "
               f"{', '.join(t.keyword for t in dropped)} was dropped (as strongSwan does); "
               f"the proposal in use is {_ordered(prop)}")


def parse_esp(text: str) -> Proposal:
    """An ESP proposal. A KE group in it means PFS for rekeying (kept, not used by the first
    CHILD_SA). Without esn/noesn, noesn is proposed (strongSwan's default)."""
    prop = _parse(text, PROTO_ESP)
    if prop.of(TransformType.PRF):
        raise ProposalSyntaxError(f"{text!r}: a PRF belongs in IKE proposals, not ESP")
    encr = prop.of(TransformType.ENCR)
    if not encr:
        raise ProposalSyntaxError(f"{text!r}: no encryption algorithm (e.g. aes128gcm16)")
    aead = [t for t in encr if t.primitive is Primitive.AEAD]
    if aead and len(aead) != len(encr):
        raise ProposalSyntaxError(f"{text!r}: mixes AEAD and non-AEAD ciphers; write two proposals")
    if not aead and not prop.of(TransformType.INTEG):
        raise ProposalSyntaxError(f"{text!r}: {encr[0]} needs an integrity algorithm (e.g. sha256)")
    if not prop.of(TransformType.ESN):
        prop.transforms[TransformType.ESN] = [catalogue.get("noesn")]
    if aead and prop.of(TransformType.INTEG):
        _drop_aead_integrity(text, prop, "ESP")
    return _ordered(prop)


_ORDER = (TransformType.ENCR, TransformType.PRF, TransformType.INTEG, TransformType.KE,
          TransformType.ESN)


def _ordered(prop: Proposal) -> Proposal:
    prop.transforms = {tt: prop.transforms[tt] for tt in _ORDER if tt in prop.transforms}
    return prop


def check_proposal_strings(texts: list[str], esp: bool) -> None:
    """Raise ProposalSyntaxError for the first string that does not parse."""
    for text in texts:
        (parse_esp if esp else parse_ike)(text)


# -- SA payload conversion ---------------------------------------------------------------------
def to_raw(prop: Proposal, number: int, spi: bytes = b""):
    from ocfpy.ike.codec.payloads import RawProposal, RawTransform

    raw = RawProposal(number, prop.protocol, spi)
    for lst in prop.transforms.values():
        for t in lst:
            tt, tid, bits = t.ike_id  # type: ignore[misc]
            raw.transforms.append(RawTransform(int(tt), tid, bits))
    return raw


def from_raw(raw) -> Proposal:
    """A peer's proposal in catalogue terms; transforms we do not know stay in ``unknown``."""
    prop = Proposal(raw.protocol, number=raw.number, spi=raw.spi)
    for rt in raw.transforms:
        t = None
        if not rt.unknown_attributes and rt.type in TYPE_NAMES:
            t = catalogue.by_ike_id(rt.type, rt.id, rt.key_bits)
            if t is None and (rt.type, rt.id, rt.key_bits) == (TransformType.KE, 0, None):
                t = KE_NONE
        if t is None:
            prop.unknown.append(rt.key())
            # a type we know with only unknown IDs still counts as present (for explanations)
            if rt.type in TYPE_NAMES:
                prop.transforms.setdefault(TransformType(rt.type), [])
            continue
        prop.transforms.setdefault(TransformType(rt.type), []).append(t)
    return prop


def servable(props: list[Proposal], can_serve) -> tuple[list[Proposal], list[str]]:
    """Only what the dispatcher can serve (a forced backend narrows this); also what was dropped."""
    out: list[Proposal] = []
    dropped: list[str] = []
    for p in props:
        q = Proposal(p.protocol, number=p.number, spi=p.spi)
        ok = True
        for tt, lst in p.transforms.items():
            keep = [t for t in lst if t.primitive is Primitive.FLAG or can_serve(t)]
            dropped += [t.keyword for t in lst if t not in keep and t.keyword not in dropped]
            if not keep:
                ok = False
            q.transforms[tt] = keep
        if ok:
            out.append(q)
    return out, dropped


# -- selection --------------------------------------------------------------------------------
def _types(prop: Proposal, ignore_ke: bool) -> set[TransformType]:
    types = set(prop.transforms)
    if ignore_ke:
        types.discard(TransformType.KE)
    return types


def _ke_lists(offered: Proposal, ours: Proposal) -> tuple[list[Transform], list[Transform]]:
    """The KE transforms of an ESP/AH pair, where a proposal without a KE transform counts as
    offering NONE only (RFC 7296 3.3.3: the type is optional there). A peer proposal whose KE
    transforms are all unknown to us still has the type, so it never reads as NONE."""
    theirs = offered.of(TransformType.KE) if TransformType.KE in offered.transforms else [KE_NONE]
    mine = ours.of(TransformType.KE) if TransformType.KE in ours.transforms else [KE_NONE]
    return theirs, mine


def _match(offered: Proposal, ours: Proposal, ignore_ke: bool
           ) -> tuple[Proposal | None, list[TransformType]]:
    """The chosen proposal (one transform per type, the peer's preference), or the types with
    no overlap."""
    if offered.protocol != ours.protocol:
        return None, []
    chosen = Proposal(offered.protocol, number=offered.number, spi=offered.spi)
    missing: list[TransformType] = []
    for tt in sorted(_types(offered, ignore_ke) | _types(ours, ignore_ke)):
        theirs, mine = offered.of(tt), ours.of(tt)
        if tt == TransformType.KE and offered.protocol != PROTO_IKE:
            theirs, mine = _ke_lists(offered, ours)
        pick = next((t for t in theirs if t in mine), None)
        if pick is None:
            missing.append(tt)
        elif pick == KE_NONE and tt not in offered.transforms:
            continue  # no KE offered, none chosen: the answer names no KE transform either
        else:
            chosen.transforms[tt] = [pick]
    if missing:
        return None, missing
    return _ordered(chosen), []


def select(offered: list[Proposal], ours: list[Proposal], *, ignore_ke: bool = False
           ) -> Proposal | None:
    """strongSwan's default: the first of the peer's proposals that matches one of ours."""
    for o in offered:
        for m in ours:
            chosen, _ = _match(o, m, ignore_ke)
            if chosen is not None:
                warn_if_weak(chosen)
                return chosen
    return None


def accepts(chosen: Proposal, offered: list[Proposal], *, ignore_ke: bool = False) -> bool:
    """Whether the peer's choice is one transform per type out of one of our proposals. In ESP
    an answer without a KE transform is NONE (_ke_lists): acceptable where we offered NONE,
    which is how strongSwan answers an optional-PFS offer when it has no group configured."""
    for o in offered:
        types_c, types_o = _types(chosen, ignore_ke), _types(o, ignore_ke)
        if chosen.protocol != PROTO_IKE and not ignore_ke:
            # _match has checked the KE choice against our list, NONE included
            types_c, types_o = types_c | {TransformType.KE}, types_o | {TransformType.KE}
        if all(len(lst) == 1 for lst in chosen.transforms.values()) and \
                _match(chosen, o, ignore_ke)[0] is not None and types_c == types_o:
            warn_if_weak(chosen)
            return True
    return False


def pfs_group(prop: Proposal) -> Transform | None:
    """The key exchange a chosen ESP proposal asks for in CREATE_CHILD_SA, None for no PFS."""
    group = prop.first(TransformType.KE)
    return None if group == KE_NONE else group


def with_optional_pfs(props: list[Proposal], group: Transform | None) -> list[Proposal]:
    """What we offer in CREATE_CHILD_SA (RFC 7296 1.3.1, 1.3.2): an ESP proposal configured
    without a KE group offers ``group`` (the IKE SA's) and NONE, in that order, so a peer that
    requires PFS (libreswan's default pfs=yes takes the IKE SA's group) picks the group and a
    peer without PFS (charon's default ESP proposals name none) picks NONE. Proposals that name
    groups are left alone: the user asked for PFS with exactly those. Copies; the cached
    proposals stay as configured."""
    if group is None:
        return props
    out = []
    for p in props:
        if TransformType.KE not in p.transforms:
            p = Proposal(p.protocol, dict(p.transforms), p.number, p.spi, list(p.unknown))
            p.transforms[TransformType.KE] = [group, KE_NONE]
            p = _ordered(p)
        out.append(p)
    return out


def with_peer_pfs(props: list[Proposal], groups: list[Transform]) -> list[Proposal]:
    """What we accept as CREATE_CHILD_SA responder: an ESP proposal configured without a KE
    group accepts no key exchange (NONE) and any of ``groups`` (those we accept for the IKE SA),
    so an initiator that insists on PFS (libreswan's pfs=yes) gets it: more PFS costs one key
    exchange and never weakens the CHILD_SA, and the groups are the ones we already trust for
    IKE. The initiator's order decides between them (RFC 7296 2.7), as for every other type.
    Proposals that name groups are left alone (PFS required, with those groups)."""
    out = []
    for p in props:
        if TransformType.KE not in p.transforms and groups:
            p = Proposal(p.protocol, dict(p.transforms), p.number, p.spi, list(p.unknown))
            p.transforms[TransformType.KE] = [KE_NONE, *groups]
            p = _ordered(p)
        out.append(p)
    return out


def _fmt(props: list[Proposal]) -> str:
    return "; ".join(str(p) for p in props) if props else "nothing"


def explain_mismatch(offered: list[Proposal], ours: list[Proposal], *, what: str = "IKE",
                     ignore_ke: bool = False, backend: str | None = None,
                     dropped: list[str] | None = None) -> str:
    """One paragraph: what the peer offered, what we accept, which type had no overlap,
    and the nearest match."""
    best: tuple[int, Proposal, Proposal, list[TransformType]] | None = None
    for o in offered:
        for m in ours:
            _, missing = _match(o, m, ignore_ke)
            if o.protocol != m.protocol:
                continue
            if best is None or len(missing) < best[0]:
                best = (len(missing), o, m, missing)
    text = [f"no {what} proposal in common. The peer offered: {_fmt(offered)}"
            f"{_libreswan_note(offered)}. We accept: {_fmt(ours)}."]
    if best is not None and best[3]:
        _, o, m, missing = best
        for tt in missing:
            theirs = ", ".join(t.keyword for t in o.of(tt)) or "none"
            unknown = [u for u in o.unknown if u[0] == tt]
            if unknown:
                theirs += f" (+{len(unknown)} transform(s) ocfpy does not know)"
            mine = ", ".join(t.keyword for t in m.of(tt)) or "none"
            text.append(f"No overlap in the {TYPE_NAMES.get(tt, tt)}: peer offers {theirs}, "
                        f"we accept {mine}.")
        text.append(f"Nearest match: peer proposal #{o.number} ({o}) against our {m}; "
                    f"it differs only in the {', '.join(TYPE_NAMES.get(t, str(t)) for t in missing)}.")
    if dropped:
        who = f"the forced crypto backend {backend!r}" if backend else "no active driver"
        text.append(f"Not offered/accepted because {who} cannot serve them: {', '.join(dropped)}.")
    return " ".join(text)


# libreswan's names (ipsec.conf ike=/esp=, libreswan 4.x) where they differ from ocfpy's
# strongSwan keywords, so that `sa why` also speaks the words a libreswan user has in front of
# them (issue 15). Not listed: the same word in both (aes128, sha1, modp2048, ...).
_LIBRESWAN = {
    "aes128gcm16": "aes_gcm128", "aes192gcm16": "aes_gcm192", "aes256gcm16": "aes_gcm256",
    "aes128ctr": "aes_ctr128", "aes192ctr": "aes_ctr192", "aes256ctr": "aes_ctr256",
    "chacha20poly1305": "chacha20_poly1305",
    "sha256": "sha2_256", "sha384": "sha2_384", "sha512": "sha2_512", "aesxcbc": "aes_xcbc",
    "prfsha1": "sha1", "prfsha256": "sha2_256", "prfsha384": "sha2_384",
    "prfsha512": "sha2_512", "prfaesxcbc": "aes_xcbc",
    "ecp256": "dh19", "ecp384": "dh20", "ecp521": "dh21", "x25519": "dh31", "x448": "dh32",
}


def libreswan_words(prop: Proposal) -> str:
    """``prop`` as libreswan writes it: ``ike=ENCR-PRF;DH`` for an AEAD IKE proposal,
    ``ENCR-INTEG;DH`` otherwise (libreswan derives the PRF from the integrity algorithm),
    ``esp=ENCR[-INTEG][;DH]``; alternatives of one type joined with ``+`` as libreswan does."""
    def names(tt: TransformType) -> str:
        return "+".join(_LIBRESWAN.get(t.keyword, t.keyword) for t in prop.of(tt))

    second = names(TransformType.INTEG) or (
        names(TransformType.PRF) if prop.protocol == PROTO_IKE else "")
    text = "-".join(w for w in (names(TransformType.ENCR), second) if w)
    ke = names(TransformType.KE)
    key = "ike" if prop.protocol == PROTO_IKE else "esp"
    return f"{key}={text}{';' + ke if ke else ''}"


def _libreswan_note(offered: list[Proposal]) -> str:
    words = [libreswan_words(p) for p in offered if p.transforms and not p.unknown]
    if not words:
        return ""
    return f" (in libreswan's words: {', '.join(words)})"

