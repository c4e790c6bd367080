"""Route filters (`when:`) and transforms (`transform:`): matching, rewriting, and the YAML-path
problems their parsers report.  Messages are small inline ones, plus every sample for the no-op
round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from enginectl import sample_payload

from engine.parsing import InboundMessage, parse
from engine.routes.filters import When, matches, parse_when
from engine.routes.transforms import Step, apply, parse_transform

SAMPLES = Path(__file__).resolve().parent.parent / "samples"

REF = (
    "MSH|^~\\&|PCPEHR^1.2.3^ISO|NORTH|REFTRACK|HUB|20260112093000||REF^I12^REF_I12|C1|P|2.5.1\r"
    "PID|1||100001^^^NORTH^MR~200001^^^SOUTH^MR||DOE^JANE\r"
    "PV1|1|O|FAMMED\r"
    "OBX|1|ST|A||first\r"
    "OBX|2|ST|B||second\r"
)


def msg(text: str = REF) -> InboundMessage:
    return parse(text.encode())


def out(steps: tuple[Step, ...], text: str = REF) -> list[str]:
    """The transformed message as text lines (the last, empty one after the final CR dropped)."""
    data = apply(steps, msg(text))
    assert data.endswith(b"\r")
    return data.decode().split("\r")[:-1]


def steps(raw: object) -> tuple[Step, ...]:
    problems: list[str] = []
    parsed = parse_transform(raw, "routes[0].transform", problems)
    assert problems == []
    return parsed


def when(raw: object) -> When:
    problems: list[str] = []
    parsed = parse_when(raw, "routes[0].when", problems)
    assert problems == []
    return parsed


# --- matching ---------------------------------------------------------------------------------


def test_empty_when_matches_everything() -> None:
    """A When with no condition (an omitted `when:`) takes every message."""
    assert matches(When(), msg())
    assert parse_when(None, "routes[0].when", []) == When()


def test_type_exact() -> None:
    """TYPE^TRIGGER matches only that type and trigger."""
    assert matches(When(types=("REF^I12",)), msg())
    assert not matches(When(types=("REF^I13",)), msg())
    assert not matches(When(types=("RRI^I12",)), msg())


def test_type_wildcard_and_type_only() -> None:
    """TYPE^* and a bare TYPE both match any trigger of that type; any listed type suffices."""
    assert matches(When(types=("REF^*",)), msg())
    assert matches(When(types=("REF",)), msg())
    assert not matches(When(types=("SIU^*", "ORM")), msg())
    assert matches(When(types=("SIU^*", "REF^I12")), msg())


def test_sender_is_msh_3_1() -> None:
    """Senders compare with MSH-3.1, the HD namespace id, not the whole MSH-3."""
    assert matches(When(senders=("PCPEHR",)), msg())
    assert matches(When(senders=("OTHER", "PCPEHR")), msg())
    assert not matches(When(senders=("PCPEHR^1.2.3^ISO",)), msg())
    assert not matches(When(senders=("OTHER",)), msg())


def test_fields_compare_decoded_leaves() -> None:
    """Every (path, value) must equal the decoded leaf; "" matches an absent field."""
    assert matches(When(fields=(("PV1.2", "O"),)), msg())
    assert matches(When(fields=(("PID.3[2].4", "SOUTH"), ("OBX[2].5", "second"))), msg())
    assert not matches(When(fields=(("PV1.2", "O"), ("PID.5.2", "JOHN"))), msg())
    assert matches(When(fields=(("PV1.44", ""),)), msg())
    escaped = REF.replace("DOE^JANE", "DOE\\S\\X^JANE")
    assert matches(When(fields=(("PID.5", "DOE^X"),)), msg(escaped))


def test_conditions_combine_with_and() -> None:
    """Type, sender and fields must all hold."""
    full = When(types=("REF^I12",), senders=("PCPEHR",), fields=(("PV1.2", "O"),))
    assert matches(full, msg())
    assert not matches(When(types=("REF^I12",), senders=("X",), fields=(("PV1.2", "O"),)), msg())
    assert not matches(When(types=("REF^I12",), senders=("PCPEHR",),
                            fields=(("PV1.2", "I"),)), msg())


def test_parse_when_from_yaml() -> None:
    """The issue's example parses into a When; a string is a one-entry list; types uppercase."""
    raw = {"type": ["REF^I12", "REF^I13", "SIU^*"], "sender": "PCPEHR", "fields": {"PV1.2": "O"}}
    assert when(raw) == When(("REF^I12", "REF^I13", "SIU^*"), ("PCPEHR",), (("PV1.2", "O"),))
    assert when({"type": "orm"}) == When(types=("ORM",))
    assert matches(when(raw), msg())


