"""The hot-path parser (docs/hl7-rules.md): delimiters, MSH numbering, paths, terminators, charsets,
escapes, rejects, and every sample in `samples/`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engine.errors import BadEncodingCharacters, Location, NotHL7, UnsupportedCharset
from engine.parsing import Delimiters, InboundMessage, parse

SAMPLES = Path(__file__).parent.parent / "samples"
MANIFEST: dict[str, dict[str, object]] = yaml.safe_load((SAMPLES / "manifest.yaml").read_text())

MSH = b"MSH|^~\\&|PCPEHR|NORTHCLINIC|REFTRACK|HUB|20260112093000||REF^I12^REF_I12|CTRL-1|P|2.5.1"


def msg(*segments: bytes, end: bytes = b"\r") -> InboundMessage:
    """Parse MSH plus `segments`, each ended by `end`."""
    return parse(b"".join(s + end for s in (MSH, *segments)))


def msh18(charset: bytes) -> bytes:
    """The standard MSH with MSH-18 set (MSH-13..17 empty)."""
    return MSH + b"||||||" + charset


# --- delimiters (MSH-1, MSH-2) -------------------------------------------------------------


def test_non_standard_delimiters_come_from_msh() -> None:
    """A `#$*?%` set is read from MSH-1/MSH-2 and drives every split and escape."""
    m = parse(
        b"MSH#$*?%#APP#FAC#HUB#HUB#20260101##REF$I12$REF_I12#C-1#P#2.5.1\r"
        b"PID#1##111$$$NC$MR*222$$$SH$MR##DOE$JANE%Q\r"
        b"NTE#1##a ?F? b ?S? c ?T? d ?R? e ?E? f | ^ ~ \\ &\r"
    )
    assert m.delimiters == Delimiters("#", "$", "*", "?", "%")
    assert m["MSH.1"] == "#"
    assert m["MSH.2"] == "$*?%"
    assert m["MSH.9.2"] == "I12"
    assert m.repetitions("PID.3") == ("111$$$NC$MR", "222$$$SH$MR")
    assert m["PID.3[2].4"] == "SH"
    assert m["PID.5.2.2"] == "Q"
    # the standard characters are plain data under a custom set
    assert m["NTE.3"] == "a # b $ c % d * e ? f | ^ ~ \\ &"


def test_five_char_msh2_truncation_character() -> None:
    """MSH-2 `^~\\&#` (v2.7+): `#` is the truncation character, `\\P\\` decodes to it, and a bare
    `#` in data is plain data, never a delimiter."""
    m = parse(b"MSH|^~\\&#|A|B|C|D|20260101||REF^I12|C-5|P|2.8\rNTE|1||Suite \\P\\12 # plain^x\r")
    assert m.delimiters.truncation == "#"
    assert m["MSH.2"] == "^~\\&#"
    assert m["MSH.3"] == "A"
    assert m["NTE.3"] == "Suite #12 # plain"
    assert m["NTE.3.2"] == "x"


def test_truncation_escape_is_literal_with_four_char_msh2() -> None:
    """Without a 5th MSH-2 character there is no truncation character, so `\\P\\` stays as is."""
    m = msg(b"NTE|1||Suite \\P\\12")
    assert m.delimiters.truncation == ""
    assert m["NTE.3"] == "Suite \\P\\12"


def test_msh2_may_end_the_line() -> None:
    """`MSH|^~\\&` followed directly by the segment terminator still defines the delimiters."""
    m = parse(b"MSH|^~\\&\rPID|1||X^Y")
    assert m.delimiters == Delimiters()
    assert m["MSH.2"] == "^~\\&"
    assert m["MSH.3"] == ""
    assert m["PID.3.2"] == "Y"


# --- MSH numbering --------------------------------------------------------------------------


def test_msh_numbering_is_offset_by_the_field_separator() -> None:
    """MSH-1 is the field separator, MSH-2 the encoding characters, MSH-3 the first split field."""
    m = msg()
    assert m["MSH.1"] == "|"
    assert m.raw("MSH.1") == "|"
    assert m["MSH.2"] == "^~\\&"
    assert m.raw("MSH.2") == "^~\\&"
    assert m["MSH.3"] == "PCPEHR"
    assert m["MSH.7"] == "20260112093000"
    assert m["MSH.9"] == "REF"
    assert m["MSH.9.1"] == "REF"
    assert m["MSH.9.2"] == "I12"
    assert m["MSH.9.3"] == "REF_I12"
    assert m.raw("MSH.9") == "REF^I12^REF_I12"
    assert m["MSH.10"] == "CTRL-1"
    assert m["MSH.11"] == "P"
    assert m["MSH.12"] == "2.5.1"


def test_msh1_and_msh2_are_never_split_or_unescaped() -> None:
    """MSH-2 holds the component and escape characters but is one value at every depth."""
    m = msg()
    assert m.raw("MSH.2.1") == "^~\\&"
    assert m["MSH.2.2"] == "^~\\&"
    assert m.repetitions("MSH.2") == ("^~\\&",)
    assert m.repetitions("MSH.1") == ("|",)


def test_whole_msh_segment_reads_back_as_on_the_wire() -> None:
    """`raw("MSH")` joins MSH without repeating MSH-1, so it equals the wire line."""
    assert msg().raw("MSH") == MSH.decode()


def test_msh9_with_two_components_v23() -> None:
    """v2.3 MSH-9 `REF^I12` has no structure component: MSH-9.3 is empty (or the default)."""
    m = parse(b"MSH|^~\\&|A|B|C|D|20260101||REF^I12|C-23|P|2.3\r")
    assert m["MSH.9.2"] == "I12"
    assert m["MSH.9.3"] == ""
    assert m.get("MSH.9.3", "none") == "none"


# --- repetitions, segment repetitions, missing values ---------------------------------------


def test_field_repetitions_and_components() -> None:
    """`PID.3[2].4` is the 4th component of the 2nd repetition; omitted indexes mean 1."""
    m = msg(b"PID|1||100001^^^NORTHCLINIC^MR~200001^^^SOUTHHOSP^MR||DOE^JANE")
    assert m.repetitions("PID.3") == ("100001^^^NORTHCLINIC^MR", "200001^^^SOUTHHOSP^MR")
    assert m["PID.3"] == "100001"
    assert m["PID.3[1].4"] == "NORTHCLINIC"
    assert m["PID.3[2].1"] == "200001"
    assert m["PID.3[2].4"] == "SOUTHHOSP"
    assert m["PID.3[2].5.1"] == "MR"
    # an omitted repetition index means the first, for raw() too
    assert m.raw("PID.3") == "100001^^^NORTHCLINIC^MR"
    assert m.raw("PID.3[1]") == "100001^^^NORTHCLINIC^MR"
    assert m.raw("PID.3[2]") == "200001^^^SOUTHHOSP^MR"
    assert m["PID.3[3]"] == ""
    assert m.raw("PID.3[3].1") == ""


def test_subcomponents() -> None:
    """`PID.3.4.2` is the 2nd subcomponent (`&`) of the 4th component."""
    m = msg(b"PID|1||123^^^NS&1.2.3&ISO^MR")
    assert m.raw("PID.3.4") == "NS&1.2.3&ISO"
    assert m["PID.3.4"] == "NS"
    assert m["PID.3.4.2"] == "1.2.3"
    assert m["PID.3.4.3"] == "ISO"
    assert m["PID.3.4.4"] == ""


def test_segment_repetitions() -> None:
    """`OBX[2].5` addresses the second OBX; a missing occurrence reads as empty."""
    m = msg(b"PID|1", b"OBX|1|ST|A||first", b"NTE|1||n", b"OBX|2|ST|B||second")
    assert m.count("OBX") == 2
    assert m.count("ZZZ") == 0
    assert m["OBX.5"] == "first"
    assert m["OBX[1].5"] == "first"
    assert m["OBX[2].5"] == "second"
    assert m["OBX[2].3"] == "B"
    assert m["OBX[3].5"] == ""
    seg = m.segment("OBX", 2)
    assert seg is not None
    assert seg[:2] == ("OBX", "2")
    assert m.segment("OBX", 3) is None
    assert m.segment_names == ("MSH", "PID", "OBX", "NTE", "OBX")


def test_missing_fields_components_and_segments_are_empty_or_default() -> None:
    """Anything past the end of a segment, field or component, or in an absent segment, is ""
    (or the given default), never an exception."""
    m = msg(b"PID|1||123^^^NC||DOE")
    assert m["PID.30"] == ""
    assert m.raw("PID.30") == ""
    assert m["PID.5.9"] == ""
    assert m["PID.3.4.2"] == ""
    assert m["PID.3[4].1"] == ""
    assert m["PV1.2"] == ""
    assert m.raw("PV1") == ""
    assert m.repetitions("PID.30") == ()
    assert m.get("PID.30", "dflt") == "dflt"
    assert m.get("PID.2", "dflt") == "dflt"  # empty field between delimiters
    assert m.get("PV1.2.1", "dflt") == "dflt"
    assert m.get("PID.5", "dflt") == "DOE"


def test_bad_path_is_a_key_error() -> None:
    """A path that is not `SEG[n].f[r].c.s` is a programming error: KeyError."""
    with pytest.raises(KeyError):
        msg()["pid.3"]
    with pytest.raises(KeyError):
        msg().raw("PID-3")


# --- segment terminators --------------------------------------------------------------------


@pytest.mark.parametrize("end", [b"\r", b"\n", b"\r\n"], ids=["CR", "LF", "CRLF"])
def test_segment_terminators(end: bytes) -> None:
    """CR, LF and CRLF terminators all give the same segments and values."""
    m = msg(b"PID|1||X^Y", b"PV1|1|O", end=end)
    assert m.segment_names == ("MSH", "PID", "PV1")
    assert m["MSH.12"] == "2.5.1"
    assert m["PID.3.2"] == "Y"
    assert m["PV1.2"] == "O"


def test_with_any_cr_a_lone_lf_is_data() -> None:
    """When the payload contains a CR, segments split on CR only: one LF right after a CR is
    dropped, any other LF stays inside the field."""
    m = parse(MSH + b"\rNTE|1||line one\nline two\r\nPV1|1|O\r")
    assert m.segment_names == ("MSH", "NTE", "PV1")
    assert m["NTE.3"] == "line one\nline two"
    assert m["PV1.2"] == "O"


def test_mixed_terminators_follow_the_cr_rule() -> None:
    """A payload mixing CR and bare LF terminators splits on CR only: the LF-joined segment is
    data of the preceding field (docs/hl7-rules.md)."""
    m = parse(MSH + b"\rPID|1\nPV1|2\r\nNTE|1\r")
    assert m.segment_names == ("MSH", "PID", "NTE")
    assert m["PID.1"] == "1\nPV1"
    assert m.count("PV1") == 0


def test_without_cr_split_on_lf() -> None:
    """No CR anywhere: LF ends segments."""
    m = parse(MSH + b"\nPID|1\nPV1|2")
    assert m.segment_names == ("MSH", "PID", "PV1")
    assert m["PID.1"] == "1"


def test_no_terminator_after_last_segment() -> None:
    """The last segment needs no terminator."""
    m = parse(MSH + b"\rPID|1||X")
    assert m["PID.3"] == "X"
    assert parse(MSH)["MSH.10"] == "CTRL-1"


@pytest.mark.parametrize(
    "payload",
    [
        MSH + b"\r\rPID|1\r\r\r",
        MSH + b"\r\nPID|1\r\n\r\n\r\n",
        MSH + b"\n\nPID|1\n\n \n\t\n",
        MSH + b"\r \rPID|1\r\n",
    ],
    ids=["CR", "CRLF", "LF", "blank-with-space"],
)
def test_empty_segments_and_trailing_blank_lines_are_ignored(payload: bytes) -> None:
    """Empty (or whitespace-only) lines between or after segments are not segments."""
    m = parse(payload)
    assert m.segment_names == ("MSH", "PID")
    assert m["PID.1"] == "1"


def test_leading_whitespace_before_msh_is_skipped() -> None:
    """Stray CR/LF/NUL before MSH (left over from framing) do not hide the header."""
    m = parse(b"\r\n\x00 " + MSH + b"\rPID|1")
    assert m.segment_names == ("MSH", "PID")


def test_utf8_bom_is_stripped() -> None:
    """A UTF-8 BOM before MSH is dropped: the first segment is `MSH`, not `\\ufeffMSH`."""
    m = parse(b"\xef\xbb\xbf" + MSH + b"\rPID|1||X")
    assert m.segment_names == ("MSH", "PID")
    assert m["MSH.1"] == "|"
    assert m["MSH.3"] == "PCPEHR"


# --- character sets (MSH-18) ----------------------------------------------------------------


def test_msh18_8859_1_reads_latin1() -> None:
    """MSH-18 `8859/1` decodes the payload as ISO-8859-1 (bytes that are invalid UTF-8)."""
    m = parse(msh18(b"8859/1") + b"\rPID|1||X||M\xdcLLER^J\xd6RG||||||STRA\xdfE")
    assert m.charset == "latin-1"
    assert m["PID.5"] == "MÜLLER"
    assert m["PID.5.2"] == "JÖRG"
    assert m["PID.11"] == "STRAßE"


def test_msh18_unicode_utf8() -> None:
    """MSH-18 `UNICODE UTF-8` decodes the payload as UTF-8."""
    m = parse(msh18(b"UNICODE UTF-8") + "\rPID|1||X||MÜLLER^Jörg€".encode())
    assert m.charset == "utf-8"
    assert m["PID.5"] == "MÜLLER"
    assert m["PID.5.2"] == "Jörg€"


def test_empty_msh18_with_valid_utf8() -> None:
    """Empty MSH-18 and bytes that are valid UTF-8: read as UTF-8."""
    m = parse(MSH + "\rPID|1||X||MÜLLER".encode())
    assert m.charset == "utf-8"
    assert m["PID.5"] == "MÜLLER"


def test_empty_msh18_with_cp1252_bytes_falls_back() -> None:
    """Empty MSH-18 and bytes that are not UTF-8 (0x92, 0x93, 0x94): read as cp1252."""
    m = parse(msh18(b"") + b"\rPID|1||X||O\x92BRIEN\rNTE|1||\x93quoted\x94")
    assert m.charset == "cp1252"
    assert m["PID.5"] == "O\u2019BRIEN"
    assert m["NTE.3"] == "\u201cquoted\u201d"


def test_msh18_first_repetition_and_case() -> None:
    """MSH-18 is compared case-insensitively and its first repetition is the message charset."""
    m = parse(msh18(b"8859/1~UNICODE UTF-8") + b"\rPID|1||X||M\xdcLLER")
    assert m.charset == "latin-1"
    assert m["PID.5"] == "MÜLLER"
    assert parse(msh18(b"unicode utf-8")).charset == "utf-8"


def test_unknown_msh18_is_unsupported_charset() -> None:
    """An MSH-18 outside table 0211 as we read it: UnsupportedCharset, code 103 at MSH^1^18."""
    with pytest.raises(UnsupportedCharset) as info:
        parse(msh18(b"EBCDIC-37") + b"\rPID|1")
    assert info.value.code == "103"
    assert info.value.location == Location("MSH", 1, 18)
    assert str(info.value.location) == "MSH^1^18"


def test_latin1_and_utf8_bom_samples_decode_to_the_same_name() -> None:
    """The latin-1 sample and the UTF-8-with-BOM sample name the same patient identically."""
    latin = parse((SAMPLES / "charset_latin1_v251.hl7").read_bytes())
    utf8 = parse((SAMPLES / "charset_utf8_bom.hl7").read_bytes())
    assert latin["PID.5"] == utf8["PID.5"] == "TESTPATIENT-MÜLLER"
    assert latin["PID.5.2"] == utf8["PID.5.2"] == "JÖRG"
    assert latin["PID.11"] == utf8["PID.11"] == "11 FAKE STRAßE"


def test_cp1252_sample() -> None:
    """The MSH-18-empty cp1252 sample reads its 0x92/0x93/0x94 bytes as curly quotes."""
    m = parse((SAMPLES / "charset_cp1252_nomsh18.hl7").read_bytes())
    assert m.charset == "cp1252"
    assert m["PID.5"] == "O\u2019TESTPATIENT"
    assert "\u201cspreading\u201d" in m["NTE.3"]


# --- escapes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "decoded"),
    [
        ("\\F\\", "|"),
        ("\\S\\", "^"),
        ("\\T\\", "&"),
        ("\\R\\", "~"),
        ("\\E\\", "\\"),
        ("\\X0D0A\\", "\r\n"),
        ("\\X41\\", "A"),
        ("\\.br\\", "\\.br\\"),
        ("\\H\\", "\\H\\"),
        ("\\N\\", "\\N\\"),
        ("\\Zlocal\\", "\\Zlocal\\"),
        ("\\C2842\\", "\\C2842\\"),
        ("\\XZZ\\", "\\XZZ\\"),
        ("\\X\\", "\\X\\"),
        ("\\\\", "\\\\"),
    ],
)
def test_escape_sequences(wire: str, decoded: str) -> None:
    """Delimiter and hex escapes decode; formatting, charset-switch, local and malformed sequences
    are kept literally (docs/hl7-rules.md)."""
    m = msg(f"NTE|1||a{wire}b".encode())
    assert m["NTE.3"] == f"a{decoded}b"
    assert m.raw("NTE.3") == f"a{wire}b"


def test_hex_escape_decodes_in_the_message_charset() -> None:
    """`\\Xhh..\\` bytes are decoded in the message charset: `C39C` in UTF-8, `DC` in latin-1."""
    assert msg(b"NTE|1||M\\XC39C\\LLER")["NTE.3"] == "MÜLLER"
    assert parse(msh18(b"8859/1") + b"\rNTE|1||M\\XDC\\LLER")["NTE.3"] == "MÜLLER"


@pytest.mark.parametrize("tail", ["\\F", "\\", "\\X0D0A"])
def test_unterminated_escape_is_kept_literally(tail: str) -> None:
    """An escape character without a closing one is data."""
    m = msg(f"NTE|1||a\\S\\b{tail}".encode())
    assert m["NTE.3"] == f"a^b{tail}"


def test_escapes_are_decoded_per_leaf_after_splitting() -> None:
    """`\\S\\`, `\\T\\`, `\\R\\`, `\\F\\` inside a leaf never create components, subcomponents,
    repetitions or fields: they decode only after the split."""
    m = msg(b"PID|1||A\\S\\B\\T\\C\\R\\D\\F\\E^second||DOE")
    assert m.repetitions("PID.3") == ("A\\S\\B\\T\\C\\R\\D\\F\\E^second",)
    assert m["PID.3.1"] == "A^B&C~D|E"
    assert m["PID.3.1.2"] == ""
    assert m["PID.3.2"] == "second"
    assert m["PID.5"] == "DOE"
    assert m.raw("PID.3.1") == "A\\S\\B\\T\\C\\R\\D\\F\\E"


def test_escaped_escape_does_not_start_a_sequence() -> None:
    """`\\E\\F\\E\\` is a backslash, `F`, a backslash: the decoded escape is not re-read."""
    assert msg(b"NTE|1||\\E\\F\\E\\")["NTE.3"] == "\\F\\"


def test_escapes_sample() -> None:
    """escapes_v251.hl7: NTE-3 escapes decode, formatting escapes stay, PRD-3.1 `\\T\\` is one
    subcomponent."""
    m = parse((SAMPLES / "escapes_v251.hl7").read_bytes())
    assert m["NTE[1].3"] == "Field sep | component ^ subcomponent & repetition ~ escape \\ end."
    assert m["NTE[2].3"] == "Line one\r\nLine two (hex CRLF escape)"
    assert m["NTE[3].3"] == "Line one\\.br\\Line two (FT line break)"
    assert m["NTE[4].3"] == (
        "Pain score 7^10 & worse at night; \\H\\urgent\\N\\ per patient. Synthetic."
    )
    assert m["PRD[2].3.1"] == "200 TEST AVE & 2ND ST"
    assert m.raw("PRD[2].3.1.2") == ""
    assert m["PRD[2].3.3"] == "ANYTOWN"


def test_custom_delimiter_sample() -> None:
    """delim_custom.hl7: `?F?`/`?S?` decode to the custom `#`/`$`; PID-3 splits on `$`."""
    m = parse((SAMPLES / "delim_custom.hl7").read_bytes())
    assert m.delimiters == Delimiters("#", "$", "*", "?", "%")
    assert m["NTE.3"] == "Custom delimiters: field sep is # and component sep is $. Synthetic."
    assert m["PID.3.4"] == "NORTHCLINIC"
    assert m["RF1.6.2"] == "PCPEHR"


def test_five_char_sample() -> None:
    """delim_five_chars_v28.hl7: MSH-2 has the truncation char and NTE-3 its `\\P\\` escape."""
    m = parse((SAMPLES / "delim_five_chars_v28.hl7").read_bytes())
    assert m["MSH.2"] == "^~\\&#"
    assert (
        m["NTE.3"] == "v2.8 with truncation char in MSH-2. Patient lives in Suite #12. Synthetic."
    )


# --- rejects --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PID|1||X\rMSH|^~\\&|A\r",
        b"\x16\x03\x01\x02\x00\x01\x00",
        b"MSH",
        b"MSH|^~\\",
        b"msh|^~\\&|A|B",
        b"\x00\x00\x00",
    ],
    ids=["empty", "blank", "http", "msh-not-first", "tls", "msh-only", "short", "lowercase", "nul"],
)
def test_no_msh_is_not_hl7(payload: bytes) -> None:
    """Bytes that do not start (after a BOM and whitespace) with `MSH` + delimiters: NotHL7, 100."""
    with pytest.raises(NotHL7) as info:
        parse(payload)
    assert info.value.code == "100"
    assert info.value.location is None


@pytest.mark.parametrize(
    "header",
    [
        b"MSH|^^\\&|A",  # repeated component/repetition
        b"MSH|^~\\^|A",  # subcomponent repeats the component separator
        b"MSH|^~|&|A",  # field separator inside MSH-2
        b"MSH|^~\\|",  # too short (3 characters)
        b"MSH|^~|A",  # too short (2 characters)
        b"MSH||A",  # empty MSH-2
        b"MSH|^~\\&#!|A",  # too long (6 characters)
        b"MSH|^~A&|A",  # alphanumeric escape character
        b"MSH|1~\\&|A",  # digit as component separator
        b"MSHA^~\\&AB",  # alphanumeric field separator
        b"MSH ^~\\& A",  # space as field separator
        b"MSH|^ \\&|A",  # space in MSH-2
        b"MSH|^~\\\xe9|A",  # non-ASCII byte in MSH-2
        b"MSH\xa6^~\\&\xa6A",  # non-ASCII byte as field separator
    ],
)
def test_bad_msh2_is_bad_encoding_characters(header: bytes) -> None:
    """MSH-1/MSH-2 that are not 5 or 6 distinct, non-alphanumeric ASCII delimiters:
    BadEncodingCharacters, code 100 at MSH^1^2 (never a bare UnicodeError or ValueError)."""
    with pytest.raises(BadEncodingCharacters) as info:
        parse(header + b"\rPID|1")
    assert info.value.code == "100"
    assert info.value.location == Location("MSH", 1, 2)


# --- the sample corpus ----------------------------------------------------------------------


def _is_garbage(entry: dict[str, object]) -> bool:
    """The manifest's no-MSH entry: AR with MSA-2 empty and ERR-3 100."""
    acks = entry.get("acks")
    assert isinstance(acks, list)
    return any(a.get("msa2") == "" and a.get("err3") == "100" for a in acks)


