"""What one delivery attempt comes to (a typed outcome), and the `Deliverer` port that makes attempts.

An attempt is `Accepted` (AA/CA, or a file in place), `Rejected` (AE/AR/CE/CR), `InvalidAck`
(a correlated ACK whose MSA-1 is none of those), `TimedOut` (no correlated ACK in time),
`Errored` (the attempt failed for this message: the connection lost before the ACK, an MLLP
release 2 NAK, a file that could not be written) or `Unreachable` (nothing was sent: the whole
destination waits, not one key).  `classify` turns a correlated ACK's MSA-1 into one of the
first three.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred

ACCEPTING = frozenset({"AA", "CA"})
REJECTING = frozenset({"AE", "AR", "CE", "CR"})


@dataclass(frozen=True, slots=True)
class Accepted:
    """The destination took the message: an AA/CA ACK (as received), or a file in place."""

    code: str = ""
    ack: bytes | None = None

    @property
    def error(self) -> str:
        return ""


@dataclass(frozen=True, slots=True)
class Rejected:
    """The downstream answered AE, AR, CE or CR."""

    code: str
    ack: bytes

    @property
    def error(self) -> str:
        return f"downstream answered {self.code}"


@dataclass(frozen=True, slots=True)
class InvalidAck:
    """A correlated ACK whose MSA-1 is not an acknowledgment code."""

    code: str
    ack: bytes

    @property
    def error(self) -> str:
        return f"downstream answered {self.code}"


class _NoAck:
    """Outcomes without an ACK from the downstream."""

    __slots__ = ()

    @property
    def code(self) -> str:
        return ""

    @property
    def ack(self) -> bytes | None:
        return None


@dataclass(frozen=True, slots=True)
class TimedOut(_NoAck):
    """No correlated ACK within the destination's `ack_timeout_s`."""

    timeout_s: float

    @property
    def error(self) -> str:
        return f"no ACK within {self.timeout_s:g} s"


@dataclass(frozen=True, slots=True)
class Errored(_NoAck):
    """The attempt failed for this message (the text says how)."""

    error: str


@dataclass(frozen=True, slots=True)
class Unreachable(_NoAck):
    """Nothing was sent (no connection, a failed TLS handshake, an unusable directory): the
    whole destination waits, whatever its order."""

    error: str


Outcome = Accepted | Rejected | InvalidAck | TimedOut | Errored | Unreachable


def classify(code: str, ack: bytes) -> Accepted | Rejected | InvalidAck:
    """The outcome of a correlated ACK with MSA-1 `code`."""
    if code in ACCEPTING:
        return Accepted(code, ack)
    if code in REJECTING:
        return Rejected(code, ack)
    return InvalidAck(code, ack)


class Deliverer(Protocol):
    """Sends one queued payload to a destination; one attempt at a time, on the reactor."""

    def deliver(self, row_id: int, payload: bytes) -> Deferred[Outcome]:
        """Fires with the attempt's outcome (never fails)."""

    def close(self, reason: str) -> None:
        """Drop what is kept open between attempts; one under way ends `Errored(reason)`."""