def test_parse_when_problems_carry_yaml_paths() -> None:
    """Every problem is reported at once, each with its YAML path."""
    problems: list[str] = []
    raw = {"type": [3, "REF^I12", "x"], "sender": ["", 3], "fields": {"PV1": "O", "PV1.2": 1,
                                                                   "bad path": "x"}, "to": 1}
    assert parse_when(raw, "routes[0].when", problems) == When(types=("REF^I12",))
    assert problems == [
        "routes[0].when.to: unknown key (expected one of: fields, sender, type)",
        "routes[0].when.type[0]: expected a non-empty string, got a number",
        "routes[0].when.type[2]: expected TYPE^TRIGGER, TYPE^* or TYPE, got 'x'",
        "routes[0].when.sender[0]: expected a non-empty string, got an empty string",
        "routes[0].when.sender[1]: expected a non-empty string, got a number",
        "routes[0].when.fields.PV1: expected a path to a field, got a whole segment 'PV1'",
        "routes[0].when.fields.PV1.2: expected a string value (quote it), got a number",
        "routes[0].when.fields.bad path: not an HL7 path: 'bad path' (expected e.g. PID.3[2].1)",
    ]


def test_parse_when_shape_problems() -> None:
    """A non-mapping when, a scalar type, an empty list and zero indexes are problems."""
    problems: list[str] = []
    assert parse_when(["REF"], "w", problems) == When()
    parse_when({"type": "REF^I1", "sender": [], "fields": {"PID.0": "x"}}, "w", problems)
    parse_when({"fields": ["PV1.2"]}, "w", problems)
    assert problems == [
        "w: expected a mapping, got a list",
        "w.type: expected TYPE^TRIGGER, TYPE^* or TYPE, got 'REF^I1'",
        "w.sender: expected a string or a non-empty list, got an empty list",
        "w.fields.PID.0: HL7 indexes are 1-based, got 'PID.0'",
        "w.fields: expected a mapping of HL7 path to value, got a list",
    ]


# --- transforms -------------------------------------------------------------------------------


def test_no_steps_is_identity() -> None:
    """With no steps the output is the input, byte for byte."""
    assert apply((), msg()) == REF.encode()


SAMPLE_NAMES = sorted(p.name for p in SAMPLES.glob("*.hl7") if p.name != "reject_no_msh.hl7")


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_no_steps_round_trips_every_sample(name: str) -> None:
    """Re-joining the parsed segments gives the segments back: MSH-1 is written once, as the
    separator, and the charset is the one the message was read in."""
    m = parse(sample_payload(name))
    data = apply((), m)
    assert data.endswith(b"\r")
    again = parse(data)
    assert again.segments == m.segments
    assert again.delimiters == m.delimiters
    fs = m.delimiters.field
    lines = ["MSH" + fs + fs.join(s[2:]) if s[0] == "MSH" else fs.join(s) for s in m.segments]
    assert data == ("\r".join(lines) + "\r").encode(m.charset, errors="replace")


def test_set_field_component_subcomponent() -> None:
    """set writes the named element: a field path without [n] is the whole field."""
    lines = out(steps([{"set": {"PV1.2": "I"}}, {"set": {"PID.3": "X1"}},
                       {"set": {"PID.5.2": "ANN", "PV1.3.1.2": "S"}}]))
    assert lines[1] == "PID|1||X1||DOE^ANN"
    assert lines[2] == "PV1|1|I|FAMMED&S"


def test_set_one_repetition_and_nth_segment() -> None:
    """PID.3[2].1 writes the second repetition only; OBX[2].5 the second OBX."""
    lines = out(steps([{"set": {"PID.3[2].1": "999", "OBX[2].5": "changed"}}]))
    assert lines[1] == "PID|1||100001^^^NORTH^MR~999^^^SOUTH^MR||DOE^JANE"
    assert lines[3] == "OBX|1|ST|A||first"
    assert lines[4] == "OBX|2|ST|B||changed"


