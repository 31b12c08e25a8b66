"""The MODP primes in ocfpy.crypto.modp, re-derived from the RFCs' formula, not compared by eye.

RFC 2409 section 6.2 and RFC 3526 sections 2-7 define each prime as
  p = 2^n - 2^(n-64) - 1 + 2^64 * (floor(2^(n-130) * pi) + offset)
with the offset printed above each prime. pi comes from Machin's formula in integer arithmetic,
so nothing here trusts a transcribed digit. The copy in tests/vectors/modp_groups.json (read from
strongSwan's key_exchange.c) must agree too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ocfpy.crypto.catalogue import get as get_transform
from ocfpy.crypto.modp import MODP_GROUPS

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "modp_groups.json"


def _arctan_inverse(x: int, one: int) -> int:
    """arctan(1/x) * one, by its Taylor series in integers."""
    total = term = one // x
    x2, n, sign = x * x, 3, -1
    while term:
        term //= x2
        total += sign * (term // n)
        n += 2
        sign = -sign
    return total


def pi_scaled(bits: int) -> int:
    """floor(pi * 2^bits), exactly (guard bits absorb the series' truncation error)."""
    guard = 64
    one = 1 << (bits + guard)
    pi = 4 * (4 * _arctan_inverse(5, one) - _arctan_inverse(239, one))
    return pi >> guard


def rfc_prime(n: int, offset: int) -> int:
    return 2**n - 2 ** (n - 64) - 1 + 2**64 * (pi_scaled(n - 130) + offset)


def test_pi_is_right() -> None:
    # 2^64 * pi = 57952155664616982739.xx (a check of the helper, independent of the primes)
    assert pi_scaled(64) == 57952155664616982739


@pytest.mark.parametrize("group", sorted(MODP_GROUPS))
def test_prime_matches_rfc_formula(group: int) -> None:
    bits, offset, prime = MODP_GROUPS[group]
    assert prime == rfc_prime(bits, offset)
    assert prime.bit_length() == bits
    assert get_transform(f"modp{bits}").group == group
    assert get_transform(f"modp{bits}").public_size * 8 == bits


def test_primes_match_the_transcribed_vectors() -> None:
    cases = json.loads(VECTORS.read_text())["cases"]
    by_group = {c["ike_group"]: c for c in cases}
    # The collection has no group 5 (1536-bit); the formula test above covers it alone.
    assert set(MODP_GROUPS) - set(by_group) == {5}
    for group, (bits, offset, prime) in MODP_GROUPS.items():
        if group not in by_group:
            continue
        case = by_group[group]
        assert (case["bits"], case["pi_offset"], case["generator"]) == (bits, offset, 2)
        assert int(case["prime"], 16) == prime
