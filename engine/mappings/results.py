"""ORU^R01 and MDM^T02 as closing documents (issue 3 "Closed loop"), when a channel enables it.

A result or document whose placer order number (ORC-2, else OBR-2; TXA-14 for MDM) names a
referral, and which carries a final consult note (a closing code in OBR-4.1 / OBX-3.1, or
TXA-2.1 for MDM, with result status F when given), closes that referral.  Results for orders the
ledger does not know are common and are not errors: the change applies only to a known referral.
"""

from __future__ import annotations

from engine.errors import Location
from engine.mappings.changes import CLOSE, Change, ReferralChange
from engine.mappings.fields import patient_ids, read_ei, text, trigger
from engine.mappings.referral import has_final_note
from engine.mappings.rules import MappingRules
from engine.parsing.message import InboundMessage


def map_results(msg: InboundMessage, rules: MappingRules) -> list[Change]:
    """A CLOSE for the referral the document answers, or [] (disabled, no note, no key)."""
    if not rules.close_on_results:
        return []
    kind = msg.header.message_type
    if kind == "MDM":
        key, where = read_ei(msg, "TXA.14"), Location("TXA", 1, 14)
        note = text(msg, "TXA.2.1") in rules.closing_codes and text(msg, "TXA.17") in ("", "AU")
        note = note or has_final_note(msg, rules)
    else:
        key, where = read_ei(msg, "ORC.2") or read_ei(msg, "OBR.2"), Location("OBR", 1, 2)
        note = has_final_note(msg, rules)
    if key is None or not note:
        return []
    return [ReferralChange(
        event=CLOSE, source="REF", key=key, key_location=where, trigger=trigger(msg),
        owner=text(msg, "MSH.3.1"), status_code="final note",
        patient_ids=patient_ids(msg) if msg.segment("PID") else (), if_known=True)]
