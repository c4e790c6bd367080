"""The referral ledger's rules: referrals, appointments, their lifecycle, matching and history,
with no database (the reads and writes are engine.store.ledger's)."""
