"""The states of an outbound queue row (`outbound.status`), and what one attempt did to it."""

from __future__ import annotations

from enum import StrEnum


class OutboundStatus(StrEnum):
    """A queue row's state; stored as its text value."""

    QUEUED = "queued"  # waiting to be sent (again)
    DELIVERED = "delivered"  # the destination took it
    DEAD = "dead"  # a dead letter: given up on until `release`


FINAL = (OutboundStatus.DELIVERED, OutboundStatus.DEAD)  # statuses no worker sends again


class AttemptResult(StrEnum):
    """What one attempt did, as the metrics count it."""

    DELIVERED = "delivered"
    RETRY = "retry"  # the row stays queued and is tried again after the backoff
    DEAD = "dead"


def attempt_result(status: OutboundStatus) -> AttemptResult:
    """The metrics' word for a row's new status after an attempt."""
    return {OutboundStatus.DELIVERED: AttemptResult.DELIVERED,
            OutboundStatus.DEAD: AttemptResult.DEAD}.get(status, AttemptResult.RETRY)
