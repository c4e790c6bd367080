"""What the operator's listings print, for a referral coordinator to read: `referral ID` as
labelled lines and a history table, `worklist` rows that say why each is there and what clears
it, days overdue, `--limit` with its "… N more" line, and one UTC time format (`…Z`) in text
and JSON.

The ledger is built through the real pipeline into a SQLite file (clock fixed in January 2026);
every command runs as `python -m engine` against that file, whose "now" is the real one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from enginectl import cli_stdout, sample_payload, write_config

from engine.ack import AckBuilder
from engine.config import parse_config
from engine.parsing import parse
from engine.pipeline import Job, Pipeline
from engine.store.database import open_database

CHANNEL = parse_config({"channels": [{
    "name": "referrals", "listen": {"port": 0},
    "accept": ["REF^I12-I15", "RRI^I12-I15", "SIU^S12-S26"]}]}).channels[0]
T0 = datetime(2026, 1, 12, 9, 30)  # naive UTC, as the ledger stores it
ZULU = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
ANY_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)?")


def _ref(key: str, patient: str = "100001") -> bytes:
    """ref_i12_v251 as referral `key` (NEURO, window 2026-01-12 to 2026-07-12, due in 14 days)
    for patient `patient` at NORTHCLINIC (and `2…` at SOUTHHOSP)."""
    raw = sample_payload("ref_i12_v251.hl7").replace(b"MFP-R-1001", key.encode())
    raw = raw.replace(b"REF-I12-V251", f"C-{key}".encode()).replace(b"|20360712|", b"|20260712|")
    return raw.replace(b"100001^", f"{patient}^".encode()).replace(
        b"200001^", f"2{patient[1:]}^".encode())


def _siu(appointment: str, sch26: str, start: str = "20260302", patient: str = "100001",
         sample: str = "siu_s12_v251.hl7") -> bytes:
    """An SIU for appointment SCHED-A-`appointment`, its SCH-26 `sch26` (empty: none), starting
    on `start` at 09:00, for patient `patient`."""
    raw = sample_payload(sample)
    for old in (b"SCHED-A-5001", b"SCHED-A-5002"):
        raw = raw.replace(old, f"SCHED-A-{appointment}".encode())
    raw = raw.replace(b"|MFP-R-1001^PCPEHR", f"|{sch26}".encode())
    raw = raw.replace(b"20260302", start.encode()).replace(b"20260316", start.encode())
    raw = raw.replace(b"SIU-S12-V251", f"S-{appointment}".encode())
    raw = raw.replace(b"SIU-S26-V251", f"N-{appointment}".encode())
    return raw.replace(b"100001^", f"{patient}^".encode()).replace(
        b"200001^", f"2{patient[1:]}^".encode())


STORY = [
    _ref("MFP-R-1001"),
    _ref("MFP-R-1002"),  # the same patient and specialty: two candidates from now on
    _siu("5001", ""),  # 2 March: inside both windows: ambiguous
    _siu("5002", "MFP-R-9999^PCPEHR"),  # names a referral that never came: an orphan
    _siu("5003", "", start="20260801", patient="100005"),  # nobody's referral
    _ref("MFP-R-1004", patient="100004"),
    _siu("5004", "", start="20260801", patient="100004"),  # 20 days after its window
    _ref("MFP-R-1006", patient="100006"),
    _siu("5006", "MFP-R-1006^PCPEHR", patient="100006"),
    _siu("5006", "MFP-R-1006^PCPEHR", patient="100006", start="20260316",
         sample="siu_s26_v251.hl7"),  # no-show on 16 March
]


@pytest.fixture(name="ledger", scope="module")
def ledger_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The config of a SQLite ledger holding STORY, one message a minute from T0."""
    folder = tmp_path_factory.mktemp("ledger")
    url = f"sqlite:///{folder / 'engine.db'}"
    db = open_database(url)
    pipeline = Pipeline(db, {"referrals": AckBuilder()}, clock=lambda: T0)
    for n, payload in enumerate(STORY):
        when = T0 + timedelta(minutes=n)
        result = pipeline.process_batch([Job(CHANNEL, payload, "x", when)])[0]
        assert parse(result.acks[0])["MSA.1"] == "AA", n
    pipeline.close()
    db.dispose()
    yield write_config(folder, url)