def test_set_msh_5() -> None:
    """MSH-5 can be set; MSH-1 and MSH-2 stay as they were."""
    lines = out(steps([{"set": {"MSH.5": "SPECIALIST"}}]))
    assert lines[0] == ("MSH|^~\\&|PCPEHR^1.2.3^ISO|NORTH|SPECIALIST|HUB|20260112093000||"
                        "REF^I12^REF_I12|C1|P|2.5.1")


def test_written_values_are_escaped() -> None:
    """A value holding delimiters stays one leaf: each delimiter becomes its escape sequence."""
    lines = out(steps([{"set": {"PV1.3.2": "a|b^c~d&e\\f\rg"}}]))
    assert lines[2] == "PV1|1|O|FAMMED^a\\F\\b\\S\\c\\R\\d\\T\\e\\E\\f\\X0D\\g"
    assert parse("\r".join(lines).encode())["PV1.3.2"] == "a|b^c~d&e\\f\rg"


def test_escaping_uses_the_message_delimiters() -> None:
    """With custom delimiters, escapes are written with the message's own escape character."""
    text = REF.replace("|", "#").replace("MSH#^~\\&#", "MSH#$*?%#")
    lines = out(steps([{"set": {"PV1.2": "a#b$c"}}]), text)
    assert lines[2] == "PV1#1#a?F?b?S?c#FAMMED"


def test_writing_past_the_end_extends_with_empties() -> None:
    """Missing fields, repetitions, components and subcomponents are added empty."""
    lines = out(steps([{"set": {"PV1.6.3": "C", "PV1.3.2.3": "s", "PID.5[3].2": "R"}}]))
    assert lines[2] == "PV1|1|O|FAMMED^&&s|||^^C"
    assert lines[1] == "PID|1||100001^^^NORTH^MR~200001^^^SOUTH^MR||DOE^JANE~~^R"


def test_missing_segment_is_not_created() -> None:
    """A step naming a segment the message lacks (or a third OBX) does nothing."""
    assert apply(steps([{"set": {"ZBX.1": "x", "OBX[3].5": "x"}}, {"copy": {"from": "PV1.2",
                 "to": "NTE.3"}}]), msg()) == REF.encode()


def test_copy_reads_a_decoded_leaf_and_writes_it_escaped() -> None:
    """copy takes the leaf at `from` (omitted indexes 1) and writes it, escaped, at `to`."""
    text = REF.replace("DOE^JANE", "D\\S\\OE^JANE")
    lines = out(steps([{"copy": {"from": "PID.5", "to": "PV1.3.2"}},
                       {"copy": {"from": "PID.3[2].4", "to": "PID.3[1].4"}}]), text)
    assert lines[2] == "PV1|1|O|FAMMED^D\\S\\OE"
    assert lines[1] == "PID|1||100001^^^SOUTH^MR~200001^^^SOUTH^MR||D\\S\\OE^JANE"


def test_steps_see_earlier_steps() -> None:
    """Steps run in order: a copy reads what a previous set wrote."""
    lines = out(steps([{"set": {"PV1.2": "E"}}, {"copy": {"from": "PV1.2", "to": "MSH.6"}}]))
    assert lines[0].split("|")[5] == "E"


def test_delete_empties_the_element() -> None:
    """delete empties the element it names and keeps the positions of the rest."""
    lines = out(steps([{"delete": "PID.3"}, {"delete": "PID.5.1"}, {"delete": "OBX[1].3"}]))
    assert lines[1] == "PID|1||||^JANE"
    assert lines[3] == "OBX|1|ST|||first"


def test_delete_of_an_absent_element_adds_nothing() -> None:
    """Deleting past the end leaves the message byte-identical (no empty fields appended)."""
    assert apply(steps([{"delete": "PV1.9"}, {"delete": "PV1.3.4"}, {"delete": "PID.3[5]"}]),
                 msg()) == REF.encode()


def test_map_with_default() -> None:
    """map replaces a value found in the table, and any other value with the default."""
    step = {"map": {"path": "PV1.2", "table": {"I": "INPATIENT"}, "default": "OTHER"}}
    assert out(steps([step]))[2] == "PV1|1|OTHER|FAMMED"
    step = {"map": {"path": "PV1.2", "table": {"O": "OUT", "I": "IN"}, "default": "OTHER"}}
    assert out(steps([step]))[2] == "PV1|1|OUT|FAMMED"


