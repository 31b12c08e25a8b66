"""Which payloads each exchange may carry, how many, and whether encrypted (strongSwan's
encoding/message.c payload_rule_t, as a table).

Counts are checked on the payloads as decrypted; unknown non-critical payloads are ignored
(RFC 7296 2.5). A payload type that the exchange does not allow is INVALID_SYNTAX.
"""

from __future__ import annotations

from collections import Counter

from ocfpy.ike.constants import ExchangeType as X
from ocfpy.ike.constants import PayloadType as P
from ocfpy.ike.errors import DecodeError

MANY = 1 << 16

# (exchange, is_response) -> (encrypted, {payload type: (min, max)})
RULES: dict[tuple[int, bool], tuple[bool, dict[int, tuple[int, int]]]] = {
    (X.IKE_SA_INIT, False): (False, {
        P.NOTIFY: (0, MANY), P.SA: (1, 1), P.KE: (1, 1), P.NONCE: (1, 1),
        P.VENDOR_ID: (0, MANY), P.CERTREQ: (0, MANY),
    }),
    (X.IKE_SA_INIT, True): (False, {
        P.NOTIFY: (0, MANY), P.SA: (0, 1), P.KE: (0, 1), P.NONCE: (0, 1),
        P.VENDOR_ID: (0, MANY), P.CERTREQ: (0, MANY),
    }),
    (X.IKE_AUTH, False): (True, {
        P.NOTIFY: (0, MANY), P.IDi: (1, 1), P.CERT: (0, 4), P.CERTREQ: (0, MANY),
        P.IDr: (0, 1), P.AUTH: (0, 1), P.SA: (0, 1), P.TSi: (0, 1), P.TSr: (0, 1),
        P.CP: (0, 1), P.EAP: (0, 1), P.VENDOR_ID: (0, MANY),
    }),
    (X.IKE_AUTH, True): (True, {
        P.NOTIFY: (0, MANY), P.IDr: (0, 1), P.CERT: (0, 4), P.AUTH: (0, 1), P.SA: (0, 1),
        P.TSi: (0, 1), P.TSr: (0, 1), P.CP: (0, 1), P.EAP: (0, 1), P.VENDOR_ID: (0, MANY),
        P.CERTREQ: (0, MANY),
    }),
    (X.CREATE_CHILD_SA, False): (True, {
        P.NOTIFY: (0, MANY), P.SA: (1, 1), P.NONCE: (1, 1), P.KE: (0, 1), P.TSi: (0, 1),
        P.TSr: (0, 1), P.CP: (0, 1), P.VENDOR_ID: (0, MANY),
    }),
    (X.CREATE_CHILD_SA, True): (True, {
        P.NOTIFY: (0, MANY), P.SA: (0, 1), P.NONCE: (0, 1), P.KE: (0, 1), P.TSi: (0, 1),
        P.TSr: (0, 1), P.CP: (0, 1), P.VENDOR_ID: (0, MANY),
    }),
    (X.INFORMATIONAL, False): (True, {
        P.NOTIFY: (0, MANY), P.DELETE: (0, MANY), P.CP: (0, 1), P.VENDOR_ID: (0, MANY),
    }),
    (X.INFORMATIONAL, True): (True, {
        P.NOTIFY: (0, MANY), P.DELETE: (0, MANY), P.CP: (0, 1), P.VENDOR_ID: (0, MANY),
    }),
}

_KNOWN = {int(p) for p in P}


def is_encrypted(exchange: int) -> bool:
    rule = RULES.get((exchange, False))
    return rule[0] if rule else True


def check(exchange: int, is_response: bool, payloads: list) -> None:
    rule = RULES.get((exchange, is_response))
    if rule is None:
        raise DecodeError(f"exchange type {exchange} is not one we handle")
    allowed = rule[1]
    counts: Counter[int] = Counter()
    for p in payloads:
        t = int(p.TYPE)
        if t not in allowed:
            if t not in _KNOWN:  # unknown and not critical (pull_payloads raised otherwise)
                continue
            if t == P.SK:
                raise DecodeError("an encrypted payload inside an encrypted payload")
            raise DecodeError(f"{P(t).name} payload is not allowed in "
                              f"{X(exchange).name} {'response' if is_response else 'request'}")
        counts[t] += 1
    for t, (lo, hi) in allowed.items():
        n = counts.get(t, 0)
        if n < lo or n > hi:
            raise DecodeError(f"{X(exchange).name} {'response' if is_response else 'request'} "
                              f"carries {n} {P(t).name} payload(s); allowed {lo}..{hi if hi < MANY else 'n'}")
