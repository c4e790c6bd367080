"""Times as the engine shows them to people and programs: UTC, ISO 8601, whole seconds, `Z`.

The database stores naive UTC (`2026-12-04 20:18:25.123456`).  Every command's text and JSON
turn a stored time into `2026-12-04T20:18:25Z` here, and nowhere else, so one format reaches
every table, history, `tail` line and `--json` object (docs/cli.md "Times").
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Now, as the store keeps times: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def as_utc(value: datetime | str) -> datetime:
    """A stored time (a naive UTC datetime, or the text SQLite's driver gives) as naive UTC; an
    aware time is converted to UTC first."""
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when


def utc_text(value: datetime | str | None) -> str | None:
    """`2026-12-04T20:18:25Z` (fractions of a second dropped), or None for no time."""
    if value is None or value == "":
        return None
    return as_utc(value).isoformat(timespec="seconds") + "Z"


def whole_days(later: datetime | str, earlier: datetime | str) -> int:
    """Whole days from `earlier` to `later` (rounded down; negative when `later` is earlier)."""
    return (as_utc(later) - as_utc(earlier)).days