HL7_SAMPLES = sorted(name for name, entry in MANIFEST.items() if not _is_garbage(entry))
GARBAGE = sorted(name for name, entry in MANIFEST.items() if _is_garbage(entry))


def test_manifest_covers_every_sample_file() -> None:
    """Every `samples/*.hl7` has a manifest entry and vice versa; exactly one is garbage."""
    assert set(MANIFEST) == {p.name for p in SAMPLES.glob("*.hl7")}
    assert GARBAGE == ["reject_no_msh.hl7"]


@pytest.mark.parametrize("name", GARBAGE)
def test_garbage_sample_is_not_hl7(name: str) -> None:
    """The HTTP-probe sample is rejected as NotHL7 (code 100)."""
    with pytest.raises(NotHL7) as info:
        parse((SAMPLES / name).read_bytes())
    assert info.value.code == "100"


def _wire_msh(raw: bytes) -> tuple[list[str], str]:
    """MSH fields straight from the file bytes, indexed so that `[n]` is MSH-n, and MSH-2."""
    line = raw.removeprefix(b"\xef\xbb\xbf").splitlines()[0].decode("ascii")
    fs = line[3]
    parts = line.split(fs)
    return ["MSH", fs, *parts[1:]], parts[1]


def _as_sent(raw: bytes, name: str) -> bytes:
    """The payload as the sending tool puts it on the wire: bare LF becomes CR (samples/README)."""
    return raw if name == "crlf_terminators.hl7" else raw.replace(b"\n", b"\r")


