"""A dead letter is logged once, at error level, by the running engine: one `queue.dead_letter`
naming the destination, the queue id, the attempts and the last error, and no payload."""

from __future__ import annotations

import time
from pathlib import Path

from enginectl import Engine, sample_payload, send_samples, write_config


def test_a_dead_letter_is_logged_once(tmp_path: Path, sqlite_url: str) -> None:
    """A file destination that cannot be written (its folder would be inside a file) turns the
    routed REF into a dead letter after its one attempt: the log has exactly one error event for
    it, with destination, outbound id, attempts and error, and no message bytes."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    config = write_config(tmp_path, sqlite_url, top={
        "destinations": [{"name": "archive", "type": "file", "directory": str(blocker / "out"),
                          "retry": {"max_attempts": 1}}],
        "routes": [{"name": "all", "from": "referrals", "to": ["archive"]}]})
    engine = Engine(config).start()
    try:
        send_samples(engine.port, ("ref_i12_v251.hl7",))
        assert engine.wait_for("queue.dead_letter", timeout=15)
        time.sleep(1.5)  # two more delivery ticks and log flushes: a second line would show
    finally:
        assert engine.stop() == 0
    dead = [e for e in engine.events() if e["event"] == "queue.dead_letter"]
    assert len(dead) == 1
    assert dead[0]["level"] == "error"
    assert (dead[0]["destination"], dead[0]["outbound_id"], dead[0]["attempts"]) == (
        "archive", 1, 1)
    assert dead[0]["error"]
    text = engine.log_file.read_text()
    pid = next(s for s in sample_payload("ref_i12_v251.hl7").split(b"\r") if s.startswith(b"PID"))
    assert pid.split(b"|")[5].split(b"^")[0].decode() not in text
