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
    # Any code the mappers read a specialty from (PRD-4.1, PRD-7.1, OBR-4.1, PR1-3.1, AIL-3.1,
    # AIS-3.1, AIP-3.1) → the specialty the ledger compares; keys upper-case
    specialties: dict[str, str] = field(default_factory=dict)
    # Orders: the field that names the referred-to provider (an XCN), e.g. OBR.28, PRT.5 or a
    # Z-segment's; no standard ORC/OBR field does.  "" reads none.
    referred_to: str = ""
    # SIU fields (EI, repeating) that name the referral beside SCH-26/27, tried after them: SCH-4
    # placer group, a site's Z-field (the third link: configurable, off by default)
    link_fields: tuple[str, ...] = ()

    def specialty(self, code: str) -> str:
        """The mapped specialty of `code` (case ignored), or ""."""
        return self.specialties.get(code.upper(), "") if code else ""


def link_name(path: str) -> str:
    """A link field's name in history and `via`: `SCH.4` → `SCH-4`, `ZRF[2].1.1` → `ZRF-1`."""
    segment, _, rest = path.partition(".")
    return f"{segment.split('[')[0]}-{rest.split('.')[0].split('[')[0]}"
