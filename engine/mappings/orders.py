"""ORM^O01, OMG^O19 and OSU^O51: one `ReferralChange` per ORC, keyed on ORC-2.

Each ORC starts an order group holding the OBR, TQ1 and DG1 segments up to the next ORC.  ORC-1
(table 0119) names the event; for SC the new status is in ORC-5 (table 0038).  OSU^O51 is the
360X status update for an OMG-originated referral: SC/SC confirms, DC/CA discontinues.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from engine.errors import Location
from engine.mappings.changes import (
    ACCEPT,
    CANCEL,
    COMPLETE,
    EI,
    MODIFY,
    NOTE,
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
    component,
    diagnoses,
    patient_ids,
    person_name,
    read_dtm,
    read_ei,
    text,
    trigger,
)
from engine.mappings.rules import MappingRules
from engine.parsing.message import InboundMessage

# MSH-9 → the ledger source that owns the key; OSU updates OMG-originated (360X) referrals.
SOURCES = {("ORM", "O01"): "ORM", ("OMG", "O19"): "OMG", ("OSU", "O51"): "OMG"}

# Table 0119 order control (v2.8.2, a superset of the earlier versions')
TABLE_0119 = frozenset({
    "AF", "CA", "CH", "CN", "CP", "CR", "DC", "DE", "DF", "DR", "FU", "HD", "HR", "LI", "MC",
    "NA", "NW", "OC", "OD", "OE", "OF", "OH", "OK", "OP", "OR", "PA", "PR", "PY", "RE", "RF",
    "RL", "RO", "RP", "RQ", "RR", "RU", "SC", "SN", "SR", "SS", "UA", "UC", "UD", "UF", "UH",
    "UM", "UN", "UR", "UX", "XO", "XR", "XX",
})
# Table 0119 code → event; SC is resolved through ORC-5; every other code of the table is
# recorded in the history and changes nothing.
ORDER_EVENTS: dict[str, str] = {
    "NW": OPEN, "OK": ACCEPT, "UA": REJECT,
    "CA": CANCEL, "OC": CANCEL, "CR": CANCEL, "DC": CANCEL, "OD": CANCEL,
    "XO": MODIFY, "XX": MODIFY, "XR": MODIFY, "SC": NOTE,
}
# ORC-1 SC: table 0038 order status in ORC-5 → event (anything else is a note).
STATUS_EVENTS = {"CM": COMPLETE, "CA": CANCEL, "DC": CANCEL, "SC": ACCEPT, "IP": ACCEPT}

# Segments that open an OMG prior-results group inside an order (PATIENT_PRIOR, VISIT_PRIOR).
_PRIOR_START = frozenset({"PID", "PD1", "PV1", "PV2", "AL1"})


@dataclass(frozen=True, slots=True)
class OrderGroup:
    """One ORC and its segments, as 1-based sequence numbers among segments of each name."""

    orc: int
    obr: int = 0
    tq1: int = 0
    dg1: tuple[int, ...] = ()


def map_order(msg: InboundMessage, rules: MappingRules) -> list[Change]:
    """One change per order group; [] for a message that is not ORM^O01, OMG^O19 or OSU^O51."""
    source = SOURCES.get((msg.header.message_type, msg.header.trigger))
    if source is None:
        return []
    groups = order_groups(msg)
    if not groups:
        raise RequiredSegmentMissing("ORC segment is missing", Location("ORC", 1))
    # The patient is the PID before the orders; a later one belongs to OMG prior results.
    names = msg.segment_names
    has_pid = "PID" in names[:names.index("ORC")]
    return [_change(msg, rules, source, group, has_pid) for group in groups]


def order_groups(msg: InboundMessage) -> list[OrderGroup]:
    """Pair each ORC with the first OBR and TQ1 after it and its DG1s, up to the next ORC.

    A PID/PV1/AL1 or a second OBR inside an order opens an OMG prior-results group: from there
    on, ORCs are earlier orders, not orders of this message (read greedily, as the grammar does).
    """
    seen: dict[str, int] = {}
    groups: list[OrderGroup] = []
    current: OrderGroup | None = None
    prior = False
    for seg in msg.segments:
        name = seg[0]
        seq = seen[name] = seen.get(name, 0) + 1
        if current is None and name != "ORC":
            continue
        if name in _PRIOR_START or (name == "OBR" and current is not None and current.obr):
            prior = True
        if prior:
            continue
        if name == "ORC":
            if current is not None:
                groups.append(current)
            current = OrderGroup(seq)
        elif current is not None:
            current = _add(current, name, seq)
    if current is not None:
        groups.append(current)
    return groups


def _add(group: OrderGroup, name: str, seq: int) -> OrderGroup:
    if name == "OBR":
        return OrderGroup(group.orc, seq, group.tq1, group.dg1)
    if name == "TQ1" and not group.tq1:
        return OrderGroup(group.orc, group.obr, seq, group.dg1)
    if name == "DG1":
        return OrderGroup(group.orc, group.obr, group.tq1, (*group.dg1, seq))
    return group


def _change(msg: InboundMessage, rules: MappingRules, source: str, group: OrderGroup,
            has_pid: bool) -> ReferralChange:
    n = group.orc
    orc = f"ORC[{n}]"
    obr = f"OBR[{group.obr}]" if group.obr else ""  # "" when the group has no OBR
    control = _order_control(msg, n)
    if control == "NW" and msg.header.message_type in ("ORM", "OMG") and not has_pid:
        raise RequiredSegmentMissing("PID segment is missing for a new order", Location("PID", 1))
    key = _key(msg, orc, obr, control, n)
    order_status = text(msg, f"{orc}.5")
    window_start, window_end = _window(msg, group.tq1)
    return ReferralChange(
        event=_event(control, order_status),
        source=source,
        key=key,
        key_location=Location("ORC", n, 2),
        trigger=trigger(msg),
        owner=text(msg, "MSH.3.1"),
        status_code=f"{control}/{order_status}" if order_status else control,
        patient_ids=patient_ids(msg) if has_pid else (),
        filler_order_number=read_ei(msg, f"{orc}.3") or (read_ei(msg, f"{obr}.3") if obr else None),
        priority=_priority(msg, orc, obr, group.tq1),
        specialty=_specialty(msg, rules, obr),
        window_start=window_start,
        window_end=window_end,
        providers=_providers(msg, orc, obr) + _referred_to(msg, rules, orc, obr),
        diagnoses=diagnoses(msg, group.dg1),
    )


def _event(control: str, order_status: str) -> str:
    """Table 0119 → event; for SC, ORC-5 (table 0038) decides."""
    if control == "SC":
        return STATUS_EVENTS.get(order_status.upper(), NOTE)
    return ORDER_EVENTS.get(control, NOTE)


def _order_control(msg: InboundMessage, n: int) -> str:
    """ORC-1 from table 0119: 101 when empty, 103 when outside the table."""
    control = text(msg, f"ORC[{n}].1").upper()
    if not control:
        raise RequiredFieldMissing("ORC-1 (order control) is empty", Location("ORC", n, 1))
    if control not in TABLE_0119:
        raise UnknownCode("ORC-1 (order control) is not a table 0119 code",
                          Location("ORC", n, 1))
    return control


def _key(msg: InboundMessage, orc: str, obr: str, control: str, n: int) -> EI:
    """ORC-2 placer order number; outside NW, OBR-2 stands in when ORC-2 is empty."""
    key = read_ei(msg, f"{orc}.2")
    if key is None and control != "NW" and obr:
        key = read_ei(msg, f"{obr}.2")
    if key is None:
        raise RequiredFieldMissing("ORC-2 (placer order number) is empty", Location("ORC", n, 2))
    return key


def _priority(msg: InboundMessage, orc: str, obr: str, tq1: int) -> str:
    """ORC-7.6 (TQ priority), then TQ1-9.1, then OBR-27.6: the first non-empty."""
    candidates = (
        f"{orc}.7.6",
        f"TQ1[{tq1}].9.1" if tq1 else "",
        f"{obr}.27.6" if obr else "",
    )
    return next((value for path in candidates if path and (value := text(msg, path))), "")


def _window(msg: InboundMessage, tq1: int) -> tuple[datetime | None, datetime | None]:
    """TQ1-7 start and TQ1-8 end ("needed by" in 360X); 102 at their location if unreadable."""
    if not tq1:
        return None, None
    return (read_dtm(msg, f"TQ1[{tq1}].7", Location("TQ1", tq1, 7)),
            read_dtm(msg, f"TQ1[{tq1}].8", Location("TQ1", tq1, 8)))


def _providers(msg: InboundMessage, orc: str, obr: str) -> tuple[Provider, ...]:
    """ORC-12 ordering provider(s) as role OP (XCN.1 id, XCN.2^XCN.3); OBR-16 when ORC-12 is
    empty."""
    wires = msg.repetitions(f"{orc}.12") or (msg.repetitions(f"{obr}.16") if obr else ())
    providers = (
        Provider(role="OP", id=component(msg, wire, 1), name=person_name(msg, wire, 2))
        for wire in wires
    )
    return tuple(p for p in providers if p.id or p.name)


def _referred_to(msg: InboundMessage, rules: MappingRules, orc: str, obr: str
                 ) -> tuple[Provider, ...]:
    """`ledger.referred_to`: the XCN there as role RT.  An ORC or OBR path reads
    this order group's segment; any other segment, its first occurrence."""
    if not rules.referred_to:
        return ()
    segment, _, rest = rules.referred_to.partition(".")
    group = {"ORC": orc, "OBR": obr}.get(segment.split("[")[0], segment)
    if not group:
        return ()
    wires = msg.repetitions(f"{group}.{rest}")
    providers = (Provider(role="RT", id=component(msg, wire, 1), name=person_name(msg, wire, 2))
                 for wire in wires)
    return tuple(p for p in providers if p.id or p.name)


def _specialty(msg: InboundMessage, rules: MappingRules, obr: str) -> str:
    """OBR-4.1 through `ledger.order_specialties`, then `ledger.specialties`; else OBR-24
    (diagnostic service section), then the referred-to provider's id, through
    `ledger.specialties`; "" without."""
    code = text(msg, f"{obr}.4.1") if obr else ""
    found = rules.order_specialties.get(code, "") or rules.specialty(code)
    if found or not obr:
        return found
    referred = _referred_to(msg, rules, "", obr)
    return rules.specialty(text(msg, f"{obr}.24")) or rules.specialty(
        referred[0].id if referred else "")
