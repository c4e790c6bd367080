"""Compatibility re-export for engine/web and engine/routes until they import from
engine.store.ledger.views (the module moved there); no code of its own."""

from engine.store.ledger.views import (
    ReferralFilter,
    changes_of_message,
    count_appointments,
    find_referral,
    list_appointments,
    overdue_counts,
    referral_page,
    status_counts,
)

__all__ = ["ReferralFilter", "changes_of_message", "count_appointments", "find_referral",
           "list_appointments", "overdue_counts", "referral_page", "status_counts"]
