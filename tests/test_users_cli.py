"""`user` and `token` commands (engine/cli/users.py) against a real SQLite database: add, list,
password, remove, token create and revoke; the errors (a name taken, an unknown role, an empty
password, no such user) and their exit codes; an audit event for every change, never a
password in it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from enginectl import create_database, run_cli, write_config
from sqlalchemy import select

from engine.store.database import open_database
from engine.store.schema import api_tokens, users
from engine.store.users import add_user, create_token, token_digest, verify_password


@pytest.fixture(name="config")
def config_fixture(tmp_path: Path) -> Path:
    url = create_database(f"sqlite:///{tmp_path / 'engine.db'}")
    return write_config(tmp_path, url)


def _audits(config: Path) -> list[dict[str, object]]:
    log = config.parent / "engine.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [e for e in map(json.loads, lines) if e.get("audit")]


def _listing(config: Path) -> list[dict[str, object]]:
    out = run_cli("user", "list", "--json", config=config)
    assert out.returncode == 0, out.stderr
    return [{k: v for k, v in u.items() if k in ("name", "role", "tokens", "disabled")}
            for u in json.loads(out.stdout)]


def test_add_list_password_remove(config: Path) -> None:
    """A user is added with a role and an argon2 hash of the password read from stdin, listed,
    given a new password, then removed; each change is audited with its event name."""
    assert run_cli("user", "add", "carol", "--role", "coordinator", "--password-stdin",
                   stdin="first secret\n", config=config).returncode == 0
    assert run_cli("user", "add", "vic", "--role", "viewer", "--password-stdin",
                   stdin="x\n", config=config).returncode == 0
    assert _listing(config) == [
        {"name": "carol", "role": "coordinator", "tokens": 0, "disabled": False},
        {"name": "vic", "role": "viewer", "tokens": 0, "disabled": False}]
    db = open_database(f"sqlite:///{config.parent / 'engine.db'}", migrate=False)
    with db.connect() as conn:
        stored = conn.execute(select(users.c.password_hash).where(users.c.name == "carol")).scalar_one()
    assert stored.startswith("$argon2id$") and verify_password(stored, "first secret")
    assert run_cli("user", "password", "carol", "--password-stdin",
                   stdin="second secret\n", config=config).returncode == 0
    with db.connect() as conn:
        stored = conn.execute(select(users.c.password_hash).where(users.c.name == "carol")).scalar_one()
    assert verify_password(stored, "second secret") and not verify_password(stored, "first secret")
    assert run_cli("user", "remove", "vic", config=config).returncode == 0
    assert [u["name"] for u in _listing(config)] == ["carol"]
    audits = _audits(config)
    assert [(a["event"], a.get("name")) for a in audits] == [
        ("audit.user_added", "carol"), ("audit.user_added", "vic"),
        ("audit.user_password_set", "carol"), ("audit.user_removed", "vic")]
    assert "secret" not in (config.parent / "engine.log").read_text()
    db.dispose()


def test_errors_name_taken_unknown_role_empty_password_no_user(config: Path) -> None:
    """A name taken is refused (exit 1), an unknown role and an empty password are usage errors
    (exit 2), a missing user is exit 1; none of them changes the users."""
    assert run_cli("user", "add", "carol", "--role", "operator", "--password-stdin",
                   stdin="pw\n", config=config).returncode == 0
    taken = run_cli("user", "add", "carol", "--role", "viewer", "--password-stdin",
                    stdin="pw\n", config=config)
    assert (taken.returncode, taken.stderr.strip()) == (1, "user carol exists already")
    role = run_cli("user", "add", "dave", "--role", "boss", "--password-stdin", stdin="pw\n", config=config)
    assert role.returncode == 2 and "invalid choice: 'boss'" in role.stderr
    empty = run_cli("user", "add", "dave", "--role", "viewer", "--password-stdin", stdin="\n", config=config)
    assert (empty.returncode, empty.stderr.strip()) == (
        2, "the password is empty (give it on standard input)")
    bad_name = run_cli("user", "add", "-x y", "--role", "viewer", "--password-stdin",
                       stdin="pw\n", config=config)
    assert bad_name.returncode == 2
    for args in (("user", "remove", "nobody"), ("token", "create", "nobody"),
                 ("token", "revoke", "nobody"), ("user", "password", "nobody", "--password-stdin")):
        out = run_cli(*args, stdin="pw\n", config=config)
        assert out.returncode == 1, args
    assert _listing(config) == [{"name": "carol", "role": "operator", "tokens": 0,
                                 "disabled": False}]


def test_no_token_starts_with_a_dash(tmp_path: Path) -> None:
    """A token's prefix is given to `token revoke PREFIX`: one starting with `-` would be taken
    for an option.  URL-safe base64 starts with `-` once in 64 tokens; of 640, none may."""
    from datetime import datetime

    db = open_database(f"sqlite:///{tmp_path / 'tokens.db'}")
    now = datetime(2026, 12, 5, 8, 0, 0)
    with db.begin() as conn:
        add_user(conn, "ops", "operator", "pw", now)
        tokens = [create_token(conn, "ops", now) for _ in range(640)]
    db.dispose()
    assert all(t and len(t) == 43 for t in tokens)
    assert [t for t in tokens if t and t.startswith("-")] == []


def test_token_create_and_revoke_by_prefix_or_name(config: Path) -> None:
    """`token create` prints the token as its last line and stores only its sha256; `token
    revoke PREFIX` revokes that token alone, `token revoke NAME` every live one of the user."""
    run_cli("user", "add", "ops", "--role", "operator", "--password-stdin", stdin="pw\n", config=config)
    first = run_cli("token", "create", "ops", config=config).stdout.splitlines()[-1]
    second = run_cli("token", "create", "ops", config=config).stdout.splitlines()[-1]
    assert len(first) == 43 and first != second  # 32 bytes, URL-safe base64 without padding
    db = open_database(f"sqlite:///{config.parent / 'engine.db'}", migrate=False)
    with db.connect() as conn:
        hashes = set(conn.execute(select(api_tokens.c.token_hash)).scalars())
    assert hashes == {token_digest(first), token_digest(second)}
    assert first not in (config.parent / "engine.db").read_bytes().decode("latin-1")
    assert run_cli("token", "revoke", first[:8], config=config).returncode == 0
    assert _listing(config)[0]["tokens"] == 1
    assert run_cli("token", "revoke", "ops", config=config).returncode == 0
    assert _listing(config)[0]["tokens"] == 0
    assert run_cli("token", "revoke", "ops", config=config).returncode == 1  # nothing live left
    events = [(a["event"], a.get("tokens")) for a in _audits(config)]
    assert events[-4:] == [("audit.token_created", None), ("audit.token_created", None),
                           ("audit.token_revoked", 1), ("audit.token_revoked", 1)]
    assert first not in (config.parent / "engine.log").read_text()
    db.dispose()


def test_token_use_is_noted_at_most_once_a_minute(tmp_path: Path) -> None:
    """`token_user` finds a live token's user and writes `last_used_at` on first use, not again
    within a minute, then again after it; a revoked token or a disabled user finds nobody."""
    from datetime import datetime, timedelta

    from sqlalchemy import update

    from engine.store.users import Principal, revoke_tokens, token_user

    db = open_database(f"sqlite:///{tmp_path / 'u.db'}")
    t0 = datetime(2026, 12, 1, 8, 0, 0)
    with db.begin() as conn:
        add_user(conn, "carol", "coordinator", "pw", t0)
        token = str(create_token(conn, "carol", t0))
        other = str(create_token(conn, "carol", t0))

    def used(at: datetime, which: str = token) -> tuple[Principal | None, object]:
        with db.begin() as conn:
            who = token_user(conn, which, at)
            last = conn.execute(select(api_tokens.c.last_used_at).where(
                api_tokens.c.token_hash == token_digest(which))).scalar()
        return who, last

    assert used(t0) == (Principal("carol", "coordinator"), t0)
    assert used(t0 + timedelta(seconds=59)) == (Principal("carol", "coordinator"), t0)
    assert used(t0 + timedelta(seconds=61))[1] == t0 + timedelta(seconds=61)
    assert used(t0, "no-such-token")[0] is None
    with db.begin() as conn:
        assert revoke_tokens(conn, token[:8], t0) == 1
    assert used(t0 + timedelta(minutes=5))[0] is None
    with db.begin() as conn:
        conn.execute(update(users).values(disabled=True))
    assert used(t0, other)[0] is None
    db.dispose()
