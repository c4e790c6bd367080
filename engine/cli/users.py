"""`hl7-engine user ...` and `hl7-engine token ...`: the web API's users and bearer tokens.

    user add NAME --role ROLE --password-stdin    user list [--json]
    user password NAME --password-stdin           user remove NAME
    token create NAME                             token revoke NAME|TOKEN-PREFIX

`register(subparsers, common)` adds both commands to the parser (engine/cli/parser.py) (`common` holds --config
and --database); `HANDLERS` maps each command name to its handler.  Exit codes as every
command: 0 done, 1 no such user or token (or a name already taken), 2 bad usage or
configuration; messages go to stderr.  Every change writes an audit event (`engine.logs.audit`,
with the operating-system account); a password is read from stdin only, never from the
command line, and never printed or logged.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from engine.cli.common import EXIT_CONFIG, EXIT_NOT_OK, EXIT_OK, database_only, open_db
from engine.store.users import PREFIX_CHARS, ROLES


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add `user` and `token` (with their own sub-commands) to the CLI's sub-parsers."""
    user = subparsers.add_parser("user", parents=[common], help="the web API's users and roles")
    users = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = users.add_parser("add", parents=[common], help="add a user (password from stdin)")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", required=True, choices=ROLES,
                     help="viewer: counts only; coordinator: referrals and the worklist; "
                          "operator: also messages and bodies; admin: everything")
    _password_stdin(add)
    listing = users.add_parser("list", parents=[common], help="every user, role and tokens")
    listing.add_argument("--json", action="store_true")
    remove = users.add_parser("remove", parents=[common], help="remove a user and their tokens")
    remove.add_argument("name", metavar="NAME")
    password = users.add_parser("password", parents=[common],
                                help="set a user's password (from stdin)")
    password.add_argument("name", metavar="NAME")
    _password_stdin(password)
    token = subparsers.add_parser("token", parents=[common], help="bearer tokens for the web API")
    tokens = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = tokens.add_parser("create", parents=[common],
                               help="a new token for a user, printed once (its last line)")
    create.add_argument("name", metavar="NAME")
    revoke = tokens.add_parser("revoke", parents=[common],
                               help="revoke every token of a user, or the token with a prefix")
    revoke.add_argument("which", metavar="NAME|TOKEN-PREFIX",
                        help=f"a user name, or a token's first {PREFIX_CHARS} characters "
                             "(as `user list` does not show them: as `token create` printed)")


def _password_stdin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--password-stdin", action="store_true", required=True,
                        help="read the password from standard input (one line)")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _open(args: argparse.Namespace) -> tuple[Any, str]:
    """The engine's database, migrated (never a new SQLite file: a wrong path would hide), and
    the log file that audit events go to."""
    from engine.logs import configure_logging

    database, log_file = database_only(args)
    db = open_db(database)
    configure_logging(log_file or None, console=None)
    return db, log_file


def _read_password() -> str | None:
    """The first line of stdin, without its line end; None (and a message) when it is empty."""
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("the password is empty (give it on standard input)", file=sys.stderr)
        return None
    return password


def cmd_user(args: argparse.Namespace) -> int:
    """`user add|list|remove|password`."""
    return {"add": _user_add, "list": _user_list, "remove": _user_remove,
            "password": _user_password}[args.user_command](args)


def _user_add(args: argparse.Namespace) -> int:
    from engine.logs import audit
    from engine.store.users import UserError, add_user, check_name

    try:
        check_name(args.name)
    except UserError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    password = _read_password()
    if password is None:
        return EXIT_CONFIG
    db, _ = _open(args)
    try:
        with db.begin() as conn:
            add_user(conn, args.name, args.role, password, _now())
    except UserError as exc:
        print(exc, file=sys.stderr)
        return EXIT_NOT_OK
    audit("audit.user_added", name=args.name, role=args.role)
    print(f"user {args.name} added ({args.role})", file=sys.stderr)
    return EXIT_OK


def _user_list(args: argparse.Namespace) -> int:
    from engine.store.users import list_users

    db, _ = _open(args)
    with db.connect() as conn:
        rows = list_users(conn)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print("(none)")
        return EXIT_OK
    columns = ["name", "role", "disabled", "tokens", "created_at", "last_used_at"]
    table = [columns] + [[_cell(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    return EXIT_OK


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _user_remove(args: argparse.Namespace) -> int:
    from engine.store.users import remove_user

    return _change_user(args, lambda conn: remove_user(conn, args.name), "audit.user_removed",
                        f"user {args.name} removed, with their tokens")


def _user_password(args: argparse.Namespace) -> int:
    from engine.store.users import set_password

    password = _read_password()
    if password is None:
        return EXIT_CONFIG
    return _change_user(args, lambda conn: set_password(conn, args.name, password),
                        "audit.user_password_set", f"password of {args.name} set")


def _change_user(args: argparse.Namespace, change: Callable[[Any], bool], event: str,
                 done_text: str) -> int:
    """Run `change` on the named user in one transaction: `no user NAME` (exit 1) when there
    is none, else the audit event and `done_text`."""
    from engine.logs import audit

    db, _ = _open(args)
    with db.begin() as conn:
        done = change(conn)
    if not done:
        print(f"no user {args.name}", file=sys.stderr)
        return EXIT_NOT_OK
    audit(event, name=args.name)
    print(done_text, file=sys.stderr)
    return EXIT_OK


def cmd_token(args: argparse.Namespace) -> int:
    """`token create|revoke`."""
    return {"create": _token_create, "revoke": _token_revoke}[args.token_command](args)


def _token_create(args: argparse.Namespace) -> int:
    from engine.logs import audit
    from engine.store.users import create_token

    db, _ = _open(args)
    with db.begin() as conn:
        token = create_token(conn, args.name, _now())
    if token is None:
        print(f"no user {args.name}", file=sys.stderr)
        return EXIT_NOT_OK
    audit("audit.token_created", name=args.name, prefix=token[:PREFIX_CHARS])
    print(f"a token for {args.name}; it is shown only now (revoke it with "
          f"`token revoke {token[:PREFIX_CHARS]}`):", file=sys.stderr)
    print(token, flush=True)
    return EXIT_OK


def _token_revoke(args: argparse.Namespace) -> int:
    from engine.logs import audit
    from engine.store.users import revoke_tokens

    db, _ = _open(args)
    with db.begin() as conn:
        count = revoke_tokens(conn, args.which, _now())
    if not count:
        print(f"no live token of a user or with a prefix {args.which[:PREFIX_CHARS]}",
              file=sys.stderr)
        return EXIT_NOT_OK
    audit("audit.token_revoked", which=args.which[:PREFIX_CHARS], tokens=count)
    print(f"{count} token{'s' if count != 1 else ''} revoked", file=sys.stderr)
    return EXIT_OK


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {"user": cmd_user, "token": cmd_token}

