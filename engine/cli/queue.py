"""`queue` and the destination actions: `pause`, `resume`, `retry`, `release`, `replay`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.cli.common import EXIT_NOT_OK, EXIT_OK, config_of, open_db, utc_now
from engine.cli.output import print_rows
from engine.errors import BodyPurged


def cmd_queue(args: argparse.Namespace) -> int:
    from engine.outbound.views import queue_state

    config = config_of(args)
    db = open_db(config.database)
    rows = queue_state(db, config.destinations, utc_now())
    print_rows(rows, ["destination", "type", "order", "state", "depth", "oldest_age_s",
                       "delivered", "dead_letters", "held_keys", "last_error"], args.json)
    return EXIT_OK


def cmd_queue_action(args: argparse.Namespace) -> int:
    """pause, resume, retry, release, replay: state changes, each audited
    (engine.outbound.operator does them, for the API too)."""
    from engine.logs import audit, configure_logging
    from engine.outbound import operator

    config = config_of(args)
    try:
        dest = args.to if args.command == "replay" else args.destination
        if dest is not None:  # before the database, as ever
            operator.check_destination(config, dest)
        with open_db(config.database).begin() as conn:
            if args.command == "replay":
                queued = operator.replay_message(conn, config, args.message_id, args.to,
                                                 utc_now())
            else:
                done = operator.destination_action(conn, config, args.command,
                                                   args.destination, getattr(args, "id", None))
    except operator.UnknownDestination as exc:
        print(f"no destination {exc.name!r} in {args.config} "
              f"(known: {', '.join(exc.known) or 'none'})", file=sys.stderr)
        return EXIT_NOT_OK
    except BodyPurged as exc:
        print(f"{exc}; nothing to replay", file=sys.stderr)
        return EXIT_NOT_OK
    except (operator.UnknownMessage, operator.NotRoutable) as exc:
        print(str(exc).strip("'\""), file=sys.stderr)
        return EXIT_NOT_OK
    configure_logging(config.log.file, console=None)
    if args.command == "replay":
        audit("audit.queue_replay", **operator.replay_audit(args.message_id, args.to, queued))
        for q in queued:
            route = f" (route {q['route']})" if q["route"] else ""
            print(f"message {args.message_id} queued for {q['destination']} "
                  f"as #{q['queue_id']}{route}")
        return EXIT_OK
    audit(f"audit.queue_{args.command}", destination=args.destination)
    print(_action_text(args.command, done))
    return EXIT_OK


def _action_text(verb: str, done: dict[str, Any]) -> str:
    dest = done["destination"]
    if verb in ("pause", "resume"):
        return f"{dest}: {done['state']}"
    if verb == "retry":
        return f"{dest}: retrying its head now"
    return f"{dest}: {done['released']} dead letter(s) queued again"
