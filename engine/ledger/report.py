"""Compatibility re-export for engine/web and engine/routes until they import from
engine.store.ledger.report (the module moved there); no code of its own."""

from engine.store.ledger.report import PeriodError, build_report, period

__all__ = ["PeriodError", "build_report", "period"]
