"""The JSON API's write actions over real HTTP, against the engine running as a subprocess
with a real SQLite database: a coordinator links an ambiguous appointment (the referral is then
scheduled), an operator pauses and resumes a destination and replays a message, each audited
with the API user's name; roles (403), unknown ids (404), refusals (409), bodies (400, 415)
and methods (405)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from enginectl import Engine, ambiguous_booking, seed_users, write_config

from engine.mllp.blocking import MLLPClient
from engine.parsing import parse

pytestmark = pytest.mark.slow

APPOINTMENT = "SCHED-A-7001^SCHED"
CHOSEN, OTHER = "MFP-R-7001^PCPEHR", "MFP-R-7002^PCPEHR"


class Api:
    def __init__(self, engine: Engine, base: str, tokens: dict[str, str]) -> None:
        self.engine, self.base, self.tokens = engine, base, tokens

    def call(self, path: str, user: str, body: Any = None, method: str = "POST",
             raw: bytes | None = None, content_type: str | None = "application/json"
             ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.tokens[user]}")
        if data is not None and content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            assert exc.headers["content-type"] == "application/json"
            return exc.code, json.loads(exc.read())


@pytest.fixture(name="api", scope="module")
def api_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    directory = tmp_path_factory.mktemp("api_actions")
    url = f"sqlite:///{directory / 'engine.db'}"
    tokens = seed_users(url, (("vic", "viewer"), ("carol", "coordinator"), ("ops", "operator")))
    top = {"http": {"listen": {"host": "127.0.0.1", "port": 0}},
           "destinations": [{"name": "archive", "type": "file",
                             "directory": str(directory / "out")}]}
    engine = Engine(write_config(directory, url, top)).start()
    try:
        port = engine.wait_for("http.listening")[0]["port"]
        with MLLPClient("127.0.0.1", engine.port) as client:
            acks = [parse(client.exchange(p)[0])["MSA.1"]
                    for p in ambiguous_booking("7001", "7001", "7002")]
        assert acks == ["AA"] * 3
        yield Api(engine, f"http://127.0.0.1:{port}", tokens)
    finally:
        engine.stop()


def _quoted(ident: str) -> str:
    return urllib.parse.quote(ident, safe="")


def test_a_coordinator_links_an_ambiguous_appointment(api: Api) -> None:
    """A viewer gets 403; unknown appointment or referral 404; the coordinator's link makes
    the referral scheduled, audited with her name; linking again is 409 with the reason."""
    path = f"/api/appointments/{_quoted(APPOINTMENT)}/link"
    status, listed = api.call("/api/appointments", "carol", method="GET")
    assert [(a["id"], a["match"]) for a in listed["items"]] == [(APPOINTMENT, "ambiguous")]
    assert api.call(path, "vic", {"referral": CHOSEN})[0] == 403
    status, body = api.call("/api/appointments/NOPE%5ESCHED/link", "carol", {"referral": CHOSEN})
    assert (status, body["error"]) == (404, "not_found")
    assert api.call(path, "carol", {"referral": "NOPE^PCPEHR"})[0] == 404
    assert api.call(path, "carol", {})[0] == 400
    status, body = api.call(path, "carol", {"referral": CHOSEN})
    assert status == 200, body
    assert body["ok"] is True and body["referral"] == CHOSEN and "linked" in body["effect"]
    status, referral = api.call(f"/api/referrals/{_quoted(CHOSEN)}", "carol", method="GET")
    assert status == 200 and referral["status"] == "scheduled"
    assert api.call(f"/api/referrals/{_quoted(OTHER)}", "carol",
                    method="GET")[1]["status"] == "pending"
    audits = api.engine.wait_for("audit.manual_link")
    assert [(a["user"], a["appointment"], a["referral"]) for a in audits] == [
        ("carol", APPOINTMENT, CHOSEN)]
    status, body = api.call(path, "carol", {"referral": OTHER})
    assert (status, body["error"]) == (409, "conflict") and "already matched" in body["detail"]


def test_an_operator_pauses_and_resumes_a_destination(api: Api) -> None:
    """pause then resume, each seen in /api/queue and audited with the operator's name; a
    coordinator gets 403; an unknown destination 404; retry and release answer what changed."""
    assert api.call("/api/destinations/archive/pause", "carol")[0] == 403
    assert api.call("/api/destinations/archive/pause", "ops") == (
        200, {"ok": True, "destination": "archive", "state": "paused"})
    queue = api.call("/api/queue", "vic", method="GET")[1]["items"]
    assert [(q["destination"], q["state"]) for q in queue] == [("archive", "paused")]
    assert api.call("/api/destinations/archive/resume", "ops")[1]["state"] == "running"
    queue = api.call("/api/queue", "vic", method="GET")[1]["items"]
    assert [(q["destination"], q["state"]) for q in queue] == [("archive", "running")]
    assert [(a["user"], a["destination"]) for a in api.engine.wait_for("audit.queue_pause")] \
        == [("ops", "archive")]
    assert api.engine.wait_for("audit.queue_resume")[0]["user"] == "ops"
    assert api.call("/api/destinations/archive/retry", "ops")[1]["retry"] is True
    assert api.call("/api/destinations/archive/release", "ops", {"id": 12345}) == (
        200, {"ok": True, "destination": "archive", "released": 0})
    assert api.call("/api/destinations/archive/release", "ops", {"id": "x"})[0] == 400
    status, body = api.call("/api/destinations/nowhere/pause", "ops")
    assert (status, body["error"]) == (404, "not_found") and "archive" in body["detail"]


def test_replay(api: Api) -> None:
    """Replay to a destination queues the message again (audited); an unknown message or
    destination is 404; without `to`, a message no route takes is 409."""
    status, body = api.call("/api/messages/1/replay", "ops", {"to": "archive"})
    assert status == 200 and body["queued"][0]["destination"] == "archive"
    assert api.engine.wait_for("audit.queue_replay")[0]["user"] == "ops"
    assert api.call("/api/messages/99999/replay", "ops", {"to": "archive"})[0] == 404
    assert api.call("/api/messages/1/replay", "ops", {"to": "nowhere"})[0] == 404
    status, body = api.call("/api/messages/1/replay", "ops")
    assert (status, body["error"]) == (409, "conflict")
    assert api.call("/api/messages/1/replay", "carol", {"to": "archive"})[0] == 403


def test_bodies_and_methods(api: Api) -> None:
    """A body needs Content-Type: application/json (415) and must be a JSON object (400);
    GET on an action is 405 with Allow: POST; POST on a listing is 405."""
    path = "/api/destinations/archive/pause"
    assert api.call(path, "ops", raw=b'{"x": 1}', content_type="text/plain")[0] == 415
    assert api.call(path, "ops", raw=b"{not json")[0] == 400
    assert api.call(path, "ops", raw=b"[1, 2]")[0] == 400
    status, body = api.call(path, "ops", method="GET")
    assert (status, body["error"]) == (405, "method_not_allowed")
    assert api.call("/api/queue", "ops", method="POST")[0] == 405
    assert api.call("/api/destinations/archive/unknown", "ops")[0] == 404
    assert api.call(path, "ops", raw=b"")[1]["state"] == "paused"
    assert api.call("/api/destinations/archive/resume", "ops")[1]["state"] == "running"
