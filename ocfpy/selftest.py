"""Known-answer tests a driver must pass, per algorithm, before it is admitted.

(strongSwan's crypto_test.on_add.) Placeholder contract: run(driver, keywords) returns
{keyword: reason} for every algorithm that failed; the vectors land with the OpenSSL backend.
"""

from __future__ import annotations

from .driver import Driver


def run(driver: Driver, keywords: list[str]) -> dict[str, str]:
    return {}
