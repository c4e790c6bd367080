"""Compatibility re-export for engine/web and engine/routes until they import from
engine.store.ledger.repository (the module moved there); no code of its own."""

from engine.store.ledger.repository import referral_facts

__all__ = ["referral_facts"]
