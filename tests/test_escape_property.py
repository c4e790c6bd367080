"""Property tests for HL7 escaping (docs/hl7-rules.md): `unescape` inverts `escape` for any text and any
valid delimiter set, and an escaped value survives a whole message through `parse` at every depth.

Restriction: delimiters are drawn from ASCII punctuation (`string.punctuation`), 5 or 6 distinct.
That is what the parser accepts (it rejects alphanumerics, space, CR/LF and non-ASCII in
MSH-1/MSH-2), and it is also what `escape` needs: the sequence letters `F S T R E P X` and hex digits
must not be delimiters themselves.  Values are unrestricted Unicode text (no surrogates: they
cannot be encoded), mixed with the drawn set's own delimiters, escape look-alikes, CR and LF.
MSH-18 is written as is (the parser does not unescape it), so when a drawn delimiter occurs in
`UNICODE UTF-8` the message names UTF-8 as `ISO IR192` instead.
"""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.parsing import Delimiters, escape, parse, unescape

delimiter_sets = st.lists(
    st.sampled_from(string.punctuation), min_size=5, max_size=6, unique=True
).map(lambda c: Delimiters(c[0], c[1], c[2], c[3], c[4], c[5] if len(c) == 6 else ""))

LOOKALIKES = ["\r", "\n", "\r\n", "F", "S", "T", "R", "E", "P", "X", "0D", "X0A", ".br", "H"]


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, Delimiters]:
    """A delimiter set and a value made of any text mixed with that set's own delimiters (so
    every example can hit them), escape look-alikes, CR and LF."""
    delims = draw(delimiter_sets)
    own = list(delims.field + delims.encoding_characters)
    piece = st.one_of(st.text(max_size=4), st.sampled_from(own), st.sampled_from(LOOKALIKES))
    return "".join(draw(st.lists(piece, max_size=12))), delims


@settings(max_examples=300, deadline=None)
@given(case=cases())
def test_unescape_inverts_escape(case: tuple[str, Delimiters]) -> None:
    """`unescape(escape(v, d), d) == v`, and the escaped text holds no raw delimiter, CR or LF."""
    value, delims = case
    escaped = escape(value, delims)
    assert unescape(escaped, delims) == value
    for char in (delims.field, delims.component, delims.repetition, delims.subcomponent):
        assert char not in escaped
    if delims.truncation:
        assert delims.truncation not in escaped
    assert "\r" not in escaped
    assert "\n" not in escaped


def build(value: str, d: Delimiters, msh18: str, end: str) -> bytes:
    """A message (alphanumeric filler only, as any punctuation may be a delimiter) with the
    escaped value as MSH-10, a field, a component, a subcomponent and a
    repetition of a second ZZ1 segment, each next to non-empty neighbours."""
    v = escape(value, d)
    fs, cs, rs, ss = d.field, d.component, d.repetition, d.subcomponent
    msh = fs.join(
        [
            "MSH",
            d.encoding_characters,
            "APP",
            "FAC",
            "HUB",
            "HUB",
            "20260101",
            "",
            f"REF{cs}I12",
            v,
            "P",
            "251",
            "",
            "",
            "",
            "",
            "",
            msh18,
        ]
    )
    zz1a = fs.join(["ZZ1", "1", "x"])
    zz1b = fs.join(
        [
            "ZZ1",
            v,  # ZZ1[2].1
            f"a{cs}{v}{cs}b",  # ZZ1[2].2.2
            f"a{cs}s1{ss}s2{ss}{v}{ss}s4",  # ZZ1[2].3.2.3
            f"r1{rs}r2{rs}{v}{rs}r4",  # ZZ1[2].4[3]
            "tail",
        ]
    )
    return (end.join([msh, zz1a, zz1b]) + end).encode("utf-8")


PATHS = ("MSH.10", "ZZ1[2].1", "ZZ1[2].2.2", "ZZ1[2].3.2.3", "ZZ1[2].4[3]")


@settings(max_examples=250, deadline=None)
@given(
    case=cases(),
    msh18=st.sampled_from(["", "UNICODE UTF-8"]),
    end=st.sampled_from(["\r", "\n", "\r\n"]),
)
def test_escaped_value_survives_parse_at_every_depth(
    case: tuple[str, Delimiters], msh18: str, end: str
) -> None:
    """An escaped value placed in MSH-10, a field, a component, a subcomponent and a repetition of
    a UTF-8 message reads back unchanged through `msg[path]`, whatever the delimiters and
    terminators, and the neighbours and segment structure are untouched.  No value is skipped:
    even a whitespace-only value sits inside a segment, so it never makes an empty segment."""
    value, delims = case
    if set(msh18) & set(delims.encoding_characters + delims.field):
        # MSH-18 is matched as written, not unescaped: with `-` as a delimiter, `UNICODE UTF-8`
        # cannot be written, so use its table-0211 synonym, which has no punctuation.
        msh18 = "ISO IR192"
    m = parse(build(value, delims, msh18, end))
    assert m.delimiters == delims
    assert m.charset == "utf-8"
    assert m.segment_names == ("MSH", "ZZ1", "ZZ1")
    for path in PATHS:
        assert m[path] == value, path
    assert m["MSH.9.2"] == "I12"
    assert m["MSH.12"] == "251"
    assert m["ZZ1[1].2"] == "x"
    assert m["ZZ1[2].2.3"] == "b"
    assert m["ZZ1[2].3.2.4"] == "s4"
    assert m["ZZ1[2].4[4]"] == "r4"
    assert m["ZZ1[2].5"] == "tail"
    assert len(m.repetitions("ZZ1[2].4")) == 4
