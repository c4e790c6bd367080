"""The web face over real HTTP, against the engine running as a subprocess (`hl7-engine run`)
with a real SQLite database: `/healthz`, `/readyz` (and its 503), `/metrics` after a known set
of frames, 404 below them."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from enginectl import Engine, delivered_files, metric_samples, numbered_referral, write_config

from engine.mllp.blocking import MLLPClient
from engine.parsing import parse

pytestmark = pytest.mark.slow


class Web:
    """The engine and its web face's base URL."""

    def __init__(self, engine: Engine, base: str, database: Path, outbox: Path) -> None:
        self.engine, self.base, self.database, self.outbox = engine, base, database, outbox

    def get(self, path: str) -> tuple[int, str, str]:
        """(status, content type, body) of a GET."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as r:
                return r.status, r.headers["content-type"], r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["content-type"], exc.read().decode()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics: (name, sorted labels) → value."""
        status, _, body = self.get("/metrics")
        assert status == 200
        return metric_samples(body)


@pytest.fixture(name="web")
def web_fixture(tmp_path: Path) -> Iterator[Web]:
    database = tmp_path / "engine.db"
    outbox = tmp_path / "out"
    top: dict[str, Any] = {
        "http": {"listen": {"host": "127.0.0.1", "port": 0}},
        "destinations": [{"name": "files", "type": "file", "directory": str(outbox)}],
        "routes": [{"name": "all", "from": "referrals", "to": ["files"]}],
        "workers": 1,
    }
    eng = Engine(write_config(tmp_path, f"sqlite:///{database}", top)).start()
    try:
        port = eng.wait_for("http.listening")[0]["port"]
        yield Web(eng, f"http://127.0.0.1:{port}", database, outbox)
    finally:
        eng.stop()


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_healthz_is_ok(web: Web) -> None:
    """/healthz answers 200 `ok` while the process runs."""
    assert web.get("/healthz") == (200, "text/plain; charset=utf-8", "ok\n")


def test_readyz_names_each_check(web: Web) -> None:
    """/readyz answers 200 with the database writable, the listener bound and the writer alive
    with a fresh heartbeat, each named in its JSON body."""
    status, kind, body = web.get("/readyz")
    checks = json.loads(body)
    assert (status, kind) == (200, "application/json")
    age = checks["writer"].pop("heartbeat_age_s")
    assert 0 <= age < 10
    assert checks == {"status": "ready", "database": "ok", "listeners": {"referrals": "bound"},
                      "writer": {"alive": True}}


def test_readyz_is_503_while_the_database_is_locked(web: Web) -> None:
    """Another connection holding `BEGIN EXCLUSIVE` makes the database unwritable: /readyz is
    503 with `database: locked`; once it lets go, 200 again."""
    other = sqlite3.connect(web.database, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        status, _, body = web.get("/readyz")
        assert (status, json.loads(body)["database"]) == (503, "locked")
        assert json.loads(body)["status"] == "not ready"
        assert web.get("/healthz")[0] == 200  # alive all the same
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert web.get("/readyz")[0] == 200


def test_unknown_paths_are_404(web: Web) -> None:
    """Below the three endpoints, paths are 404 (any other path is the console's, which sends a
    stranger to its login form: tests/test_console.py)."""
    assert [web.get(p)[0] for p in ("/metrics/x", "/healthz/x", "/readyz/x")] == [404] * 3


def test_metrics_count_what_was_sent(web: Web) -> None:
    """Three new referrals (AA), one garbage frame (AR) and one retransmission (AA): the message
    counter holds exactly those by type and ACK code, every frame has an ACK latency and went
    through a commit, the open connection is counted, and the ledger gauges count three pending
    referrals and nothing overdue."""
    sent = [numbered_referral("web", n)[1] for n in range(3)]
    with MLLPClient("127.0.0.1", web.engine.port) as client:
        codes = [parse(client.exchange(m)[0])["MSA.1"] for m in sent]
        codes.append(parse(client.exchange(b"GET / HTTP/1.0\r\n\r\n")[0])["MSA.1"])
        codes.append(parse(client.exchange(sent[0])[0])["MSA.1"])
        assert codes == ["AA", "AA", "AA", "AR", "AA"]
        samples = web.metrics()
        assert _value(samples, "hl7_engine_connections", channel="referrals") == 1
    messages = {labels: v for (name, labels), v in samples.items()
                if name == "hl7_engine_messages_total"}
    assert messages == {
        (("ack", "AA"), ("channel", "referrals"), ("type", "REF^I12")): 4,
        (("ack", "AR"), ("channel", "referrals"), ("type", "unknown")): 1}
    assert _value(samples, "hl7_engine_ack_latency_seconds_count", channel="referrals") == 5
    assert _value(samples, "hl7_engine_commit_batch_size_sum") == 5
    referrals = {dict(labels)["status"]: v for (name, labels), v in samples.items()
                 if name == "hl7_engine_referrals"}
    assert referrals == {"pending": 3, "accepted": 0, "rejected": 0, "scheduled": 0,
                         "rescheduled": 0, "completed": 0, "no_show": 0, "cancelled": 0,
                         "expired": 0, "closed": 0}
    overdue = {dict(labels)["priority"]: v for (name, labels), v in samples.items()
               if name == "hl7_engine_referrals_overdue"}
    assert overdue == {"S": 0, "A": 0, "R": 0}


def test_metrics_follow_the_delivery_queue(web: Web) -> None:
    """Two referrals routed to a file destination: once both files are written, the attempts
    counter says 2 delivered, and the queue gauges (read from the database, cached a few
    seconds) reach depth 0, no dead letters, oldest age 0."""
    with MLLPClient("127.0.0.1", web.engine.port) as client:
        for n in range(2):
            assert parse(client.exchange(numbered_referral("q", n)[1])[0])["MSA.1"] == "AA"
    assert len(delivered_files(web.outbox, 2)) == 2
    wanted = {"delivered": 2.0, "depth": 0.0, "oldest": 0.0, "dead": 0.0}
    deadline = time.monotonic() + 20
    while True:
        samples = web.metrics()
        got = {"delivered": _value(samples, "hl7_engine_deliveries_total", destination="files",
                                   outcome="delivered"),
               "depth": _value(samples, "hl7_engine_queue_depth", destination="files"),
               "oldest": _value(samples, "hl7_engine_queue_oldest_seconds", destination="files"),
               "dead": _value(samples, "hl7_engine_dead_letters", destination="files")}
        if got == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert got == wanted
