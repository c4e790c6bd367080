"""`replay MESSAGE_ID` without `--to`: the stored message goes through its channel's routes as
they are configured now (filters, transforms, order keys), on a real SQLite file, through the
real CLI; the ledger is not touched."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from enginectl import ROOT, sample_payload, table_rows, write_config
from sqlalchemy import func, select

from engine.ack import AckBuilder
from engine.config import load_config
from engine.pipeline import Job, Pipeline
from engine.store.database import open_database
from engine.store.schema import messages, referral_events

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
#: The outbound columns these tests compare.
ROUTED = ("destination", "route", "message_id", "payload")
ROUTE = {"name": "refs", "from": "referrals", "when": {"type": ["REF^I12"]},
         "transform": [{"set": {"MSH.5": "ARCHIVE"}}], "to": ["archive"]}


def _store(config: Path, names: list[str]) -> list[int]:
    """The samples through the pipeline with the config's routes: their message ids."""
    loaded = load_config(config)
    db = open_database(loaded.database.url)
    pipeline = Pipeline(db, {"referrals": AckBuilder("REFTRACK", "HUB")}, loaded,
                        clock=lambda: NOW)
    results = pipeline.process_batch([Job(loaded.channels[0], sample_payload(n), "x", NOW)
                                      for n in names])
    pipeline.close()
    db.dispose()
    return [int(r.message_id or 0) for r in results]


def _replay(config: Path, message_id: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", "replay", str(message_id),
                           "--config", str(config)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def _config(tmp_path: Path, url: str, routes: list[dict[str, Any]]) -> Path:
    return write_config(tmp_path, url, top={
        "destinations": [{"name": "archive", "type": "file", "directory": str(tmp_path / "a")},
                         {"name": "spec", "type": "file", "directory": str(tmp_path / "s")}],
        "routes": routes})


def test_replay_goes_through_the_routes_as_configured_now(tmp_path: Path,
                                                          sqlite_url: str) -> None:
    """A REF routed to the archive when it came is replayed after a second route was added:
    it is queued again for both, each with its route's transform; the ledger has no new
    history row and the message is not stored again."""
    config = _config(tmp_path, sqlite_url, [ROUTE])
    (ref,) = _store(config, ["ref_i12_v251.hl7"])
    assert table_rows(sqlite_url, *ROUTED[:3]) == [("archive", "refs", ref)]
    spec = {"name": "to-spec", "from": "referrals", "when": {"sender": "PCPEHR"},
            "transform": [{"set": {"MSH.5": "SPEC"}}], "to": ["spec"]}
    doc = yaml.safe_load(config.read_text())
    doc["routes"].append(spec)
    config.write_text(yaml.safe_dump(doc))
    db = open_database(sqlite_url)
    with db.connect() as conn:
        history_before = conn.execute(select(func.count()).select_from(referral_events)).scalar()
    db.dispose()

    done = _replay(config, ref)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"message {ref} queued for archive as #2 (route refs)",
        f"message {ref} queued for spec as #3 (route to-spec)"]
    rows = table_rows(sqlite_url, *ROUTED)
    assert [r[:3] for r in rows] == [("archive", "refs", ref), ("archive", "refs", ref),
                                     ("spec", "to-spec", ref)]
    raw = sample_payload("ref_i12_v251.hl7")
    assert rows[1][3] == raw.replace(b"|REFTRACK|HUB|", b"|ARCHIVE|HUB|", 1)
    assert rows[2][3] == raw.replace(b"|REFTRACK|HUB|", b"|SPEC|HUB|", 1)
    db = open_database(sqlite_url)
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(referral_events)).scalar() \
            == history_before
        assert conn.execute(select(func.count()).select_from(messages)).scalar() == 1
    db.dispose()
    audits = [json.loads(line) for line in (tmp_path / "engine.log").read_text().splitlines()]
    assert [(a["event"], a["message_id"], a["destinations"]) for a in audits
            if a["event"] == "audit.queue_replay"] == [("audit.queue_replay", ref,
                                                         ["archive", "spec"])]


def test_replay_without_a_route_for_it_says_why(tmp_path: Path, sqlite_url: str) -> None:
    """No route takes it now, it was not accepted, no such message: exit 1, one line each,
    nothing queued."""
    config = _config(tmp_path, sqlite_url, [ROUTE])
    siu, rejected = _store(config, ["siu_s12_v251.hl7", "reject_version.hl7"])
    results = [_replay(config, m) for m in (siu, rejected, 999)]
    assert [(r.returncode, r.stdout, r.stderr.strip()) for r in results] == [
        (1, "", f"no route from channel referrals takes message {siu} now"),
        (1, "", f"message {rejected} was not accepted (status rejected): routes take accepted "
                "messages only; --to DEST sends it as received"),
        (1, "", "no message with id 999")]
    assert table_rows(sqlite_url, *ROUTED) == []
