"""Every row of the docs/acknowledgements.md condition → code table, in original and enhanced mode, byte-exact.

The builder gets a fixed clock and control-id generator, so whole ACKs can be compared.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.ack import ACCEPTED, AckBuilder, Stage, Verdict, ack_codes, transcode
from engine.config import parse_config
from engine.errors import Disposition, Location
from engine.parsing import Delimiters, parse
from engine.parsing.message import STANDARD
from engine.prepare import Job, prepare

CHANNEL = parse_config({"channels": [{
    "name": "referrals", "listen": {"port": 0},
    "accept": ["REF^I12-I15", "SIU^S12-S26", "ORM^O01"],
    "ack": {"application": "REFTRACK", "facility": "HUB"},
}]}).channels[0]

NOW = datetime(2026, 11, 28, 9, 30, 0, tzinfo=UTC)


@pytest.fixture(name="builder")
def builder_fixture() -> AckBuilder:
    return AckBuilder("REFTRACK", "HUB", control_ids=lambda: "ACK1", clock=lambda: NOW)


def _msg(msh9: str = "REF^I12^REF_I12", version: str = "2.5.1", processing: str = "P",
         msh15: str = "", msh16: str = "", control: str = "C1") -> bytes:
    tail = f"|||{msh15}|{msh16}" if msh15 or msh16 else ""
    return (f"MSH|^~\\&|PCPEHR|NORTH|REFTRACK|HUB|20260101120000||{msh9}|{control}|"
            f"{processing}|{version}{tail}\rRF1|P|||||R-1^PCPEHR\rPRD|RT\rPID|1||100001^^^NORTH^MR\r"
            ).encode()


def _answer(builder: AckBuilder, raw: bytes) -> list[bytes]:
    p = prepare(Job(CHANNEL, raw, "test", NOW))
    return builder.build(p.msg, p.verdict)


HEAD = b"MSH|^~\\&|REFTRACK|HUB|PCPEHR|NORTH|20261128093000+0000||"


# (raw message, expected MSA-1, ERR-3, ERR-2 location) -- docs/hl7-rules.md, original mode, v2.5.1
ROWS = [
    pytest.param(_msg(), "AA", "", "", id="processed"),
    pytest.param(_msg(msh9=""), "AR", "101", "MSH^1^9", id="msh9-empty"),
    pytest.param(_msg(msh9="ADT^A01"), "AR", "200", "MSH^1^9", id="type-unsupported"),
    pytest.param(_msg(msh9="REF^I99"), "AR", "201", "MSH^1^9", id="trigger-unsupported"),
    pytest.param(_msg(processing="T"), "AR", "202", "MSH^1^11", id="processing-id"),
    pytest.param(_msg(version="2.9"), "AR", "203", "MSH^1^12", id="version"),
    pytest.param(_msg(control=""), "AR", "101", "MSH^1^10", id="msh10-empty"),
]


@pytest.mark.parametrize(("raw", "msa1", "err3", "where"), ROWS)
def test_original_mode_rows(builder: AckBuilder, raw: bytes, msa1: str, err3: str,
                            where: str) -> None:
    """Original mode: one ACK whose MSA-1, ERR-3 and ERR-2 follow the table (v2.5+ layout)."""
    (ack,) = _answer(builder, raw)
    msg = parse(ack)
    assert (msg["MSA.1"], msg["ERR.3"], msg.raw("ERR.2")) == (msa1, err3, where)
    assert msg["ERR.4"] == ("E" if err3 else "")
    assert msg["MSA.2"] == parse(raw)["MSH.10"]


@pytest.mark.parametrize(("raw", "msa1", "err3", "where"), ROWS)
def test_enhanced_mode_rows(builder: AckBuilder, raw: bytes, msa1: str, err3: str,
                            where: str) -> None:
    """Enhanced mode (MSH-15/16 = AL/AL): header rows become CR in the accept ACK and no
    application ACK follows; a processed message gets CA then AA."""
    raw = raw.replace(b"\rRF1", b"|||AL|AL\rRF1") if b"|||AL" not in raw else raw
    acks = [parse(a) for a in _answer(builder, raw)]
    if msa1 == "AA":
        assert [a["MSA.1"] for a in acks] == ["CA", "AA"]
    else:
        assert [(a["MSA.1"], a["ERR.3"], a.raw("ERR.2")) for a in acks] == [("CR", err3, where)]


def test_processed_ack_is_byte_exact(builder: AckBuilder) -> None:
    """The ACK's MSH swaps sender and receiver, echoes MSH-11/12, and MSH-9 is ACK^I12^ACK."""
    (ack,) = _answer(builder, _msg())
    assert ack == HEAD + b"ACK^I12^ACK|ACK1|P|2.5.1\rMSA|AA|C1\r"


def test_v23_ack_has_two_component_msh9_and_err1_layout(builder: AckBuilder) -> None:
    """v2.3: MSH-9 ACK^I12 (no structure component), ERR-1 `seg^seq^field^code&text&HL70357`
    and the text in MSA-3 (docs/acknowledgements.md, ERR layout)."""
    (ack,) = _answer(builder, _msg(msh9="REF^I99", version="2.3"))
    assert ack == (HEAD + b"ACK^I99|ACK1|P|2.3\r"
                   b"MSA|AR|C1|Unsupported event code: MSH-9.2 trigger event I99 of REF is not "
                   b"accepted by channel referrals\r"
                   b"ERR|MSH^1^9^201&Unsupported event code&HL70357\r")