@pytest.mark.parametrize("name", HL7_SAMPLES)
def test_sample_header_matches_file(name: str) -> None:
    """Each HL7 sample parses, as stored (LF) and as sent (CR), to the same segments; MSH-9,
    MSH-9.1/2, MSH-10 and MSH-12 equal what the file's bytes say."""
    raw = (SAMPLES / name).read_bytes()
    fields, enc = _wire_msh(raw)
    stored = parse(raw)
    sent = parse(_as_sent(raw, name))
    assert stored.segments == sent.segments
    lines = [ln for ln in raw.removeprefix(b"\xef\xbb\xbf").splitlines() if ln.strip()]
    assert len(stored.segments) == len(lines)
    for m in (stored, sent):
        assert m.segment_names[0] == "MSH"
        assert m.raw("MSH.9") == fields[9]
        type_, _, rest = fields[9].partition(enc[0])
        assert m["MSH.9"] == m["MSH.9.1"] == type_
        assert m["MSH.9.2"] == rest.partition(enc[0])[0]
        assert m["MSH.10"] == fields[10]
        assert m["MSH.12"] == fields[12]
        assert m["MSH.1"] == fields[1]
        assert m["MSH.2"] == enc


def test_blank_line_after_crlf_does_not_swallow_the_next_segment() -> None:
    """CR LF LF between segments is a blank line: the next segment keeps its name."""
    msg = parse(b"MSH|^~\\&|A|B|C|D|20260101||REF^I12|C1|P|2.5.1\r\n\nPID|1||100001\r\n")
    assert msg.segment_names == ("MSH", "PID")
    assert msg["PID.3"] == "100001"


