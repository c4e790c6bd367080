"""The referral ledger: referrals, appointments, their lifecycle, matching and history."""