def test_map_without_default_leaves_unmapped_values() -> None:
    """Without a default an unmapped value is left as it is."""
    step = {"map": {"path": "PV1.2", "table": {"I": "INPATIENT"}}}
    assert apply(steps([step]), msg()) == REF.encode()


def test_map_translates_the_leaf_in_place() -> None:
    """map on a field path rewrites only its first leaf: other components and repetitions stay."""
    step = {"map": {"path": "PID.3", "table": {"100001": "A|1"}}}
    assert out(steps([step]))[1] == "PID|1||A\\F\\1^^^NORTH^MR~200001^^^SOUTH^MR||DOE^JANE"


def test_parse_steps() -> None:
    """Each YAML step becomes a Step; a set with two paths gives two steps, in order."""
    assert steps([{"set": {"MSH.5": "X", "PV1.2": ""}}, {"copy": {"from": "PID.3", "to": "PID.4"}},
                  {"delete": "PID.19"},
                  {"map": {"path": "PV1.2", "table": {"O": "OUT"}}}]) == (
        Step("set", "MSH.5", value="X"),
        Step("set", "PV1.2", value=""),
        Step("copy", "PID.4", source="PID.3"),
        Step("delete", "PID.19"),
        Step("map", "PV1.2", table=(("O", "OUT"),)),
    )
    assert steps(None) == ()


def test_parse_transform_problems_carry_yaml_paths() -> None:
    """Every bad step is reported, with its YAML path; MSH-1/2 cannot be targets."""
    problems: list[str] = []
    raw = [
        {"set": {"MSH.1": "#", "MSH.2": "x", "PID.3": 5}},
        {"copy": {"from": "PID", "to": "PID.4", "via": 1}},
        {"copy": {"from": "MSH.2"}},
        {"delete": "PID.0"},
        {"map": {"path": "PV1.2", "table": {1: "A"}, "default": True}},
        {"map": {"table": []}},
        {"rename": "PID.3"},
        {"set": {"PV1.2": "x"}, "delete": "PV1.3"},
        "delete",
        {"set": {}},
    ]
    assert parse_transform(raw, "routes[0].transform", problems) == ()
    assert problems == [
        "routes[0].transform[0].set.MSH.1: MSH-1 and MSH-2 are the delimiters and cannot be "
        "transformed",
        "routes[0].transform[0].set.MSH.2: MSH-1 and MSH-2 are the delimiters and cannot be "
        "transformed",
        "routes[0].transform[0].set.PID.3: expected a string value (quote it), got a number",
        "routes[0].transform[1].copy.via: unknown key (expected one of: from, to)",
        "routes[0].transform[2].copy.to: required",
        "routes[0].transform[3].delete: HL7 indexes are 1-based, got 'PID.0'",
        "routes[0].transform[4].map.table.1: expected a string value (quote it), got a number",
        "routes[0].transform[4].map.default: expected a string value (quote it), got a boolean",
        "routes[0].transform[5].map.path: required",
        "routes[0].transform[6]: expected one of {set: ...}, {copy: ...}, {delete: PATH} or "
        "{map: ...}, got keys 'rename'",
        "routes[0].transform[7]: expected one of {set: ...}, {copy: ...}, {delete: PATH} or "
        "{map: ...}, got keys 'set', 'delete'",
        "routes[0].transform[8]: expected one of {set: ...}, {copy: ...}, {delete: PATH} or "
        "{map: ...}, got a string",
        "routes[0].transform[9].set: expected a mapping of HL7 path to value, got an empty "
        "mapping",
    ]


def test_parse_transform_not_a_list() -> None:
    """The transform must be a list of steps."""
    problems: list[str] = []
    assert parse_transform({"set": {"PV1.2": "x"}}, "r.transform", problems) == ()
    assert problems == ["r.transform: expected a list of steps, got a mapping"]


def test_copy_source_problem() -> None:
    """A bad `from` path is reported; MSH-2 is a valid source (only targets are restricted)."""
    problems: list[str] = []
    parsed = parse_transform([{"copy": {"from": "PID", "to": "PID.4"}},
                              {"copy": {"from": "MSH.2", "to": "NTE.3"}}], "t", problems)
    assert parsed == (Step("copy", "NTE.3", source="MSH.2"),)
    assert problems == ["t[0].copy.from: expected a path to a field, got a whole segment 'PID'"]
