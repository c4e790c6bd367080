"""`fields.leaves` reads several fields of one segment as `fields.leaf` reads each (its plain
fields take a shorter way): any field text, with or without repetitions, components,
subcomponents, escapes, padding or the HL7 null, and fields past the segment's end."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.mappings.fields import leaf, leaves
from engine.parsing import parse

PIECES = ["A", "b7", " ", "^", "~", "&", "\\", "\\T\\", "\\S\\", "\\X41\\", '""', "Z^Y", "é"]
field_texts = st.lists(st.sampled_from(PIECES), max_size=6).map("".join).filter(
    lambda t: "|" not in t)


def _message(fields: list[str]) -> bytes:
    return ("MSH|^~\\&|APP|FAC|RT|HUB|20261205101500||REF^I12^REF_I12|C1|P|2.5.1\r"
            "ZZ1|" + "|".join(fields) + "\r").encode("utf-8")


@settings(max_examples=400, deadline=None)
@given(fields=st.lists(field_texts, min_size=1, max_size=8),
       ns=st.lists(st.integers(min_value=1, max_value=10), min_size=1, max_size=6))
def test_leaves_reads_as_leaf(fields: list[str], ns: list[int]) -> None:
    msg = parse(_message(fields))
    seg = msg.segment("ZZ1")
    assert leaves(msg, seg, *ns) == [leaf(msg, seg, n) for n in ns]


def test_leaves_of_msh_and_of_a_missing_segment() -> None:
    """MSH-1/2 are the delimiters themselves; no segment reads as empty fields."""
    msg = parse(_message(["x"]))
    msh = msg.segment("MSH")
    assert leaves(msg, msh, 1, 2, 3, 9) == [leaf(msg, msh, n) for n in (1, 2, 3, 9)]
    assert leaves(msg, msh, 1, 2, 3) == ["|", "^~\\&", "APP"]
    assert leaves(msg, None, 1, 4) == ["", ""]


def test_a_plain_field_reads_its_first_component_stripped() -> None:
    msg = parse(_message([" R ^Routine", '""', "A~B", "x\\T\\y"]))
    assert leaves(msg, msg.segment("ZZ1"), 1, 2, 3, 4, 5) == ["R", "", "A", "x&y", ""]