def _days_since(when: datetime) -> set[int]:
    """Whole days from `when` to now (both ends of the run, should midnight pass meanwhile)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return {(now - when).days, (now + timedelta(minutes=2) - when).days}


def test_referral_prints_labelled_lines_and_a_history_table(ledger: Path) -> None:
    """`referral ID` prints one labelled line per fact (ids as `ID^AUTHORITY` joined by ", ",
    empty ones as `-`, days overdue) and a history table with `before → after`, the message and
    a note: no Python list, dict or None, no section numbers, every time as `…Z`."""
    out = cli_stdout(ledger, "referral", "MFP-R-1001^PCPEHR")
    labelled = {re.split(r"\s{2,}", line)[0]: re.split(r"\s{2,}", line)[1]
                for line in out.split("\n\nhistory")[0].splitlines()}
    assert labelled["keys"] == "MFP-R-1001^PCPEHR"
    assert labelled["status"] == "pending"
    assert labelled["priority"] == "R"
    assert labelled["specialty"] == "NEURO"
    assert labelled["source"] == "REF"
    assert labelled["patient ids"] == "100001^NORTHCLINIC, 200001^SOUTHHOSP"
    assert labelled["providers"].startswith("RP ")
    assert labelled["window"] == "2026-01-12T00:00:00Z to 2026-07-12T00:00:00Z"
    assert labelled["due"] == "2026-01-26T09:30:00Z"
    assert int(labelled["days overdue"]) in _days_since(datetime(2026, 1, 26, 9, 30))
    assert labelled["appointments"] == "-"
    history = out.split("\n\nhistory\n")[1].splitlines()
    assert re.split(r"\s{2,}", history[0]) == ["time", "event", "before → after",
                                               "appointment", "message", "note"]
    assert re.split(r"\s{2,}", history[1]) == [
        "2026-01-12T09:30:00Z", "REF^I12 open", "- → pending", "-", "#1 C-MFP-R-1001",
        "new referral"]
    for bad in ("[", "]", "{", "None", "\u00a7", "'"):
        assert bad not in out, bad
    assert {m.group(0) for m in ANY_TIME.finditer(out)} == set(ZULU.findall(out))


def test_referral_json_times_are_utc_with_z(ledger: Path) -> None:
    """`referral ID --json` is one object; every time in it, history included, ends in Z, and
    `days_overdue` is a whole number."""
    found = json.loads(cli_stdout(ledger, "referral", "MFP-R-1001^PCPEHR", "--json"))
    assert isinstance(found, dict)
    times = [found["received_at"], found["updated_at"], found["due_at"],
             found["window_start"], found["window_end"], *(h["at"] for h in found["history"])]
    assert all(ZULU.fullmatch(t) for t in times), times
    assert found["days_overdue"] in _days_since(datetime(2026, 1, 26, 9, 30))


def test_worklist_says_why_each_row_is_there_and_what_clears_it(ledger: Path) -> None:
    """Each worklist row names its appointment, patient ids, the reason in plain words and the
    action that clears it: ambiguous between the two referrals, an orphan waiting for the
    referral its SCH-26 names, no open referral, outside the window by 20 days, and the no-show
    that waits to be booked again."""
    rows = json.loads(cli_stdout(ledger, "worklist", "--json"))
    got = [(r["id"], r["kind"], r["reason"], r["action"]) for r in rows]
    assert got[:4] == [
        ("SCHED-A-5001^SCHED", "ambiguous",
         "ambiguous between MFP-R-1001^PCPEHR and MFP-R-1002^PCPEHR",
         "hl7-engine link SCHED-A-5001^SCHED <MFP-R-1001^PCPEHR or MFP-R-1002^PCPEHR>"),
        ("SCHED-A-5002^SCHED", "orphan",
         "orphan waiting for referral MFP-R-9999^PCPEHR (its SCH-26 names it)",
         "waits for the referral to arrive (it is linked then), or "
         "hl7-engine link SCHED-A-5002^SCHED REFERRAL"),
        ("SCHED-A-5003^SCHED", "no_referral", "no open referral for this patient and specialty",
         "hl7-engine link SCHED-A-5003^SCHED REFERRAL once the referral is known"),
        ("SCHED-A-5004^SCHED", "outside_window",
         "outside the window of referral MFP-R-1004^PCPEHR by 20 days",
         "hl7-engine link SCHED-A-5004^SCHED MFP-R-1004^PCPEHR if it is for that referral"),
    ]
    assert rows[3]["days_outside_window"] == 20
    (no_show,) = rows[4:]
    assert (no_show["kind"], no_show["id"], no_show["referral"], no_show["start"]) == (
        "no_show", "SCHED-A-5006^SCHED", "MFP-R-1006^PCPEHR", "2026-03-16T09:30:00Z")
    assert no_show["days_since"] in _days_since(datetime(2026, 3, 16, 9, 30))
    assert no_show["reason"] == (f"no-show for referral MFP-R-1006^PCPEHR, "
                                 f"{no_show['days_since']} days ago: needs rebooking")
    text = cli_stdout(ledger, "worklist").splitlines()
    assert re.split(r"\s{2,}", text[0]) == ["appointment", "start", "patient ids", "reason",
                                            "action"]
    assert re.split(r"\s{2,}", text[4]) == [
        "SCHED-A-5004^SCHED", "2026-08-01T09:00:00Z", "200004^SOUTHHOSP, 100004^NORTHCLINIC",
        "outside the window of referral MFP-R-1004^PCPEHR by 20 days",
        "hl7-engine link SCHED-A-5004^SCHED MFP-R-1004^PCPEHR if it is for that referral"]
    assert "[" not in "\n".join(text) and "None" not in "\n".join(text)


def test_overdue_referrals_show_whole_days(ledger: Path) -> None:
    """`referrals --overdue` has a days_overdue column: whole days from due_at to now."""
    text = cli_stdout(ledger, "referrals", "--overdue").splitlines()
    header = re.split(r"\s{2,}", text[0])
    assert header[-1] == "days_overdue"
    first = re.split(r"\s{2,}", text[1])
    assert first[0] == "MFP-R-1001^PCPEHR"
    assert int(first[-1]) in _days_since(datetime(2026, 1, 26, 9, 30))
    assert first[header.index("patient_ids")] == "100001^NORTHCLINIC, 200001^SOUTHHOSP"


@pytest.mark.parametrize(("command", "total"), [
    (("referrals",), 4), (("appointments",), 5), (("worklist",), 5), (("tail",), 10)])
def test_limit_cuts_listings_and_says_how_many_more(ledger: Path, command: tuple[str, ...],
                                                    total: int) -> None:
    """`--limit N` prints N rows, then `… M more; use --limit` (text only); `--json` is cut to
    N too (an array, or N JSON lines for tail), with no such line."""
    text = cli_stdout(ledger, *command, "--limit", "2").splitlines()
    assert text[-1] == f"… {total - 2} more; use --limit"
    header = 0 if command == ("tail",) else 1
    assert len(text) == header + 2 + 1
    raw = cli_stdout(ledger, *command, "--limit", "2", "--json")
    rows = ([json.loads(line) for line in raw.splitlines()] if command == ("tail",)
            else json.loads(raw))
    assert len(rows) == 2
    assert "more" not in cli_stdout(ledger, *command, "--limit", str(total))


def test_tail_and_show_print_times_in_utc_with_z(ledger: Path) -> None:
    """`tail` (text and JSON lines) and `show` (text and JSON) print every time as `…Z`, whole
    seconds; `show` prints empty values as `-` and its history notes without section
    numbers."""
    line = cli_stdout(ledger, "tail", "--limit", "1").splitlines()[0]
    assert line.startswith("2026-01-12T09:39:00Z  #10 ")
    record = json.loads(cli_stdout(ledger, "tail", "--limit", "1", "--json"))
    assert record["received_at"] == "2026-01-12T09:39:00Z"
    shown = json.loads(cli_stdout(ledger, "show", "1", "--json"))
    assert isinstance(shown, dict) and shown["received_at"] == "2026-01-12T09:30:00Z"
    assert [c["rule"] for c in shown["ledger_changes"]] == ["new referral"]
    text = cli_stdout(ledger, "show", "1")
    assert "\u00a7" not in text and "None" not in text
    assert re.search(r"^received_at\s+2026-01-12T09:30:00Z$", text, re.M)
    assert re.search(r"^error_code\s+-$", text, re.M)


def test_no_history_note_cites_a_section_number(ledger: Path) -> None:
    """History notes shown by `referral` and `show` never carry a section-number citation, whatever the
    ledger stored."""
    for key in ("MFP-R-1001^PCPEHR", "MFP-R-1006^PCPEHR"):
        found = json.loads(cli_stdout(ledger, "referral", key, "--json"))
        notes = [h["rule"] for h in found["history"]]
        assert notes and not [n for n in notes if "\u00a7" in n], notes
    assert "\u00a7" not in cli_stdout(ledger, "referral", "MFP-R-1006^PCPEHR")
