"""An accepted SA payload keeps the number of the chosen proposal (RFC 7296 section 3.3.1).

Found against strongSwan: offered two ESP proposals, charon chose the second and answered
with one proposal numbered 2, which the codec dropped as malformed.
"""

import pytest

from ocfpy.ike.codec.buffer import Buffer, Writer
from ocfpy.ike.codec.payloads import RawProposal, RawTransform, SaPayload, pull_sa, push_sa
from ocfpy.ike.errors import DecodeError


def _encode(*numbers: int) -> bytes:
    w = Writer()
    push_sa(w, SaPayload([RawProposal(n, 3, b"\x01\x02\x03\x04", [RawTransform(1, 20, 128, ())])
                          for n in numbers]))
    return w.getvalue()


def test_lone_accepted_proposal_keeps_its_number() -> None:
    sa = pull_sa(Buffer(_encode(2)))
    assert [p.number for p in sa.proposals] == [2]


def test_an_offer_still_starts_at_one() -> None:
    with pytest.raises(DecodeError, match="first proposal is number 2"):
        pull_sa(Buffer(_encode(2, 3)))
    assert [p.number for p in pull_sa(Buffer(_encode(1, 2))).proposals] == [1, 2]


def test_proposal_number_zero_is_malformed() -> None:
    with pytest.raises(DecodeError, match="number 0"):
        pull_sa(Buffer(_encode(0)))