def test_msh18_is_read_from_the_msh_segment_the_header_sees() -> None:
    """With CRs present an LF is data (docs/hl7-rules.md), also in MSH: the charset comes from the
    MSH-18 of that same segment, so the header never reports an MSH-18 the parser did not read
    (the ACK echoes it).  Before, an LF inside MSH-9 hid an unknown MSH-18 from the parser."""
    raw = b"MSH|^~\\&|A|B|C|D|20260101||\n|C1|P|2.5.1||||||KLINGON\rPID|1\r"
    with pytest.raises(UnsupportedCharset):
        parse(raw)
    latin = parse(b"MSH|^~\\&|A|B|C|D|20260101||RE\nF^I12|C1|P|2.5.1||||||8859/1\rPID|1|\xe9\r")
    assert (latin.charset, latin["PID.2"]) == ("latin-1", "\u00e9")


@pytest.mark.parametrize("charset", [b"GB 18030-2000", b"BIG-5"])
def test_a_delimiter_taken_into_a_multibyte_character_is_an_unsupported_charset(
        charset: bytes) -> None:
    """In GB 18030 or Big5 a byte such as 0xE8 followed by `|` can decode as one
    character: the decoded MSH no longer has the fields the charset was read from (its MSH-18
    would be something else, echoed in the ACK).  Such a message is AR 103 at MSH-18."""
    raw = b"MSH|^~\\&|A|B|C|\xe8|20260101||REF^I12|C1|P|2.5.1||||||" + charset + b"\rPID|1\r"
    with pytest.raises(UnsupportedCharset) as err:
        parse(raw)
    assert err.value.location == Location("MSH", 1, 18)
    ok = parse(b"MSH|^~\\&|A|B|C|D|20260101||REF^I12|C1|P|2.5.1||||||" + charset
               + b"\rPID|1|" + "\u4e2d".encode(parse_codec(charset)) + b"\r")
    assert ok["PID.2"] == "\u4e2d"


