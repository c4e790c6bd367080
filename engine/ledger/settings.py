"""The ledger's time rules (`ledger:` in channels.yaml): the window when RF1-8 is empty, the
deadlines to be scheduled by priority, and how often `run` sweeps.  Pure: the configuration
loads it without loading the ledger or the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache

# Days to reach `scheduled`, by priority (RF1-2 / ORC-7): STAT, ASAP, routine; any other
# priority, or none, gets routine's.
DEFAULT_DEADLINES: dict[str, float] = {"S": 1, "A": 2, "R": 14}
DEFAULT_WINDOW_DAYS = 180  # when RF1-8 is empty: open this long from receipt
DEFAULT_SWEEP_INTERVAL_MINUTES = 60  # `run` sweeps at start, then this often


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    """The ledger's time rules (`ledger:` in channels.yaml)."""

    default_window_days: int = DEFAULT_WINDOW_DAYS
    deadlines: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_DEADLINES))
    sweep_interval_minutes: int = DEFAULT_SWEEP_INTERVAL_MINUTES

    def due(self, received: datetime, priority: str) -> datetime:
        """The deadline to be scheduled of a referral of `priority` received at `received`."""
        deadlines, wanted = self.deadlines, priority.upper()
        return received + _span(deadlines[wanted] if wanted in deadlines
                                else deadlines.get("R", 14))


@lru_cache(maxsize=64)
def _span(days: float) -> timedelta:
    """So many days as a timedelta, built once (from a float it costs several times the sum)."""
    return timedelta(days)
