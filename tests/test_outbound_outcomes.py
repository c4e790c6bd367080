"""How a delivery attempt is classified: a correlated ACK's MSA-1 becomes Accepted, Rejected or
InvalidAck, and every outcome carries the code, ACK and error text the bookkeeping records."""

from __future__ import annotations

import pytest

from engine.outbound.outcomes import (
    Accepted,
    Errored,
    InvalidAck,
    Rejected,
    TimedOut,
    Unreachable,
    classify,
)
from engine.outbound.status import AttemptResult, OutboundStatus, attempt_result

ACK = b"MSH|^~\\&|SINK|DOWN|REFTRACK|HUB|20260101||ACK^I12^ACK|S1|P|2.5.1\rMSA|AA|OUT-1\r"


@pytest.mark.parametrize("code", ["AA", "CA"])
def test_an_accepting_ack_is_accepted_with_no_error(code: str) -> None:
    """AA and CA: delivered; the ACK is kept as received."""
    outcome = classify(code, ACK)
    assert outcome == Accepted(code, ACK)
    assert (outcome.code, outcome.ack, outcome.error) == (code, ACK, "")


@pytest.mark.parametrize("code", ["AE", "AR", "CE", "CR"])
def test_a_negative_ack_is_rejected_and_says_what_the_downstream_answered(code: str) -> None:
    """AE, AR, CE, CR: rejected; the error names the code, the ACK is kept for the record."""
    outcome = classify(code, ACK)
    assert isinstance(outcome, Rejected)
    assert (outcome.code, outcome.ack, outcome.error) == (code, ACK, f"downstream answered {code}")


@pytest.mark.parametrize("code", ["", "XX", "aa", "AAA"])
def test_any_other_msa1_is_an_invalid_ack(code: str) -> None:
    """An MSA-1 outside the acknowledgment codes (empty, unknown, lower case) is no acceptance."""
    outcome = classify(code, ACK)
    assert isinstance(outcome, InvalidAck)
    assert (outcome.code, outcome.ack) == (code, ACK)
    assert outcome.error == f"downstream answered {code}"


def test_outcomes_without_an_ack_carry_only_their_error() -> None:
    """A timeout, a failed attempt and an unreachable destination have no code and no ACK."""
    cases = [(TimedOut(0.3), "no ACK within 0.3 s"), (TimedOut(30.0), "no ACK within 30 s"),
             (Errored("connection: closed by the destination before its ACK"),
              "connection: closed by the destination before its ACK"),
             (Unreachable("connection: refused"), "connection: refused")]
    for outcome, error in cases:
        assert (outcome.code, outcome.ack, outcome.error) == ("", None, error)


def test_row_statuses_are_stored_as_their_words_and_counted_by_attempt_result() -> None:
    """The enum's values are the words the `outbound.status` column holds; an attempt that
    leaves its row queued counts as a retry."""
    assert [s.value for s in OutboundStatus] == ["queued", "delivered", "dead"]
    assert [attempt_result(s) for s in OutboundStatus] == [
        AttemptResult.RETRY, AttemptResult.DELIVERED, AttemptResult.DEAD]
