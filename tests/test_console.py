"""The web console over real HTTP, against the engine running as a subprocess with a real
SQLite database: strangers sent to the login form, login and its cookie's flags (Secure under
TLS), failed logins, CSRF on every POST, logout, idle and absolute expiry, the login rate limit,
roles on pages, security headers, audit events, and the JSON API through the session cookie."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from certs import make_pki
from console import (
    Console,
    Visitor,
    console_fixture,  # noqa: F401 - the module's engine
    start_console,
)
from sqlalchemy import create_engine, update

from engine.store.sessions import web_sessions
from engine.store.users import add_user, remove_user, set_password
from engine.web.throttle import Throttle

pytestmark = pytest.mark.slow


def _logged_in(console: Console, name: str) -> Visitor:
    visitor = console.visitor()
    assert visitor.login(name).status == 303
    return visitor


def _state(console: Console, destination: str) -> str:
    visitor = console.visitor()
    reply = visitor.request("GET", "/api/queue",
                            headers={"Authorization": f"Bearer {console.tokens['vic']}"})
    rows = {q["destination"]: q["state"] for q in json.loads(reply.body)["items"]}
    return str(rows[destination])


def test_a_stranger_is_sent_to_the_login_form(console: Console) -> None:
    """Without a session every page path, known or not, answers 302 to /login with the page
    as `next` (a POST's `next` is /), and a POST does nothing; /healthz stays open."""
    stranger = console.visitor()
    for path, target in (("/", "/login?next=%2F"), ("/queues?x=1", "/login?next=%2Fqueues%3Fx%3D1"),
                         ("/nope", "/login?next=%2Fnope")):
        reply = stranger.get(path)
        assert (reply.status, reply.location) == (302, target), path
    reply = stranger.post("/queues/files/pause", {"csrf": "x"})
    assert (reply.status, reply.location) == (302, "/login?next=%2F")
    assert _state(console, "files") == "running"
    assert stranger.get("/healthz").status == 200
    form = stranger.get("/login")
    assert form.status == 200 and 'name="password"' in form.body


def test_login_sets_a_strict_session_cookie(console: Console) -> None:
    """The right password: 303 to `next`, an `hl7_session` cookie that is HttpOnly,
    SameSite=Strict, Path=/ and (without TLS) not Secure; the page then shows the user; the
    login is audited with the user's name and address."""
    visitor = console.visitor()
    reply = visitor.login("ops", next_path="/queues")
    assert (reply.status, reply.location) == (303, "/queues")
    header = reply.set_cookie_header("hl7_session")
    flags = [part.strip().lower() for part in header.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
    assert "secure" not in flags
    page = visitor.get("/queues")
    assert page.status == 200 and '<span class="user-name">ops</span>' in page.body
    logins = console.engine.wait_for("audit.login")
    assert ("ops", "127.0.0.1") in [(e["user"], e["address"]) for e in logins]


def test_next_goes_only_to_this_site(console: Console) -> None:
    """A `next` that is not a path on this site (another host, a scheme) sends the browser to
    the dashboard instead."""
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        reply = console.visitor().login("vic", next_path=target)
        assert (reply.status, reply.location) == (303, "/"), target


def test_a_wrong_password_is_refused_and_audited(console: Console) -> None:
    """A wrong password or an unknown user: 401, the form again with a message, no session
    cookie; audited as a failed login with the name (a name that is not a user name is not
    logged as typed)."""
    visitor = console.visitor()
    reply = visitor.login("carol", secret="not her password")
    assert reply.status == 401 and "wrong user name or password" in reply.body
    assert "hl7_session" not in reply.cookies()
    assert visitor.get("/").status == 302
    assert visitor.login("nobody", secret="x").status == 401
    assert visitor.login("my secret password", secret="x").status == 401
    failed = [e["user"] for e in console.engine.wait_for("audit.login_failed")]
    assert {"carol", "nobody", "(not a user name)"} <= set(failed)
    assert not any("secret" in str(e) for e in console.engine.events())


def test_the_login_form_needs_its_own_token(console: Console) -> None:
    """POST /login without the login form's token (its cookie and field) is 403."""
    visitor = console.visitor()
    reply = visitor.post("/login", {"name": "ops", "password": "ops password", "csrf": "x"})
    assert reply.status == 403 and "hl7_session" not in reply.cookies()


def test_a_post_without_the_csrf_token_is_403(console: Console) -> None:
    """An operator's pause without a token, or with another session's, is 403 and pauses
    nothing; with the page's token it pauses (303 back to /queues, which says so), audited
    with the user's name; resume likewise."""
    ops, other = _logged_in(console, "ops"), _logged_in(console, "ops")
    other_token = other.get("/queues").csrf()
    assert ops.post("/queues/files/pause", {}).status == 403
    assert ops.post("/queues/files/pause", {"csrf": other_token}).status == 403
    assert ops.post("/queues/files/pause", {"csrf": ""},
                    headers={"X-CSRF-Token": "wrong"}).status == 403
    assert _state(console, "files") == "running"
    token = ops.get("/queues").csrf()
    reply = ops.post("/queues/files/pause", {"csrf": token})
    assert (reply.status, reply.location) == (303, "/queues?done=pause&destination=files")
    assert _state(console, "files") == "paused"
    assert "files: paused." in ops.get(reply.location).body
    assert ops.post("/queues/files/resume", {"csrf": token}).status == 303
    assert _state(console, "files") == "running"
    pauses = console.engine.wait_for("audit.queue_pause")
    assert [(e["user"], e["destination"]) for e in pauses if e["via"] == "console"] == [
        ("ops", "files")]


def test_roles_on_pages(console: Console) -> None:
    """A viewer sees the dashboard and the queues without buttons, and a menu without the
    messages and worklist; a pause is 403 for them; unknown pages are 404, a GET of an action
    405; every page has the security headers."""
    vic = _logged_in(console, "vic")
    page = vic.get("/queues")
    assert page.status == 200 and "files" in page.body and 'class="pause"' not in page.body
    assert 'href="/messages"' not in page.body and 'href="/worklist"' not in page.body
    assert vic.post("/queues/files/pause", {"csrf": page.csrf()}).status == 403
    assert _state(console, "files") == "running"
    dashboard = vic.get("/")
    assert dashboard.status == 200 and 'data-src="/dashboard/panel"' in dashboard.body
    assert vic.get("/dashboard/panel").status == 200
    missing = vic.get("/nope")
    assert missing.status == 404 and "there is no such page" in missing.body
    wrong = vic.get("/queues/files/pause")
    assert (wrong.status, wrong.headers["allow"]) == (405, "POST")
    headers = dashboard.headers
    assert headers["content-security-policy"].startswith("default-src 'self'")
    assert (headers["x-frame-options"], headers["referrer-policy"], headers["cache-control"]) \
        == ("DENY", "same-origin", "no-store")
    assert 'class="pause"' in _logged_in(console, "ops").get("/queues").body


def test_static_files_are_served(console: Console) -> None:
    """/static/app.js and app.css need no login; the folder itself is 404."""
    stranger = console.visitor()
    script = stranger.get("/static/app.js")
    assert script.status == 200 and "data-refresh" in script.body
    assert "javascript" in script.headers["content-type"]
    assert stranger.get("/static/app.css").status == 200
    assert stranger.get("/static/").status == 404


def test_logout_ends_the_session(console: Console) -> None:
    """POST /logout (with the token) clears the cookie and ends the session in the database:
    the old cookie opens neither a page nor the API; audited."""
    carol = _logged_in(console, "carol")
    cookie = carol.cookies["hl7_session"]
    assert carol.post("/logout", {"csrf": "wrong"}).status == 403
    reply = carol.post("/logout", {"csrf": carol.get("/").csrf()})
    assert (reply.status, reply.location) == (303, "/login")
    assert reply.cookies()["hl7_session"]["max-age"] == "0"
    replay = console.visitor()
    replay.cookies["hl7_session"] = cookie
    assert replay.get("/").status == 302
    assert replay.get("/api/queue").status == 401
    assert "carol" in [e["user"] for e in console.engine.wait_for("audit.logout")]


@pytest.mark.parametrize("column", ["seen_at", "created_at"])
def test_an_expired_session_goes_back_to_the_login_form(console: Console, column: str) -> None:
    """A session idle for more than 30 minutes, or opened more than 12 hours ago, opens nothing
    (302 to the login form)."""
    vic = _logged_in(console, "vic")
    assert vic.get("/").status == 200
    back = {"seen_at": timedelta(minutes=31), "created_at": timedelta(hours=13)}[column]
    db = create_engine(console.url)
    with db.begin() as conn:
        conn.execute(update(web_sessions).values(
            {column: datetime.now(UTC).replace(tzinfo=None) - back}))
    db.dispose()
    reply = vic.get("/queues")
    assert (reply.status, reply.location) == (302, "/login?next=%2Fqueues")


def test_the_api_takes_the_session_cookie(console: Console) -> None:
    """With the session cookie the API answers as the user: a read, and a POST only with the
    session's X-CSRF-Token (403 `csrf` without it); a bearer token's POST needs none."""
    ops = _logged_in(console, "ops")
    read = ops.get("/api/queue")
    assert read.status == 200 and json.loads(read.body)["items"][0]["destination"] == "files"
    refused = ops.post("/api/destinations/files/pause", {})
    assert (refused.status, json.loads(refused.body)["error"]) == (403, "csrf")
    token = ops.get("/").csrf()
    done = ops.request("POST", "/api/destinations/files/pause", headers={"X-CSRF-Token": token})
    assert done.status == 200 and json.loads(done.body)["state"] == "paused"
    bearer = console.visitor().request(
        "POST", "/api/destinations/files/resume",
        headers={"Authorization": f"Bearer {console.tokens['ops']}"})
    assert bearer.status == 200 and _state(console, "files") == "running"
    vic = _logged_in(console, "vic")
    assert vic.get("/api/referrals").status == 403


def test_failed_logins_are_rate_limited(tmp_path: Path) -> None:
    """Five failed logins from one address within the window: the sixth attempt, even with the
    right password, is 429 with Retry-After, logged and audited."""
    console = start_console(tmp_path)
    try:
        visitor = console.visitor()
        for n in range(5):
            assert visitor.login(f"guess{n}", secret="x").status == 401
        reply = visitor.login("ops")
        assert reply.status == 429 and "hl7_session" not in reply.cookies()
        assert 0 < int(reply.headers["retry-after"]) <= 15 * 60
        assert console.engine.wait_for("http.login_throttled")
        assert [e["user"] for e in console.engine.wait_for("audit.login_throttled")] == ["ops"]
    finally:
        console.stop()


def test_throttle_counts_per_key_within_the_window() -> None:
    """The limiter: the sixth attempt within the window waits until the oldest failure leaves
    it; other keys are not held; a success forgets its key."""
    throttle = Throttle(max_failures=5, window_s=900)
    for t in range(5):
        assert throttle.wait_s(("name:a", "address:x"), float(t)) == 0
        throttle.failed(("name:a", "address:x"), float(t))
    assert throttle.wait_s(("name:a", "address:y"), 10.0) == 890
    assert throttle.wait_s(("name:b", "address:y"), 10.0) == 0
    assert throttle.wait_s(("name:a",), 900.5) == 0  # the first failure left the window
    throttle.forget("name:a")
    assert throttle.wait_s(("name:a",), 10.0) == 0
    assert throttle.wait_s(("address:x",), 10.0) == 890


def test_the_cookie_is_secure_under_tls(tmp_path: Path) -> None:
    """With `http.tls`, the session cookie is also Secure."""
    pki = make_pki(tmp_path / "pki")
    console = start_console(tmp_path, tls={"cert": str(pki.server_cert),
                                           "key": str(pki.server_key)}, cafile=pki.ca)
    try:
        reply = console.visitor().login("vic")
        assert reply.status == 303
        flags = [p.strip().lower() for p in reply.set_cookie_header("hl7_session").split(";")]
        assert "secure" in flags and "httponly" in flags and "samesite=strict" in flags
    finally:
        console.stop()


def test_removing_a_user_or_changing_the_password_ends_their_sessions(console: Console) -> None:
    """`user remove` and `user password` (the store's functions, on the engine's database) end
    the user's console sessions at once: their cookie opens the login form; a user added later
    under the same name does not inherit them."""
    db = create_engine(console.url)
    now = datetime.now(UTC).replace(tzinfo=None)
    with db.begin() as conn:
        add_user(conn, "temp1", "viewer", "temp1 secret", now)
        add_user(conn, "temp2", "viewer", "temp2 secret", now)
    first, second = console.visitor(), console.visitor()
    assert first.login("temp1", secret="temp1 secret").status == 303
    assert second.login("temp2", secret="temp2 secret").status == 303
    assert first.get("/").status == second.get("/").status == 200
    with db.begin() as conn:
        assert remove_user(conn, "temp1")
        add_user(conn, "temp1", "operator", "another secret", now)
        assert set_password(conn, "temp2", "new secret")
    db.dispose()
    assert first.get("/").status == 302 and second.get("/").status == 302
    assert first.get("/api/queue").status == 401
