"""One error root and one ACK table: each error type maps to one ACK code and one table-0357
code.

Every condition the engine answers with something other than AA/CA is an `HL7Error` subclass.  Each
subclass names its table-0357 code and whether it rejects the message (AR/CR: header or transport
level) or errors it (AE: content, or a failure to commit).  Error text never carries patient data:
only segment, field and code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Disposition(enum.Enum):
    """What happened to a message, before mapping onto original or enhanced ACK codes."""

    ACCEPTED = "accepted"  # AA / CA
    ERRORED = "errored"  # AE / CA then AE (content), or CE when nothing was committed
    REJECTED = "rejected"  # AR / CR


# Table 0357 text, as sent in ERR-3.2 / ERR-1.4.2.
TABLE_0357: dict[str, str] = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "104": "Value too long",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}


@dataclass(frozen=True, slots=True)
class Location:
    """An ERR-2 (ERL) location: segment^sequence^field, 1-based.  field 0 means the segment itself."""

    segment: str
    sequence: int = 1
    field: int = 0

    def erl(self) -> tuple[str, ...]:
        """The ERL components, without trailing empties."""
        if self.field:
            return (self.segment, str(self.sequence), str(self.field))
        return (self.segment, str(self.sequence))

    def __str__(self) -> str:
        return "^".join(self.erl())

    @classmethod
    def parse(cls, text: str) -> Location | None:
        """Read back `SEG^seq^field` as stored; empty text is no location."""
        if not text:
            return None
        parts = text.split("^")
        return cls(parts[0], int(parts[1]) if len(parts) > 1 else 1,
                   int(parts[2]) if len(parts) > 2 else 0)


SHOWN_MAX = 20  # characters of a rejected header value quoted back in ERR-8 and the log


def shown(value: str) -> str:
    """A rejected header value as ACK text may quote it: printable ASCII only (anything else
    becomes `?`), at most SHOWN_MAX characters, `(empty)` for nothing.  Header fields of a
    damaged frame may hold any text, patient data included, so no more is echoed."""
    if not value:
        return "(empty)"
    cut = value[:SHOWN_MAX - 3] + "..." if len(value) > SHOWN_MAX else value
    return "".join(c if " " <= c <= "~" else "?" for c in cut)


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""


class CannotListen(EngineError):
    """A channel's listener could not bind its address (in use, not ours, no permission)."""

    def __init__(self, channel: str, host: str, port: int, reason: str) -> None:
        super().__init__(f"channel {channel}: cannot listen on {host}:{port} ({reason})")
        self.channel = channel
        self.host = host
        self.port = port
        self.reason = reason


class BodyPurged(EngineError):
    """A message's body was emptied by retention (`engine.store.retention`): its metadata, digest
    and history stay, its bytes are gone, so it cannot be shown or replayed."""

    def __init__(self, message_id: int, purged_at: datetime) -> None:
        super().__init__(f"message {message_id}: body purged "
                         f"{purged_at.isoformat(timespec='seconds')}Z "
                         f"(retention: message_bodies_days)")
        self.message_id = message_id
        self.purged_at = purged_at


class HL7Error(EngineError):
    """A condition answered with an ERR segment.  Subclasses fix `code` and `disposition`."""

    code: str = "207"
    disposition: Disposition = Disposition.REJECTED

    def __init__(self, reason: str, location: Location | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.location = location

    def __str__(self) -> str:
        where = f" at {self.location}" if self.location else ""
        return f"{self.code} {TABLE_0357[self.code]}{where}: {self.reason}"


# --- header (MSH) conditions: AR in original mode, CR in the accept ACK of enhanced mode -------


class NotHL7(HL7Error):
    """No MSH segment at all: garbage bytes, a port scanner, an HTTP probe."""

    code = "100"


class BadEncodingCharacters(HL7Error):
    """MSH-1/MSH-2 do not define a usable delimiter set."""

    code = "100"


class RequiredHeaderFieldMissing(HL7Error):
    """MSH-9 or MSH-10 empty."""

    code = "101"


class UnsupportedCharset(HL7Error):
    """MSH-18 names a character set outside table 0211 as we read it."""

    code = "103"


class HeaderValueTooLong(HL7Error):
    """An MSH field the engine keeps (MSH-3, MSH-4, MSH-10) is longer than it stores, or holds a
    NUL: rejected (table 0357 104, value too long) before duplicate detection could be inexact."""

    code = "104"


class UnsupportedMessageType(HL7Error):
    code = "200"


class UnsupportedTrigger(HL7Error):
    code = "201"


class UnsupportedProcessingId(HL7Error):
    code = "202"


class UnsupportedVersion(HL7Error):
    code = "203"


# --- content and processing conditions: AE --------------------------------------------------


class ContentError(HL7Error):
    """Base for per-message-type content rules (the ledger's): AE with a 0357 code."""

    disposition = Disposition.ERRORED


class CommitFailed(HL7Error):
    """The store could not commit the message: nothing is promised, the sender should resend."""

    code = "207"
    disposition = Disposition.ERRORED


class RecordLocked(HL7Error):
    """The database stayed locked by another writer past the wait (SQLite's busy timeout, a
    PostgreSQL lock timeout, deadlock or serialisation failure): nothing was stored; AR 206
    (CE in enhanced mode): the sender may retry later."""

    code = "206"
    disposition = Disposition.REJECTED


class InternalError(HL7Error):
    """An unexpected failure while processing; the message is stored, the sender is told AR 207."""

    code = "207"