def parse_codec(charset: bytes) -> str:
    """The Python codec of a table-0211 name, as the parser maps it."""
    from engine.parsing.parser import CHARSETS

    return CHARSETS[charset.decode()]


@pytest.mark.parametrize("msh18", [b"\n\n", b" ", b" ^x", b"\t~8859/1"])
def test_a_blank_msh18_is_no_charset_to_echo(msh18: bytes) -> None:
    """An MSH-18 whose first component is blank names no character set (the parser reads the
    message as if MSH-18 were empty), so the header has none for the ACK to echo."""
    msg = parse(b"MSH|^~\\&|A|B|C|D|20260101||REF^I12|C1|P|2.5.1||||||" + msh18 + b"\rPID|1\r")
    assert msg.header.charset_raw == ""


def test_msh18_is_read_with_the_message_delimiters() -> None:
    """MSH-18 is split like any field: with `/` as the subcomponent separator, `8859/1` is
    `8859` (no character set we read, AR 103) and the sender writes `8859\\T\\1`.  The ACK,
    re-encoded with standard delimiters, then names the same character set."""
    head = b"MSH|^~\\/|A|B|C|D|20260101||REF^I12|C1|P|2.5.1||||||"
    with pytest.raises(UnsupportedCharset):
        parse(head + b"8859/1\rPID|1\r")
    msg = parse(head + b"8859\\T\\1\rPID|1|\xe9\r")
    assert (msg.charset, msg["PID.2"]) == ("latin-1", "\u00e9")
    assert parse(b"MSH|^~\\&|A|B|C|D|20260101||REF^I12|C1|P|2.5.1||||||8859/1&x\r").charset \
        == "latin-1"
