"""The JSON API over real HTTP, against the engine running as a subprocess with a real SQLite
database (one listing also on PostgreSQL): bearer tokens (401 without one, with a bad or a
revoked one), roles (403 for a viewer on patient data), the referral objects of `referrals
--json` paged by cursor, filters, 404s, the message log and the audited raw body."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from enginectl import (
    Engine,
    numbered_referral,
    run_cli,
    sample_payload,
    seed_users,
    write_config,
)

from engine.mllp.blocking import MLLPClient
from engine.parsing import parse

pytestmark = pytest.mark.slow

REFERRALS = 7  # REF^I12, plus one ORM^O01: 8 referrals, 3 pages of 3


class Api:
    """A running engine with users and their tokens; `get` calls the API as one of them."""

    def __init__(self, engine: Engine, base: str, tokens: dict[str, str]) -> None:
        self.engine, self.base, self.tokens = engine, base, tokens

    def get(self, path: str, user: str | None = None, token: str | None = None,
            method: str = "GET") -> tuple[int, Any]:
        """(status, parsed JSON body) of a request as `user` (or with `token`)."""
        request = urllib.request.Request(self.base + path, method=method)
        token = token or (self.tokens[user] if user else None)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                assert r.headers["content-type"] == "application/json"
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            assert exc.headers["content-type"] == "application/json"
            return exc.code, json.loads(exc.read())

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """`hl7-engine` (the `referrals` family) or the user commands, on this engine's config."""
        return run_cli(*args, config=self.engine.config, stdin=stdin)


def _start(directory: Path, url: str) -> Api:
    tokens = seed_users(url, (("vic", "viewer"), ("carol", "coordinator"), ("ops", "operator"),
                              ("temp", "coordinator")))
    top = {"http": {"listen": {"host": "127.0.0.1", "port": 0}}}
    engine = Engine(write_config(directory, url, top)).start()
    port = engine.wait_for("http.listening")[0]["port"]
    payloads = [numbered_referral("api", n)[1] for n in range(REFERRALS)]
    payloads.append(sample_payload("orm_o01_v24.hl7"))
    with MLLPClient("127.0.0.1", engine.port) as client:
        assert [parse(client.exchange(p)[0])["MSA.1"] for p in payloads] == ["AA"] * 8
    return Api(engine, f"http://127.0.0.1:{port}", tokens)


@pytest.fixture(name="api", scope="module")
def api_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    directory = tmp_path_factory.mktemp("api")
    api = _start(directory, f"sqlite:///{directory / 'engine.db'}")
    try:
        yield api
    finally:
        api.engine.stop()


def _all_pages(api: Api, query: str, user: str = "carol") -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor = ""
    while True:
        status, body = api.get(f"/api/referrals?{query}{cursor}", user)
        assert status == 200, body
        pages.append(body["items"])
        if body["next_cursor"] is None:
            return pages
        cursor = f"&cursor={body['next_cursor']}"


def test_no_token_or_a_bad_one_is_401(api: Api) -> None:
    """Without a token, with an unknown one or a malformed header: 401 with a JSON error and
    `WWW-Authenticate`; even an unknown path says 401 first.  /healthz stays open."""
    for path in ("/api/referrals", "/api/report", "/api/nope"):
        status, body = api.get(path)
        assert (status, body["error"]) == (401, "unauthorized"), path
        assert api.get(path, token="not-a-token")[1]["error"] == "unauthorized"
    request = urllib.request.Request(api.base + "/api/queue",
                                     headers={"Authorization": "Basic dXNlcjpwdw=="})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 401
    assert caught.value.headers["www-authenticate"].startswith("Bearer")
    with urllib.request.urlopen(api.base + "/healthz", timeout=10) as r:
        assert r.status == 200


def test_roles(api: Api) -> None:
    """A viewer gets counts (report, queue) but 403 on referrals, appointments, the worklist
    and messages; a coordinator gets 403 on messages; an operator gets them all."""
    assert api.get("/api/report", "vic")[0] == 200
    assert api.get("/api/queue", "vic")[0] == 200
    for path in ("/api/referrals", "/api/referrals/X", "/api/appointments", "/api/worklist",
                 "/api/messages", "/api/messages/1", "/api/messages/1/raw"):
        status, body = api.get(path, "vic")
        assert (status, body["error"]) == (403, "forbidden"), path
    assert api.get("/api/messages", "carol")[0] == 403
    assert all(api.get(p, "ops")[0] == 200 for p in ("/api/referrals", "/api/messages",
                                                     "/api/appointments", "/api/worklist"))


def test_referrals_are_the_cli_objects_paged_by_cursor(api: Api) -> None:
    """Three pages of 3, 3 and 2 referrals whose objects are exactly `referrals --json`'s, in
    the same order; the last page has no next cursor."""
    pages = _all_pages(api, "limit=3")
    assert [len(p) for p in pages] == [3, 3, 2]
    cli = api.cli("referrals", "--json", "--limit", "500")
    assert cli.returncode == 0, cli.stderr
    assert [r for page in pages for r in page] == json.loads(cli.stdout)


