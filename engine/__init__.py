"""HL7 v2 referral engine."""
