"""REF and RRI I12-I15: one `ReferralChange` keyed on RF1-6.

REF comes from the referring system: I12 opens, I13 modifies (or changes status through RF1-1),
I14 cancels, I15 asks for status.  RRI comes back from the referred-to system: RF1-1 carries its
answer (table 0283).  Either carrying a final consult note closes the loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from engine.errors import Location
from engine.mappings.changes import (
    ACCEPT,
    CANCEL,
    CLOSE,
    EXPIRE,
    MODIFY,
    NOTE,
    NOTHING_CLEARED,
    OPEN,
    REJECT,
    Change,
    Provider,
    ReferralChange,
    RequiredFieldMissing,
    RequiredSegmentMissing,
    UnknownCode,
)
from engine.mappings.fields import (
    diagnoses,
    dtm_value,
    ei_from_wire,
    eis_of,
    leaf,
    leaves,
    nulled,
    patient_ids,
    person_name,
    text,
    trigger,
)
from engine.mappings.rules import MappingRules
from engine.parsing.message import STANDARD, InboundMessage

KEY_LOCATION = Location("RF1", 1, 6)
_WINDOW_START, _WINDOW_END = Location("RF1", 1, 7), Location("RF1", 1, 8)
TABLE_0283 = frozenset({"A", "E", "P", "R"})  # referral status: what I12, I13 and RRI act on
TRIGGERS = frozenset({"I12", "I13", "I14", "I15"})

# Table 0283 referral status → event, for I13 and RRI.
_STATUS_EVENTS = {"A": ACCEPT, "R": REJECT, "E": EXPIRE}
# REF events that do not depend on RF1-1.
_REF_EVENTS = {"I12": OPEN, "I14": CANCEL, "I15": NOTE}


def map_ref(msg: InboundMessage, rules: MappingRules) -> list[Change]:
    """The change a REF or RRI I12-I15 makes to its referral; [] for any other message."""
    h = msg.header
    kind, event_code = h.message_type, h.trigger
    if kind not in ("REF", "RRI") or event_code not in TRIGGERS:
        return []
    # PID and at least one PRD are required in REF_I12 and RRI_I12.
    if msg.segment("PID") is None:
        raise RequiredSegmentMissing("PID segment is missing", Location("PID", 1))
    prds = msg.segments_named("PRD")
    if not prds:
        raise RequiredSegmentMissing("PRD segment is missing (at least one provider)",
                                     Location("PRD", 1))
    rf1 = msg.segment("RF1")
    key = ei_from_wire(msg, msg.field_wire(rf1, 6))
    if key is None:
        raise RequiredFieldMissing("RF1-6 (originating referral identifier) is empty",
                                   KEY_LOCATION)
    status, priority, start, end = leaves(msg, rf1, 1, 2, 7, 8)
    window_start = dtm_value(start, _WINDOW_START)
    window_end = dtm_value(end, _WINDOW_END)
    if status and status.upper() not in TABLE_0283 and (kind == "RRI" or event_code in ("I12",
                                                                                         "I13")):
        raise UnknownCode("RF1-1 (referral status) is not a table 0283 code (A, E, P, R)",
                          Location("RF1", 1, 1))
    providers = _providers(msg, prds)
    return [ReferralChange(
        event=_event(msg, kind, event_code, status.upper(), rules),
        source="REF",
        key=key,
        key_location=KEY_LOCATION,
        trigger=trigger(msg),
        owner=leaf(msg, msg.segments[0], 3),
        status_code=status,
        patient_ids=patient_ids(msg),
        external_ids=eis_of(msg, msg.field_repetitions(rf1, 11)),
        priority=priority,
        specialty=_specialty(msg, providers, rules),
        window_start=window_start,
        window_end=window_end,
        providers=providers,
        diagnoses=diagnoses(msg),
        cleared=_cleared(msg) if kind == "REF" and event_code == "I13" else NOTHING_CLEARED,
    )]


def _specialty(msg: InboundMessage, providers: tuple[Provider, ...], rules: MappingRules) -> str:
    """The referred-to provider's PRD-4.1 (point of care) through `ledger.specialties`, or
    as sent; without one, the first of OBR-4.1, PR1-3.1 and the RT provider's id (PRD-7.1)
    that `ledger.specialties` maps."""
    referred_to = None
    for provider in providers:  # a loop, not next() over a generator: one frame less
        if provider.role.upper() == "RT":
            referred_to = provider
            break
    location = referred_to.location if referred_to else ""
    if location:
        return rules.specialty(location) or location
    codes = (text(msg, "OBR.4.1"), text(msg, "PR1.3.1"), referred_to.id if referred_to else "")
    return next((s for s in map(rules.specialty, codes) if s), "")


def _cleared(msg: InboundMessage) -> frozenset[str]:
    """What a REF^I13 deletes with `""`: RF1-2 priority, RF1-7/RF1-8 window, PRD(RT)-4
    specialty.  Keys, patients and providers are never deleted by an update (README)."""
    out = {name for name, path in (("priority", "RF1.2.1"), ("window_start", "RF1.7"),
                                   ("window_end", "RF1.8")) if nulled(msg, path)}
    for n in range(1, msg.count("PRD") + 1):
        if text(msg, f"PRD[{n}].1.1").upper() == "RT" and nulled(msg, f"PRD[{n}].4.1"):
            out.add("specialty")
    return frozenset(out)


def _event(msg: InboundMessage, kind: str, event_code: str, status: str,
           rules: MappingRules) -> str:
    """Lifecycle events: I12 opens, I14 cancels, I15 notes; I13 and RRI follow RF1-1 or close."""
    if kind == "REF" and event_code != "I13":
        return _REF_EVENTS[event_code]
    if has_final_note(msg, rules):
        return CLOSE
    return _STATUS_EVENTS.get(status, MODIFY if kind == "REF" else NOTE)


def has_final_note(msg: InboundMessage, rules: MappingRules) -> bool:
    """A final consult note: an OBR (OBR-4.1) or OBX (OBX-3.1) with a closing code whose result
    status (OBR-25 / OBX-11, table 0085/0123), when given, is F."""
    codes = rules.closing_codes
    for segment, code_field, status_field in (("OBR", 4, 25), ("OBX", 3, 11)):
        for seg in msg.segments_named(segment):
            code = leaf(msg, seg, code_field)
            status = leaf(msg, seg, status_field)
            if code and code in codes and status.upper() in ("", "F"):
                return True
    return False


def _providers(msg: InboundMessage, prds: Sequence[tuple[str, ...]]) -> tuple[Provider, ...]:
    """Every PRD: PRD-1.1 role (table 0286), PRD-7.1 id, PRD-2 name, PRD-4.1 point of care.
    A sender names the same few providers again and again: a short PRD in the standard
    delimiters is read once per text and charset (`_seen_provider`)."""
    standard, charset = msg.delimiters is STANDARD, msg.charset
    return tuple([_seen_provider(prd, charset) if standard and sum(map(len, prd)) <= SEEN_PRD_MAX
                  else _provider(msg, prd) for prd in prds])


# The longest PRD (its fields' characters) `_seen_provider` keeps: the cache holds at most
# 256 of these, whatever a sender sends.
SEEN_PRD_MAX = 1024


@lru_cache(maxsize=256)
def _seen_provider(prd: tuple[str, ...], charset: str) -> Provider:
    """`_provider` of a PRD in the standard delimiters (a Provider is immutable: shared)."""
    return _provider(InboundMessage((prd,), STANDARD, charset), prd)


def _provider(msg: InboundMessage, prd: tuple[str, ...]) -> Provider:
    return Provider(leaf(msg, prd, 1), leaf(msg, prd, 7),  # role, id: positional, keywords
                    person_name(msg, msg.field_wire(prd, 2), 1), leaf(msg, prd, 4))  # cost more
