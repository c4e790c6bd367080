"""The console's database side on SQLite and PostgreSQL: sessions (opened, found, noted,
ended, expired idle and by age, a disabled user's) and the dashboard's traffic view (messages
per minute and counts by status over the last hour, the age of the last message)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update

from engine.store.database import open_database
from engine.store.schema import messages, users
from engine.store.sessions import IDLE, LIFETIME, end_session, open_session, session_of
from engine.store.traffic import channel_traffic
from engine.store.users import add_user

NOW = datetime(2026, 12, 4, 10, 30, 15)


def test_a_session_lives_until_logout_idle_or_age(db_url: str) -> None:
    """A session is found by its id (not by its hash), with its user, role and CSRF token;
    it ends at logout, after IDLE without use, LIFETIME after it opened, and when its user is
    disabled; an unknown user gets none."""
    db = open_database(db_url)
    with db.begin() as conn:
        add_user(conn, "ops", "operator", "pw", NOW)
        assert open_session(conn, "nobody", NOW) is None
        sid = open_session(conn, "ops", NOW)
        assert sid is not None
        found = session_of(conn, sid, NOW + IDLE / 2)
        assert found is not None and (found.user.name, found.user.role) == ("ops", "operator")
        assert len(found.csrf) >= 43 and session_of(conn, sid + "x", NOW) is None
        # used at IDLE/2: alive until IDLE/2 + IDLE, however long the session has been open
        assert session_of(conn, sid, NOW + IDLE * 1.4) is not None
        assert session_of(conn, sid, NOW + IDLE * 1.4 + IDLE) is None
        young = open_session(conn, "ops", NOW)
        assert young is not None
        t = NOW
        while t + IDLE / 2 < NOW + LIFETIME:  # kept busy, it still ends at LIFETIME
            t += IDLE / 2
            assert session_of(conn, young, t) is not None
        assert session_of(conn, young, NOW + LIFETIME) is None
        third = open_session(conn, "ops", NOW)
        assert third is not None and end_session(conn, third, NOW) == "ops"
        assert session_of(conn, third, NOW) is None and end_session(conn, third, NOW) is None
        fourth = open_session(conn, "ops", NOW)
        assert fourth is not None
        conn.execute(update(users).values(disabled=True))
        assert session_of(conn, fourth, NOW) is None
    db.dispose()


def _message(channel: str, at: datetime, status: str) -> dict[str, object]:
    return {"channel": channel, "received_at": at, "size": 1, "digest": "0" * 64, "raw": b"x",
            "status": status, "stage": "content"}


def test_channel_traffic_counts_the_last_hour(db_url: str) -> None:
    """Messages per minute (the current minute last), counts by status within the hour, the age
    of the last message; a message older than the hour counts in neither, an unknown channel is
    left out, a quiet channel has zeros and no age."""
    db = open_database(db_url)
    rows = [_message("a", NOW - timedelta(seconds=10), "accepted"),
            _message("a", NOW - timedelta(seconds=5), "errored"),
            _message("a", NOW - timedelta(minutes=2, seconds=30), "rejected"),
            _message("a", NOW - timedelta(minutes=61), "accepted"),
            _message("zz", NOW, "accepted")]
    with db.begin() as conn:
        conn.execute(messages.insert(), rows)
    with db.connect() as conn:
        a, quiet = channel_traffic(conn, ["a", "quiet"], NOW)
    db.dispose()
    assert a["per_minute"][-1] == 2 and a["per_minute"][-4] == 1 and sum(a["per_minute"]) == 3
    assert a["counts"] == {"accepted": 1, "errored": 1, "rejected": 1}
    assert a["last_age_s"] == 5.0
    assert quiet == {"channel": "quiet", "per_minute": [0] * 60,
                     "counts": {"accepted": 0, "errored": 0, "rejected": 0}, "last_age_s": None}