def test_v25_error_ack_is_byte_exact(builder: AckBuilder) -> None:
    """v2.5+: ERR-2 location, ERR-3 CWE from table 0357, ERR-4 severity E, ERR-8 text."""
    (ack,) = _answer(builder, _msg(version="2.9"))
    assert ack.endswith(b"\rMSA|AR|C1\rERR||MSH^1^12|203^Unsupported version id^HL70357|E||||"
                        b"MSH-12 version 2.9 is not accepted (accepted: 2.3, 2.3.1, 2.4, 2.5, 2.5.1, "
                        b"2.6, 2.7, 2.7.1, 2.8, 2.8.1, 2.8.2)\r")


def test_garbage_gets_ar_with_empty_msa2(builder: AckBuilder) -> None:
    """No MSH at all: AR, MSA-2 empty, ERR-3 100 and no location."""
    (ack,) = _answer(builder, b"GET / HTTP/1.0\r\n\r\n")
    assert ack.endswith(b"\rMSA|AR|\rERR|||100^Segment sequence error^HL70357|E||||"
                        b"no MSH segment at the start of the message\r")


def test_unknown_charset_is_rejected_at_msh18(builder: AckBuilder) -> None:
    """An MSH-18 outside table 0211 as we read it: AR 103 at MSH^1^18."""
    raw = _msg().replace(b"P|2.5.1", b"P|2.5.1||||||KLINGON")
    (ack,) = _answer(builder, raw)
    msg = parse(ack)
    assert (msg["MSA.1"], msg["ERR.3"], msg.raw("ERR.2")) == ("AR", "103", "MSH^1^18")


def test_commit_failure_is_ae_207_never_aa(builder: AckBuilder) -> None:
    """A message that could not be committed is answered AE 207 (original) or CE (enhanced)."""
    failed = Verdict(Disposition.ERRORED, Stage.COMMIT, "207", None, "could not store")
    (original,) = builder.build(parse(_msg()), failed)
    enhanced = builder.build(parse(_msg(msh15="AL", msh16="AL")), failed)
    assert (parse(original)["MSA.1"], parse(original)["ERR.3"]) == ("AE", "207")
    assert [parse(a)["MSA.1"] for a in enhanced] == ["CE"]


@pytest.mark.parametrize(("msh15", "msh16", "disposition", "codes"), [
    ("AL", "AL", Disposition.ACCEPTED, ["CA", "AA"]),
    ("NE", "NE", Disposition.ACCEPTED, []),
    ("AL", "NE", Disposition.ACCEPTED, ["CA"]),
    ("NE", "AL", Disposition.ACCEPTED, ["AA"]),
    ("ER", "ER", Disposition.ACCEPTED, []),
    ("SU", "SU", Disposition.ACCEPTED, ["CA", "AA"]),
    ("AL", "ER", Disposition.ERRORED, ["CA", "AE"]),
    ("AL", "SU", Disposition.ERRORED, ["CA"]),
    ("", "AL", Disposition.ACCEPTED, ["CA", "AA"]),
    ("AL", "", Disposition.ACCEPTED, ["CA"]),
    ("", "", Disposition.ERRORED, ["AE"]),
])
def test_table_0155_conditions(msh15: str, msh16: str, disposition: Disposition,
                               codes: list[str]) -> None:
    """AL always, NE never, ER only on error, SU only on success; empty MSH-15 in enhanced
    mode means AL and empty MSH-16 means NE (our decision, README)."""
    verdict = ACCEPTED if disposition is Disposition.ACCEPTED else Verdict(
        disposition, Stage.CONTENT, "101", Location("PID", 1, 3), "x")
    assert ack_codes(verdict, msh15, msh16) == codes


def test_custom_delimiters_are_transcoded_to_standard(builder: AckBuilder) -> None:
    """A sender with `#$*?%` delimiters gets a standard `|^~\\&` ACK with its values re-encoded:
    its `|` is data and becomes `\\F\\`, its escaped `?F?` is a `#`, plain in the ACK."""
    raw = (b"MSH#$*?%#PC|PEHR#NORTH$X#REFTRACK#HUB#20260101##REF$I12#C?F?1#P#2.5.1\r"
           b"RF1#P#####R-1\rPRD#RT\rPID#1\r")
    (ack,) = _answer(builder, raw)
    assert ack == (b"MSH|^~\\&|REFTRACK|HUB|PC\\F\\PEHR|NORTH^X|20261128093000+0000||"
                   b"ACK^I12^ACK|ACK1|P|2.5.1\rMSA|AA|C#1\r")


def test_transcode_round_trips_structure() -> None:
    """Repetitions, components and subcomponents keep their structure across delimiter sets."""
    src = Delimiters("#", "$", "*", "?", "%")
    assert transcode("a$b%c*d?S?e", src, STANDARD) == "a^b&c~d$e"


def test_ack_uses_inbound_charset_and_echoes_msh18(builder: AckBuilder) -> None:
    """A latin-1 sender gets its ACK in latin-1 with MSH-18 echoed."""
    raw = ("MSH|^~\\&|PCPEHR|MÜNCHEN|REFTRACK|HUB|20260101||REF^I12|C1|P|2.5.1|||||"
           "|8859/1\rRF1|P|||||R-1\rPRD|RT\rPID|1\r").encode("latin-1")
    (ack,) = _answer(builder, raw)
    assert "MÜNCHEN".encode("latin-1") in ack
    assert ack.split(b"\r")[0].endswith(b"|8859/1")
