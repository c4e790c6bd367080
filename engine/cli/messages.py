"""`tail` and `show`: the message log, from the store.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from engine.cli.common import EXIT_NOT_OK, EXIT_OK, database_only, open_db
from engine.cli.ledger import history_row
from engine.cli.output import print_labelled, print_more, print_table
from engine.errors import BodyPurged
from engine.store.messages import log_record
from engine.timestamps import utc_text


def cmd_tail(args: argparse.Namespace) -> int:
    from engine.store.messages import count_rows, log_rows
    from engine.store.queue import delivery_lines

    database, _ = database_only(args)
    db = open_db(database)
    filters = dict(channel=args.channel, message_type=args.type, status=args.status)
    with db.connect() as conn:
        rows = log_rows(conn, limit=args.limit, newest=True, **filters)
        sent = delivery_lines(conn, [r.id for r in rows])
        more = 0 if args.follow or args.json or len(rows) < args.limit else (
            count_rows(conn, **filters) - len(rows))
    last = 0
    for row in rows:
        print(_log_line(row, args.json, sent.get(row.id, [])), flush=True)
        last = row.id
    if not args.follow:
        print_more(more)  # older messages: the listing shows the newest
        return EXIT_OK
    if not rows:
        with db.connect() as conn:
            newest = log_rows(conn, limit=1, newest=True)
            last = newest[-1].id if newest else 0
    while True:
        time.sleep(0.2)
        with db.connect() as conn:
            rows = log_rows(conn, after_id=last, limit=1000, **filters)
        for row in rows:
            print(_log_line(row, args.json), flush=True)
            last = row.id


def _log_line(row: Any, as_json: bool, sent: list[str] | None = None) -> str:
    rec = log_record(row)
    if sent:
        rec["deliveries"] = sent
    if as_json:
        return json.dumps(rec)
    error = f" {rec['error_code']} {rec['error_location']}".rstrip() if rec["error_code"] else ""
    flags = " reused-control-id" if rec["control_id_reused"] else ""
    flags += f" resent×{rec['retransmissions']}" if rec["retransmissions"] else ""
    return (f"{rec['received_at']}  #{rec['id']:<6} {rec['channel']:<12} {rec['sender']:<24} "
            f"{rec['type'] or '-':<9} {rec['control_id'] or '-':<20} {rec['ack'] or '-':<6} "
            f"{rec['status']}{error}{flags}"
            + (f"  {rec['ledger_effect']}" if rec["ledger_effect"] else "")
            + "".join(f"  {line}" for line in sent or []))


def cmd_show(args: argparse.Namespace) -> int:
    from engine.logs import audit, configure_logging
    from engine.parsing.parser import decode
    from engine.store.ledger.views import changes_of_message
    from engine.store.messages import message_row
    from engine.store.queue import deliveries_of
    from engine.store.relayed import relayed_of

    database, log_file = database_only(args)
    db = open_db(database)
    with db.connect() as conn:
        row = message_row(conn, args.id, with_raw=args.raw)
        changes = changes_of_message(conn, args.id)
        sent = deliveries_of(conn, args.id)
        relayed = relayed_of(conn, args.id)
    if row is None:
        print(f"no message with id {args.id}", file=sys.stderr)
        return EXIT_NOT_OK
    rec = log_record(row)
    rec["purged_at"] = utc_text(row.purged_at)  # retention emptied the body (None: kept)
    rec["ledger_changes"] = changes
    rec["deliveries"] = sent
    if relayed:
        rec["relayed_acks"] = relayed  # pass-through: what the sender was answered
    purged = BodyPurged(args.id, row.purged_at) if args.raw and row.purged_at else None
    if purged is not None:
        # No body is read, so there is nothing to audit: the audit event says who saw one.
        rec["raw"] = None
    elif args.raw:
        configure_logging(log_file or None, console=None)
        audit("audit.message_body_read", message_id=args.id, digest=row.digest[:16])
        rec["raw"] = decode(row.raw)[0]  # in the charset the parser read it in
    if args.json:
        print(json.dumps(rec, indent=2))
        return _body_purged(purged)
    print_labelled([(key, value) for key, value in rec.items()
                     if key not in ("raw", "ledger_changes", "deliveries", "relayed_acks")
                     and not (key == "purged_at" and value is None)])
    if changes:
        print("\nledger changes")
        print_table([history_row({**c, "message_id": None, "control_id": None})
                      for c in changes], ["referral", "appointment", "event", "change", "note"],
                     ["referral", "appointment", "event", "before → after", "note"])
    for queued in sent:
        print(f"\n→ {queued['destination']} (queue #{queued['queue_id']}): {queued['status']}")
        for attempt in queued["attempts"]:  # type: ignore[attr-defined]
            print(f"    {attempt['at']}  {attempt['ack'] or '-'}  {attempt['ms']} ms"
                  f"  {attempt['error'] or ''}".rstrip())
    for answer in relayed:
        print(f"\n← sender {answer['ack']} (relayed from downstream "
              f"{answer['downstream_ack'] or 'no answer'}) at {answer['at']}")
    if rec.get("raw") is not None:
        print()
        print(rec["raw"].replace("\r\n", "\n").replace("\r", "\n").rstrip("\n"))
    return _body_purged(purged)


def _body_purged(purged: BodyPurged | None) -> int:
    """`show --raw` of a purged message: one line on stderr (the rest was printed), exit 1."""
    if purged is None:
        return EXIT_OK
    print(purged, file=sys.stderr)
    return EXIT_NOT_OK
