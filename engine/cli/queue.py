"""`queue` and the destination actions: `pause`, `resume`, `retry`, `release`, `replay`.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from engine.config import Config
from engine.errors import BodyPurged

if TYPE_CHECKING:

    pass
from engine.cli.common import EXIT_NOT_OK, EXIT_OK, config_of, open_db, utc_now
from engine.cli.output import print_rows


def cmd_queue(args: argparse.Namespace) -> int:
    from engine.routes.delivery import queue_state

    config = config_of(args)
    db = open_db(config.database)
    rows = queue_state(db, config.destinations, utc_now())
    print_rows(rows, ["destination", "type", "order", "state", "depth", "oldest_age_s",
                       "delivered", "dead_letters", "held_keys", "last_error"], args.json)
    return EXIT_OK


def cmd_queue_action(args: argparse.Namespace) -> int:
    """pause, resume, retry, release, replay: state changes, each audited."""
    from engine.logs import audit, configure_logging
    from engine.routes import operator

    config = config_of(args)
    if args.command == "replay" and args.to is None:
        return _replay_routed(args, config)
    names = {d.name for d in config.destinations}
    dest = args.to if args.command == "replay" else args.destination
    if dest not in names:
        print(f"no destination {dest!r} in {args.config} "
              f"(known: {', '.join(sorted(names)) or 'none'})", file=sys.stderr)
        return EXIT_NOT_OK
    db = open_db(config.database)
    with db.begin() as conn:
        if args.command in ("pause", "resume"):
            operator.set_paused(conn, dest, args.command == "pause")
            text = f"{dest}: {'paused' if args.command == 'pause' else 'running'}"
        elif args.command == "retry":
            operator.request_retry(conn, dest)
            text = f"{dest}: retrying its head now"
        elif args.command == "release":
            count = operator.release(conn, dest, args.id)
            text = f"{dest}: {count} dead letter(s) queued again"
        else:
            key_path = next(d.order_key for d in config.destinations if d.name == dest)
            try:
                queued = operator.replay(conn, args.message_id, dest, utc_now(), key_path)
            except BodyPurged as exc:
                print(f"{exc}; nothing to replay", file=sys.stderr)
                return EXIT_NOT_OK
            if queued is None:
                print(f"no message with id {args.message_id}", file=sys.stderr)
                return EXIT_NOT_OK
            text = f"message {args.message_id} queued for {dest} as #{queued}"
    configure_logging(config.log.file, console=None)
    which = {"message_id": args.message_id} if args.command == "replay" else {}
    audit(f"audit.queue_{args.command}", destination=dest, **which)
    print(text)
    return EXIT_OK


def _replay_routed(args: argparse.Namespace, config: Config) -> int:
    """`replay MESSAGE_ID` without --to: through the routes as they are now (audited)."""
    from engine.logs import audit, configure_logging
    from engine.routes import operator

    db = open_db(config.database)
    with db.begin() as conn:
        try:
            queued = operator.replay_routed(conn, args.message_id, config, utc_now())
        except (BodyPurged, operator.NotRoutable) as exc:
            print(f"{exc}; nothing to replay" if isinstance(exc, BodyPurged) else exc,
                  file=sys.stderr)
            return EXIT_NOT_OK
    if queued is None:
        print(f"no message with id {args.message_id}", file=sys.stderr)
        return EXIT_NOT_OK
    configure_logging(config.log.file, console=None)
    audit("audit.queue_replay", message_id=args.message_id,
          destinations=sorted({dest for _route, dest, _id in queued}))
    for route, dest, queue_id in queued:
        print(f"message {args.message_id} queued for {dest} as #{queue_id} (route {route})")
    return EXIT_OK
