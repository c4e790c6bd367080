"""The per-message log line, rendered from a template on the hot path, is byte for byte the line
the log's JSON encoder writes for the same event dict (order, escapes, numbers, null)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import logs
from engine.ack import ACCEPTED, Stage, Verdict
from engine.errors import Disposition, Location
from engine.ingest import _log_result
from engine.pipeline import Result

ENCODE = json.JSONEncoder(default=str, separators=(",", ":")).encode
ERRORED = Verdict(Disposition.ERRORED, Stage.CONTENT, "102", Location("RF1", 1, 7), "bad date")
RESULTS = [
    Result([b"MSH|^~\\&|A|B\rMSA|AA|C1\r"], ACCEPTED, 7, "C1", "REF^I12", "ab" * 32),
    Result([b"MSH|^~\\&|A|B\rMSA|AE|C2\r"], ERRORED, 8, 'C"2\\é', "SIU^S12", "cd" * 32),
    Result([b"MSH|^~\\&\rMSA|CA|X\r", b"MSH|^~\\&\rMSA|AA|X\r"], ACCEPTED, None, "", "", "ef" * 32,
           retransmission=True),
]


@pytest.mark.parametrize("worker", [0, 3])
def test_the_rendered_line_is_the_encoded_event(tmp_path: Path, worker: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "engine.log"
    sink = logs.TeeLogger(logs.open_log(str(path)), None, 20, worker=worker)
    monkeypatch.setattr(logs, "_SINK", sink)
    for i, r in enumerate(RESULTS):
        _log_result("bench", r, "127.0.0.1:5\u00e9", 900 + i, 0.0012345 * (i + 1))
    sink.flush()
    lines = path.read_text().splitlines()
    assert len(lines) == len(RESULTS)
    for line, r, i in zip(lines, RESULTS, range(len(RESULTS)), strict=True):
        ts = json.loads(line)["ts"]
        event: dict[str, object] = {
            "channel": "bench", "peer": "127.0.0.1:5\u00e9", "id": r.message_id,
            "control_id": r.control_id, "type": r.message_type, "size": 900 + i,
            "digest": r.digest[:16], "ack": " ".join(a[a.find(b"MSA") + 4:][:2].decode()
                                                     for a in r.acks),
            "status": r.verdict.disposition.value, "ms": round(0.0012345 * (i + 1) * 1000, 2)}
        if r.verdict.code:
            event |= {"error_code": r.verdict.code,
                      "error_location": str(r.verdict.location or "")}
        event |= {"event": "message.retransmission" if r.retransmission else "message.stored",
                  "level": "info", "ts": ts}
        if worker:
            event["worker"] = worker
        assert line == ENCODE(event)


def test_a_console_showing_info_takes_the_dict_path(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """With a console at info, the event goes through `emit` (rendered for the console too)."""
    import io

    console = io.StringIO()
    path = tmp_path / "engine.log"
    sink = logs.TeeLogger(logs.open_log(str(path)), console, 20)
    monkeypatch.setattr(logs, "_SINK", sink)
    _log_result("bench", RESULTS[0], "peer", 900, 0.001)
    sink.flush()
    assert "message.stored" in console.getvalue()
    assert json.loads(path.read_text())["control_id"] == "C1"