def test_referral_filters(api: Api) -> None:
    """status, source, specialty, since/until (received_at) and overdue select as the ledger
    says; a bad value is 400."""
    everything = [r for page in _all_pages(api, "limit=500") for r in page]
    assert len(everything) == REFERRALS + 1
    orm = [r["id"] for r in everything if r["source"] == "ORM"]
    assert len(orm) == 1
    assert [r["id"] for r in _all_pages(api, "source=ORM")[0]] == orm
    pending = [r["id"] for r in everything if r["status"] == "pending"]
    assert [r["id"] for r in _all_pages(api, "status=pending")[0]] == pending
    specialty = everything[0]["specialty"]
    assert [r["id"] for r in _all_pages(api, f"specialty={urllib.parse.quote(specialty)}")[0]] \
        == [r["id"] for r in everything if r["specialty"] == specialty]
    assert _all_pages(api, "since=2999-01-01") == [[]]
    assert len(_all_pages(api, "until=2999-01-01T00:00:00Z")[0]) == REFERRALS + 1
    assert _all_pages(api, "overdue=1") == [[]]  # deadlines are days away
    for query in ("status=lost", "limit=0", "limit=501", "since=yesterday", "cursor=%%%"):
        status, body = api.get(f"/api/referrals?{query}", "carol")
        assert (status, body["error"]) == (400, "bad_request"), query


def test_one_referral_and_404(api: Api) -> None:
    """/api/referrals/{EI text, URL-encoded} is `referral ID --json` with its history; an
    unknown id is 404."""
    ident = "MFP-R-api000001^PCPEHR"
    status, body = api.get(f"/api/referrals/{urllib.parse.quote(ident, safe='')}", "carol")
    assert status == 200
    cli = json.loads(api.cli("referral", ident, "--json").stdout)
    assert body["history"] == cli["history"] and body["id"] == cli["id"] == ident
    status, body = api.get("/api/referrals/NOPE%5EPCPEHR", "carol")
    assert (status, body["error"]) == (404, "not_found")
    assert api.get("/api/nothing-here", "carol")[0] == 404
    assert api.get("/api/referrals", "carol", method="POST")[0] == 405


def test_appointments_worklist_report_queue(api: Api) -> None:
    """The other listings answer with the CLI's objects: appointments and the worklist (none
    here), the report's counts, the queue's rows."""
    assert api.get("/api/appointments", "carol") == (200, {"items": [], "total": 0})
    assert api.get("/api/worklist", "carol") == (200, {"items": [], "total": 0})
    status, report = api.get("/api/report?by=source", "vic")
    assert status == 200 and report["totals"]["received"] == REFERRALS + 1
    assert api.get("/api/report?since=bad", "vic")[0] == 400
    assert api.get("/api/queue", "vic") == (200, {"items": []})


def test_messages_paged_and_one_with_its_body_audited(api: Api) -> None:
    """The message log, newest first, pages by cursor and filters by type and control id; one
    message has its metadata and ledger changes but no body; /raw returns the body and writes
    `audit.message_body_read` with the API user's name; unknown ids are 404."""
    status, first = api.get("/api/messages?limit=5", "ops")
    assert status == 200 and len(first["items"]) == 5
    status, rest = api.get(f"/api/messages?limit=5&cursor={first['next_cursor']}", "ops")
    ids = [m["id"] for m in first["items"] + rest["items"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 8 and rest["next_cursor"] is None
    assert [m["type"] for m in api.get("/api/messages?type=ORM%5EO01", "ops")[1]["items"]] \
        == ["ORM^O01"]
    found = api.get("/api/messages?control_id=api-000002", "ops")[1]["items"]
    assert [m["control_id"] for m in found] == ["api-000002"]
    status, one = api.get(f"/api/messages/{found[0]['id']}", "ops")
    assert status == 200 and "raw" not in one and one["ledger_changes"]
    status, raw = api.get(f"/api/messages/{found[0]['id']}/raw", "ops")
    assert status == 200 and raw["raw"].startswith("MSH|^~\\&|") and "api-000002" in raw["raw"]
    audits = api.engine.wait_for("audit.message_body_read")
    assert [(a["user"], a["message_id"]) for a in audits] == [("ops", found[0]["id"])]
    reads = api.engine.wait_for("audit.api_read")
    assert {a["user"] for a in reads} >= {"carol"}
    for path in ("/api/messages/999999", "/api/messages/abc/raw", "/api/messages/999999/raw"):
        assert api.get(path, "ops")[0] == 404, path


def test_a_revoked_token_is_401(api: Api) -> None:
    """`token revoke` takes effect at once: the next request with that token is 401."""
    assert api.get("/api/referrals?limit=1", "temp")[0] == 200
    out = api.cli("token", "revoke", api.tokens["temp"][:8])
    assert out.returncode == 0, out.stderr
    assert api.get("/api/referrals?limit=1", "temp")[0] == 401


def test_referrals_listing_on_postgres(tmp_path: Path, pg_url: str) -> None:
    """On PostgreSQL too: the paged listing is `referrals --json`."""
    api = _start(tmp_path, pg_url)
    try:
        pages = _all_pages(api, "limit=3")
        cli = api.cli("referrals", "--json")
        assert [r for page in pages for r in page] == json.loads(cli.stdout)
        assert [len(p) for p in pages] == [3, 3, 2]
    finally:
        api.engine.stop()
