"""Per-channel mapping rules from `channels.yaml` (`ledger:` block): tables the mappers consult."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_CLOSING_CODES = frozenset({"11488-4"})  # LOINC: consult note


@dataclass(frozen=True, slots=True)
class MappingRules:
    # OBR-4.1 → specialty, for orders (e.g. CONSULT-NEUR → NEUR)
    order_specialties: dict[str, str] = field(default_factory=dict)
    # OBR-4.1 / OBX-3.1 codes that mark a final consult note, closing the loop
    closing_codes: frozenset[str] = DEFAULT_CLOSING_CODES
    # ORU^R01 / MDM^T02 whose placer number names a referral may close it (issue 3)
    close_on_results: bool = False
