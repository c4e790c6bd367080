"""`validation: strict` per channel: hl7apy's structure check on the hot path.

The configuration key, the mapping of hl7apy's report lines onto table-0357 codes and ERR-2
locations (on real broken copies of the samples, checked by the real hl7apy), the pipeline on a
real SQLite file (AE stored, ledger unchanged; enhanced mode; an hl7apy crash answered AR 207),
and the engine as a subprocess over real TCP.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from enginectl import ROOT, Engine, sample_payload, stored_messages, write_config
from sqlalchemy import Engine as Database
from sqlalchemy import create_engine, func, select
from structlog.testing import capture_logs

from engine.ack import AckBuilder
from engine.config import Channel, ConfigError, parse_config
from engine.errors import HL7Error
from engine.mllp.blocking import MLLPClient
from engine.parsing import InboundMessage, parse
from engine.pipeline import Job, Pipeline
from engine.store.database import open_database
from engine.store.ledger.views import list_referrals
from engine.store.schema import referrals
from engine.strict import check, classify

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
ACCEPT = ["REF^I12-I15", "RRI^I12-I15", "ORM^O01", "OMG^O19", "OSU^O51", "SIU^S12-S26"]
REF = sample_payload("ref_i12_v251.hl7")


def _channel(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "listen": {"port": 0}, "accept": ACCEPT, **extra}


STRICT, LENIENT = parse_config({"channels": [
    _channel("strict", validation="strict"), _channel("lenient")]}).channels


# --- message surgery: synthetic samples made to break one rule -------------------------------


def _segments(raw: bytes) -> list[bytes]:
    return raw.rstrip(b"\r").split(b"\r")


def _join(segments: list[bytes]) -> bytes:
    return b"\r".join(segments) + b"\r"


def _without(raw: bytes, name: bytes) -> bytes:
    """Every `name` segment removed."""
    return _join([s for s in _segments(raw) if not s.startswith(name + b"|")])


def _with_field(raw: bytes, name: bytes, n: int, value: bytes, seq: int | None = None) -> bytes:
    """Field n of every `name` segment (or only of the seq-th) set to `value`."""
    out, seen = [], 0
    for s in _segments(raw):
        if s.startswith(name + b"|"):
            seen += 1
            if seq is None or seen == seq:
                fields = s.split(b"|")
                fields += [b""] * (n + 1 - len(fields))
                fields[n] = value
                s = b"|".join(fields)
        out.append(s)
    return _join(out)


def _renamed(raw: bytes, tag: str) -> bytes:
    """A new message: MSH-10 and the referral key RF1-6 made unique by `tag`."""
    return (raw.replace(b"REF-I12-V251", f"REF-{tag}".encode(), 1)
            .replace(b"MFP-R-1001", f"MFP-R-{tag}".encode()))


def _verdict(raw: bytes) -> HL7Error | None:
    return check(parse(raw), raw)


# --- configuration ---------------------------------------------------------------------------


def test_validation_defaults_to_lenient_and_takes_strict() -> None:
    """A channel without `validation` is lenient (today's behaviour); `strict` is kept."""
    assert (STRICT.validation, LENIENT.validation) == ("strict", "lenient")
    assert Channel("x", "0.0.0.0", 0, frozenset()).validation == "lenient"


@pytest.mark.parametrize("value", ["x", "Strict", 1, True, ["strict"]])
def test_an_unknown_validation_value_is_a_config_error_with_its_path(value: Any) -> None:
    """Anything but lenient or strict is reported with its YAML path, with every other
    problem of the file, and the configuration is refused."""
    with pytest.raises(ConfigError) as info:
        parse_config({"channels": [_channel("a"), _channel("b", validation=value,
                                                            versions="2.5")]})
    assert info.value.problems == [
        "channels[1].versions: expected a non-empty list",
        f"channels[1].validation: expected lenient or strict, got {value!r}",
    ]


def test_check_config_shows_each_channels_validation_mode(tmp_path: Path) -> None:
    """`hl7-engine check-config` names the validation mode on every channel's line."""
    path = write_config(tmp_path, "sqlite:///x.db", validation="strict")
    config = yaml.safe_load(path.read_text())
    config["channels"].append({**config["channels"][0], "name": "plain", "validation": "lenient"})
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run([sys.executable, "-m", "engine", "check-config", "--config", str(path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert (out.returncode, out.stderr) == (0, "")
    lines = out.stdout.splitlines()
    assert lines[0].startswith("channel referrals: ") and lines[0].endswith(", validation strict")
    assert lines[1].startswith("channel plain: ") and lines[1].endswith(", validation lenient")


# --- hl7apy's report lines to codes and locations (real hl7apy on broken samples) ----------


CASES: list[tuple[str, bytes, str, str | None, str]] = [
    ("required segment", _without(REF, b"PID"), "100", "PID^1",
     "required segment PID missing in REF_I12"),
    ("required group, named by its first segment", _without(REF, b"PRD"), "100", "PRD^1",
     "required segment group REF_I12_PROVIDER_CONTACT missing in REF_I12"),
    ("required group in v2.3", _without(sample_payload("ref_i12_v23.hl7"), b"PRD"), "100",
     "PRD^1", "required segment group REF_I12_PROVIDER missing in REF_I12"),
    ("required segment in a group", _without(sample_payload("siu_s12_v251.hl7"), b"RGS"),
     "100", "RGS^1", "required segment RGS missing in SIU_S12_RESOURCES"),
    ("missing choice group: its first alternative",
     _without(sample_payload("orm_o01_v24.hl7"), b"OBR"), "100", "OBR^1",
     "required segment group ORM_O01_CHOICE missing in ORM_O01_ORDER_DETAIL"),
    ("segment repeated", _join([*_segments(REF)[:2], _segments(REF)[1], *_segments(REF)[2:]]),
     "100", "RF1^2", "segment RF1 repeated; REF_I12 allows one"),
    ("required field", _with_field(REF, b"PID", 5, b""), "101", "PID^1^5",
     "required field PID-5 missing"),
    ("required field, in the second occurrence", _with_field(REF, b"PRD", 1, b"", seq=2),
     "101", "PRD^2^1", "required field PRD-1 missing"),
    ("non-repeating field repeated", _with_field(REF, b"PID", 1, b"1~2"), "102", "PID^1^1",
     "field PID-1 repeated; it does not repeat"),
    ("components in a primitive field", _with_field(REF, b"PID", 1, b"1^2"), "102", "PID^1^1",
     "PID-1 does not fit its data type"),
    ("subcomponents in a primitive component", _with_field(REF, b"PID", 3, b"1&2^^^A^MR"),
     "102", "PID^1^3", "component CX.1 of PID-3 does not fit its data type"),
    ("more components than the data type", _with_field(REF, b"DG1", 3, b"^".join([b"C"] * 12)),
     "102", "DG1^1^3", "DG1-3 has more components than its data type CE"),
    ("fields past the segment's definition", _with_field(REF, b"PID", 45, b"X"), "102",
     "PID^1^45", "PID has fields its definition does not have"),
    ("a component's parts: no field to name", _with_field(REF, b"PID", 3, b"1^^^A&B&C&D^MR"),
     "102", None, "CX.4 has more parts than its data type HD"),
    ("structure hl7apy does not know", sample_payload("osu_o51_v251.hl7"), "100", None,
     "hl7apy has no 2.5.1 structure for this message"),
]


@pytest.mark.parametrize(("raw", "code", "location", "text"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hl7apy_errors_map_to_a_0357_code_and_location(
        raw: bytes, code: str, location: str | None, text: str) -> None:
    """Each kind of hl7apy error becomes its table-0357 code, the ERR-2 location of the
    segment or field at fault, and a text naming the rule."""
    error = _verdict(raw)
    assert error is not None
    assert (error.code, str(error.location) if error.location else None) == (code, location)
    assert error.reason.startswith(f"strict validation: {text}")


STRICT_CLEAN = ["ref_i12_v251.hl7", "ref_i12_v23.hl7", "ref_i12_v28.hl7", "ref_i13_v251.hl7",
                "ref_i14_v251.hl7", "rri_i12_v251.hl7", "orm_o01_v24.hl7", "omg_o19_v251.hl7",
                "siu_s12_v251.hl7", "siu_s12_v23.hl7", "siu_s15_v251.hl7", "siu_s26_v251.hl7",
                "crlf_terminators.hl7", "charset_latin1_v251.hl7", "charset_utf8_bom.hl7",
                "charset_cp1252_nomsh18.hl7", "delim_custom.hl7", "delim_five_chars_v28.hl7",
                "escapes_v251.hl7", "enhanced_al_al_v251.hl7"]


@pytest.mark.parametrize("name", STRICT_CLEAN)
def test_the_samples_pass_strict_validation(name: str) -> None:
    """hl7apy's warnings (table values, lengths) never reject, and the alternatives hl7apy
    reports missing from a choice group (ORM_O01 v2.4's OBR|RQD|RQ1|RXO|ODS|ODT) are not
    errors: every well-formed sample passes."""
    assert _verdict(sample_payload(name)) is None


def test_the_text_counts_the_problems_and_carries_no_value() -> None:
    """With several problems, the first decides and the text says how many there were; no
    field value (here a made-up patient marker in the faulty fields) reaches the text."""
    raw = _with_field(_with_field(REF, b"PID", 1, b"SECRET1^SECRET2"), b"PID", 45, b"SECRET3")
    error = _verdict(_without(raw, b"PRD"))
    assert error is not None and error.code == "100"
    assert error.reason.endswith("(1 of 3 problems)")
    assert "SECRET" not in str(error)


def test_a_version_hl7apy_does_not_define_is_ar_203() -> None:
    """hl7apy has no 2.7.1: a strict channel cannot check it and answers AR 203 at MSH-12
    (header stage: CR in enhanced mode), as for a version it does not take."""
    error = _verdict(_with_field(REF, b"MSH", 11, b"2.7.1"))
    assert error is not None
    assert (error.code, str(error.location), error.disposition.value) == (
        "203", "MSH^1^12", "rejected")


def _msg() -> InboundMessage:
    return parse(REF)


@pytest.mark.parametrize(("line", "code", "location", "text"), [
    ("Missing required child MSH_7.TS_1", "101", "MSH^1^7",
     "required component TS.1 of MSH-7 missing"),
    ("Missing required child CX_4.HD_1", "101", None,
     "required component HD.1 of CX.4 missing"),
    ("Child limit exceeded REF_I12.REF_I12_PATIENT_VISIT", "100", "PV1^2",
     "segment group REF_I12_PATIENT_VISIT repeated; REF_I12 allows one"),
    ("Datatype None is not correct for CX_4.HD_1 (it must be None)", "102", None,
     "component HD.1 of CX.4 does not fit its data type"),
    ("Invalid children detected for <Message REF_I12>: ['ZZZ']", "100", "ZZZ^1",
     "segment ZZZ not allowed in REF_I12"),
    ("Value SECRET not in table HL70001 in element PID.PID_8", "103", "PID^1^8",
     "value of PID-8 not in table HL70001"),
    ("Value SECRET not in table HL70396 in element RF1_1.CE_3", "103", "RF1^1^1",
     "value of RF1-1 not in table HL70396"),
    ("hl7apy cannot read it: ParserError: SECRET", "100", None,
     "hl7apy cannot read the message (ParserError)"),
])
def test_report_lines_hl7apy_rarely_writes(line: str, code: str, location: str | None,
                                           text: str) -> None:
    """The rules for lines that hl7apy 1.3.5 writes for inputs our header checks already
    refuse, or only as warnings (table values): checked on the line itself."""
    error = classify(line, _msg())
    assert error is not None
    assert (error.code, str(error.location) if error.location else None) == (code, location)
    assert error.reason == f"strict validation: {text}"
    assert "SECRET" not in str(error)


def test_a_line_no_rule_knows_is_100_without_location(monkeypatch: pytest.MonkeyPatch) -> None:
    """An hl7apy error line that no rule recognises still rejects, as 100 with no location,
    and its text (which could hold a value) is not repeated."""
    import engine.strict
    from engine.validation import Report

    assert classify("Something new SECRET", _msg()) is None
    monkeypatch.setattr(engine.strict, "report", lambda msg, raw: Report(["Something new SECRET"]))
    error = _verdict(REF)
    assert error is not None and (error.code, error.location) == ("100", None)
    assert "SECRET" not in str(error)


# --- the pipeline, on a real SQLite file ------------------------------------------------------


@pytest.fixture(name="pipeline")
def pipeline_fixture(sqlite_url: str) -> Iterator[tuple[Pipeline, Database]]:
    db = open_database(sqlite_url)
    builders = {"strict": AckBuilder("REFTRACK", "HUB"), "lenient": AckBuilder("REFTRACK", "HUB")}
    pipeline = Pipeline(db, builders, clock=lambda: NOW)
    yield pipeline, db
    pipeline.close()


def _run(pipeline: Pipeline, channel: Channel, *raws: bytes) -> list[list[list[str]]]:
    """Each message's ACKs as [MSA-1, MSA-2, location, code] (ERR-2/3, or ERR-1 before 2.5)."""
    results = pipeline.process_batch([Job(channel, raw, "127.0.0.1:1", NOW) for raw in raws])
    return [[_answer(parse(a)) for a in r.acks] for r in results]


def _answer(ack: InboundMessage) -> list[str]:
    where = ack.raw("ERR.2") or "^".join(ack[f"ERR.1.{i}"] for i in (1, 2, 3)).rstrip("^")
    return [ack["MSA.1"], ack["MSA.2"], where, ack["ERR.3"] or ack["ERR.1.4"]]


def _keys(db: Database) -> list[str]:
    with db.connect() as conn:
        return [r["id"] for r in list_referrals(conn)]


def _stored(url: str) -> list[tuple[Any, ...]]:
    return stored_messages(url, "channel", "control_id", "status", "stage", "error_code",
                           "error_location", "ack_codes")


def test_a_valid_message_on_a_strict_channel_is_aa_and_applied(
        pipeline: tuple[Pipeline, Database]) -> None:
    """A well-formed REF^I12 passes hl7apy: AA, and it opens its referral."""
    p, db = pipeline
    assert _run(p, STRICT, REF) == [[["AA", "REF-I12-V251", "", ""]]]
    assert _keys(db) == ["MFP-R-1001^PCPEHR"]


def test_what_hl7apy_rejects_is_ae_stored_and_changes_no_ledger(
        pipeline: tuple[Pipeline, Database], sqlite_url: str) -> None:
    """A REF^I12 without PRD (the lenient path takes it) is AE 100 at PRD^1 on a strict
    channel, is stored with its error, and opens no referral; a bad data type is AE 102 at its
    field; a pre-2.5 message carries the code in ERR-1."""
    p, db = pipeline
    no_prd = _renamed(_without(REF, b"PRD"), "S1")
    bad_type = _renamed(_with_field(REF, b"PID", 1, b"1^2"), "S2")
    v23 = _without(sample_payload("ref_i12_v23.hl7"), b"PRD")
    assert _run(p, STRICT, no_prd, bad_type, v23) == [
        [["AE", "REF-S1", "PRD^1", "100"]],
        [["AE", "REF-S2", "PID^1^1", "102"]],
        [["AE", "REF-I12-V23", "PRD^1", "100"]],
    ]
    assert _keys(db) == []
    assert _stored(sqlite_url) == [
        ("strict", "REF-S1", "errored", "content", "100", "PRD^1", "AE"),
        ("strict", "REF-S2", "errored", "content", "102", "PID^1^1", "AE"),
        ("strict", "REF-I12-V23", "errored", "content", "100", "PRD^1", "AE"),
    ]


def test_the_same_message_on_a_lenient_channel_is_aa(
        pipeline: tuple[Pipeline, Database]) -> None:
    """Lenient channels are unchanged: a REF^I12 whose second PRD has no PRD-1 (hl7apy: a
    required field) is AA and opens its referral.  (One without any PRD is AE 100 on every
    channel: the engine's own REF rule, docs/hl7-rules.md.)"""
    p, db = pipeline
    assert _run(p, LENIENT, _renamed(_with_field(REF, b"PRD", 1, b"", seq=2), "L1")) == [
        [["AA", "REF-L1", "", ""]]]
    assert _keys(db) == ["MFP-R-L1^PCPEHR"]


def test_enhanced_mode_on_a_strict_channel_is_ca_then_ae(
        pipeline: tuple[Pipeline, Database], sqlite_url: str) -> None:
    """MSH-15/16 AL/AL: the message is committed (CA), then the application ACK is AE 100
    with the location, like every content error; a valid one is CA then AA."""
    p, db = pipeline
    enhanced = sample_payload("enhanced_al_al_v251.hl7")
    broken = _without(enhanced.replace(b"ENH-AL-AL-V251", b"ENH-BROKEN"), b"PRD")
    assert _run(p, STRICT, broken, enhanced) == [
        [["CA", "ENH-BROKEN", "", ""], ["AE", "ENH-BROKEN", "PRD^1", "100"]],
        [["CA", "ENH-AL-AL-V251", "", ""], ["AA", "ENH-AL-AL-V251", "", ""]],
    ]
    assert _stored(sqlite_url)[0][4:] == ("100", "PRD^1", "CA AE")


def test_an_hl7apy_crash_is_ar_207_logged_and_the_batch_goes_on(
        pipeline: tuple[Pipeline, Database], sqlite_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception from inside hl7apy (here its validator raising IndexError for one
    message) answers that message AR 207, stores it, logs `validation.failed` with the
    exception type, and the rest of the batch is validated and applied."""
    from hl7apy.validation import Validator

    real = Validator.validate

    def flaky(element: Any, reference: Any = None, report_file: Any = None) -> Any:
        if element.msh.msh_10.to_er7() == "REF-BOOM":
            raise IndexError("list index out of range")
        return real(element, reference, report_file)

    monkeypatch.setattr(Validator, "validate", staticmethod(flaky))
    p, db = pipeline
    with capture_logs() as logs:
        acks = _run(p, STRICT, _renamed(REF, "BOOM"), REF)
    assert acks == [[["AR", "REF-BOOM", "", "207"]], [["AA", "REF-I12-V251", "", ""]]]
    assert [e for e in logs if e["event"] == "validation.failed"] == [{
        "event": "validation.failed", "log_level": "error", "error": "IndexError",
        "channel": "strict", "control_id": "REF-BOOM"}]
    assert [row[2:5] for row in _stored(sqlite_url)] == [("rejected", "content", "207"),
                                                 ("accepted", "content", "")]
    assert _keys(db) == ["MFP-R-1001^PCPEHR"]


def test_a_lenient_engine_never_imports_hl7apy(tmp_path: Path) -> None:
    """Lenient channels cost nothing extra: a process that only has lenient channels never
    imports hl7apy, and one message on a strict channel does."""
    script = f"""
import sys
from datetime import UTC, datetime
sys.path.insert(0, {str(ROOT / 'tests')!r})
from enginectl import sample_payload
from engine.ack import AckBuilder
from engine.config import parse_config
from engine.pipeline import Job, Pipeline
from engine.store.database import open_database
now = datetime.now(UTC)
channels = parse_config({{"channels": [
    {{"name": "a", "listen": {{"port": 0}}, "accept": ["REF^I12"]}},
    {{"name": "b", "listen": {{"port": 0}}, "accept": ["REF^I12"], "validation": "strict"}}]}}).channels
p = Pipeline(open_database("sqlite:///{tmp_path / 'e.db'}"), {{"a": AckBuilder(), "b": AckBuilder()}})
raw = sample_payload("ref_i12_v251.hl7")
p.process_batch([Job(channels[0], raw, "peer", now)])
before = "hl7apy" in sys.modules
p.process_batch([Job(channels[1], raw.replace(b"REF-I12-V251", b"OTHER"), "peer", now)])
print(before, "hl7apy" in sys.modules)
p.close()
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=False)
    assert (out.stderr, out.stdout) == ("", "False True\n")


# --- the engine over real TCP ----------------------------------------------------------------


@pytest.fixture(name="engine")
def engine_fixture(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[Engine, dict[str, int]]]:
    """The engine with two channels on one database: `referrals` strict, `plain` lenient."""
    path = write_config(tmp_path, sqlite_url, validation="strict")
    config = yaml.safe_load(path.read_text())
    config["channels"].append({**config["channels"][0], "name": "plain"})
    del config["channels"][1]["validation"]
    path.write_text(yaml.safe_dump(config))
    engine = Engine(path).start()
    try:
        yield engine, _ports(engine)
    finally:
        engine.stop()


def _ports(engine: Engine, timeout: float = 10.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        ports = {e["channel"]: int(e["port"]) for e in engine.events()
                 if e.get("event") == "mllp.listening"}
        if len(ports) == 2 or time.monotonic() > deadline:
            return ports
        time.sleep(0.05)


def _exchange(port: int, raw: bytes, count: int = 1) -> list[tuple[str, str, str]]:
    """(MSA-1, ERR-3, ERR-2) of each ACK the engine sends for `raw`."""
    with MLLPClient("127.0.0.1", port) as client:
        client.send(raw)
        acks = [parse(a) for a in client.receive(count)]
    return [(a["MSA.1"], a["ERR.3"], a.raw("ERR.2")) for a in acks]


def _referral_count(url: str) -> int:
    db = create_engine(url)
    with db.connect() as conn:
        count = int(conn.execute(select(func.count()).select_from(referrals)).scalar_one())
    db.dispose()
    return count


def test_the_engine_answers_a_strict_channel_over_tcp(
        engine: tuple[Engine, dict[str, int]], sqlite_url: str) -> None:
    """Over real MLLP: a valid REF^I12 on the strict channel is AA and opens a referral; one
    whose second PRD has no PRD-1 is AE 101 PRD^2^1, stored, logged in `message.stored` with
    its code and location, and opens nothing; in enhanced mode it is CA then AE; the same
    message on the lenient channel is AA."""
    eng, ports = engine
    strict, plain = ports["referrals"], ports["plain"]
    assert _exchange(strict, REF) == [("AA", "", "")]
    assert _referral_count(sqlite_url) == 1
    no_role = _with_field(REF, b"PRD", 1, b"", seq=2)
    assert _exchange(strict, _renamed(no_role, "T1")) == [("AE", "101", "PRD^2^1")]
    enhanced = _with_field(sample_payload("enhanced_al_al_v251.hl7"), b"PRD", 1, b"", seq=2)
    assert _exchange(strict, enhanced, 2) == [("CA", "", ""), ("AE", "101", "PRD^2^1")]
    assert _referral_count(sqlite_url) == 1
    assert _exchange(plain, _renamed(no_role, "T2")) == [("AA", "", "")]
    assert _referral_count(sqlite_url) == 2
    assert stored_messages(sqlite_url, "channel", "control_id", "status", "error_code",
                           "error_location", "ack_codes") == [
        ("referrals", "REF-I12-V251", "accepted", "", "", "AA"),
        ("referrals", "REF-T1", "errored", "101", "PRD^2^1", "AE"),
        ("referrals", "ENH-AL-AL-V251", "errored", "101", "PRD^2^1", "CA AE"),
        ("plain", "REF-T2", "accepted", "", "", "AA"),
    ]
    deadline = time.monotonic() + 10
    while len(stored := eng.wait_for("message.stored")) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [(e["control_id"], e["ack"], e.get("error_code"), e.get("error_location"))
            for e in stored] == [
        ("REF-I12-V251", "AA", None, None), ("REF-T1", "AE", "101", "PRD^2^1"),
        ("ENH-AL-AL-V251", "CA AE", "101", "PRD^2^1"), ("REF-T2", "AA", None, None)]
    assert not any("PATIENT" in json.dumps(e) for e in eng.events())
