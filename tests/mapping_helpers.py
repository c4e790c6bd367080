"""Message builders and assertions shared by the mapping tests (tests/test_mappings_*.py):
samples as the sending tool delivers them, minimal inline REF/order/SIU messages, and the
single-change and content-error checks."""

from __future__ import annotations

from enginectl import sample_payload

from engine.errors import ContentError, Location
from engine.mappings.changes import (
    AppointmentChange,
    Change,
    PatientId,
    ReferralChange,
)
from engine.mappings.rules import MappingRules
from engine.parsing import InboundMessage, parse

RULES = MappingRules(order_specialties={"CONSULT-NEUR": "NEUR"})
PID = "PID|1||123^^^HOSP^MR"
PID_IDS = (PatientId("123", "HOSP"),)


def sample(name: str) -> InboundMessage:
    """A sample as the sending tool delivers it (LF → CR)."""
    return parse(sample_payload(name))


def build(*segments: str) -> InboundMessage:
    """Parse segments joined by CR."""
    return parse("\r".join(segments).encode())


def seg(name: str, fields: dict[int, str]) -> str:
    """A segment line with the given 1-based fields, the others empty."""
    size = max(fields, default=0)
    return "|".join([name, *(fields.get(n, "") for n in range(1, size + 1))])


def msh(message_type: str, sender: str = "SENDER") -> str:
    """An MSH with standard delimiters and the given MSH-9 and MSH-3."""
    return f"MSH|^~\\&|{sender}|FAC|REFTRACK|HUB|20260101000000||{message_type}|CTRL-1|P|2.5.1"


def ref_msg(message_type: str = "REF^I12", rf1: dict[int, str] | None = None,
            *extra: str, pid: bool = True) -> InboundMessage:
    """A minimal REF/RRI: RF1 (status P, key K-1^NS), one RT PRD, PID, then `extra`."""
    segments = [msh(message_type), seg("RF1", {1: "P", 6: "K-1^NS"} | (rf1 or {})),
                seg("PRD", {1: "RT", 2: "DOC^ANN", 4: "NEURO", 7: "NPI1"})]
    if pid:
        segments.append(PID)
    return build(*segments, *extra)


def order_msg(message_type: str = "ORM^O01", orc: dict[int, str] | None = None,
              obr: dict[int, str] | None = None, *extra: str, pid: bool = True) -> InboundMessage:
    """A minimal order: [PID] ORC (NW, P-1^PL) OBR (CONSULT-NEUR), then `extra`."""
    segments = [msh(message_type)]
    if pid:
        segments.append(PID)
    segments.append(seg("ORC", {1: "NW", 2: "P-1^PL"} | (orc or {})))
    segments.append(seg("OBR", {1: "1", 4: "CONSULT-NEUR^Neurology consult^L"} | (obr or {})))
    return build(*segments, *extra)


def siu_msg(trigger: str = "S12", sch: dict[int, str] | None = None, *,
            tq1: dict[int, str] | None = None, ais: dict[int, str] | None = None,
            ail: dict[int, str] | None = None, aip: dict[int, str] | None = None,
            aig: dict[int, str] | None = None, pid: bool = True,
            rgs: bool = True) -> InboundMessage:
    """A minimal SIU: SCH (PL-1^P / FL-1^F, Booked), optional TQ1, PID, RGS and resources."""
    segments = [msh(f"SIU^{trigger}^SIU_S12"),
                seg("SCH", {1: "PL-1^P", 2: "FL-1^F", 25: "Booked"} | (sch or {}))]
    if tq1 is not None:
        segments.append(seg("TQ1", tq1))
    if pid:
        segments.append(PID)
    if rgs:
        segments.append("RGS|1|A")
    for name, fields in (("AIS", ais), ("AIG", aig), ("AIL", ail), ("AIP", aip)):
        if fields is not None:
            segments.append(seg(name, {1: "1", 2: "A"} | fields))
    return build(*segments)


def only(changes: list[Change]) -> ReferralChange:
    """The single referral change of a message."""
    assert len(changes) == 1
    change = changes[0]
    assert isinstance(change, ReferralChange)
    return change


def appointment(changes: list[Change]) -> AppointmentChange:
    """The single appointment change of a message."""
    assert len(changes) == 1
    change = changes[0]
    assert isinstance(change, AppointmentChange)
    return change


def assert_error(exc: ContentError, code: str, location: Location) -> None:
    """The error's table-0357 code and ERR location."""
    assert (exc.code, exc.location) == (code, location)

MAPPED = MappingRules(specialties={"NEURO": "NEUR", "NEUROCONS": "NEUR", "DRN": "NEUR",
                                   "CONSULT-NEUR": "NEUR", "NPI1": "CARD"})



def sample_lines(msg: InboundMessage) -> list[str]:
    """The message's segments as lines again (MSH rebuilt with its separator)."""
    return ["|".join(s if s[0] != "MSH" else (s[0], *s[2:])) for s in msg.segments]
