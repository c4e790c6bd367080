"""Compatibility re-export for engine/web and engine/routes until they import from
engine.store.ledger.worklist (the module moved there); no code of its own."""

from engine.store.ledger.worklist import count, worklist

__all__ = ["count", "worklist"]
