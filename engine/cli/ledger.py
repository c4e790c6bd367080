"""The ledger's commands: `referrals`, `referral`, `appointments`, `worklist`, `report`, `link`
and `sweep`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from engine.cli.common import (
    EXIT_CONFIG,
    EXIT_NOT_OK,
    EXIT_OK,
    config_if_any,
    database_only,
    open_db,
    utc_now,
)
from engine.cli.output import print_labelled, print_rows, print_table
from engine.housekeeping import sweep_now
from engine.ledger.settings import LedgerSettings
from engine.timestamps import utc_text


def cmd_referrals(args: argparse.Namespace) -> int:
    from engine.store.ledger.views import count_referrals, list_referrals

    db = open_db(database_only(args)[0])
    now = utc_now()
    overdue_at = now if args.overdue else None
    with db.connect() as conn:
        rows = list_referrals(conn, status=args.status, overdue_at=overdue_at,
                              limit=args.limit, now=now)
        total = count_referrals(conn, status=args.status, overdue_at=overdue_at)
    columns = ["id", "status", "source", "priority", "specialty", "patient_ids",
               "appointments", "received_at", "due_at"]
    print_rows(rows, columns + (["days_overdue"] if args.overdue else []), args.json,
                total - len(rows))
    return EXIT_OK


def cmd_referral(args: argparse.Namespace) -> int:
    from engine.mappings.changes import EI
    from engine.store.ledger.views import find_referral

    db = open_db(database_only(args)[0])
    with db.connect() as conn:
        found = find_referral(conn, EI.parse(args.id), utc_now())
    if found is None:
        print(f"no referral {args.id}", file=sys.stderr)
        return EXIT_NOT_OK
    if args.json:
        print(json.dumps(found, indent=2))
        return EXIT_OK
    print_labelled(_referral_lines(found))
    print("\nhistory")
    print_table([history_row(h) for h in found["history"]],
                 ["at", "event", "change", "appointment", "message", "note"],
                 ["time", "event", "before → after", "appointment", "message", "note"])
    if found["events"]:
        print("\nevent messages sent")
        print_table(found["events"], ["created_at", "event", "destination", "queue_id",
                                       "control_id", "message_id", "status"],
                     ["time", "event", "destination", "queue id", "control id", "message",
                      "status"])
    return EXIT_OK


def _referral_lines(r: dict[str, Any]) -> list[tuple[str, Any]]:
    """`referral ID`'s labelled lines."""
    keys = [r["id"], *(f"{k} (other system's id)" for k in r["external_ids"])]
    if r["filler_order_number"]:
        keys.append(f"{r['filler_order_number']} (filler order number)")
    window = (f"{r['window_start'] or '-'} to {r['window_end'] or '-'}"
              if r["window_start"] or r["window_end"] else None)
    overdue = r.get("days_overdue")
    return [
        ("keys", keys),
        ("status", r["status"] + (" (flagged for review)" if r["review"] else "")),
        ("priority", r["priority"]),
        ("specialty", r["specialty"]),
        ("source", r["source"]),
        ("patient ids", r["patient_ids"]),
        ("providers", [_provider(p) for p in r["providers"]]),
        ("diagnoses", r["diagnoses"]),
        ("window", window),
        ("received", r["received_at"]),
        ("updated", r["updated_at"]),
        ("due", r["due_at"]),
        ("days overdue", None if overdue is None else f"{overdue}"),
        ("appointments", r["appointments"]),
    ]


def _provider(p: dict[str, Any]) -> str:
    """A provider as `RT TESTDOC^JANE (TESTNPI0001) at NEURO`, empty parts left out."""
    text = " ".join(part for part in (p.get("role"), p.get("name")) if part)
    if p.get("id"):
        text += f" ({p['id']})" if p.get("name") else f" {p['id']}"
    return text + (f" at {p['location']}" if p.get("location") else "")


def history_row(h: dict[str, Any]) -> dict[str, Any]:
    """A history row for the text table: the status change as `before → after` and the message
    as `#id control-id`."""
    before, after = h["status_before"], h["status_after"]
    change = None if before is None and after is None else f"{before or '-'} → {after or '-'}"
    message = " ".join(part for part in (f"#{h['message_id']}" if h["message_id"] else "",
                                         h["control_id"] or "") if part)
    return {**h, "change": change, "message": message, "note": h["rule"]}


def cmd_appointments(args: argparse.Namespace) -> int:
    from engine.store.ledger.views import count_appointments, list_appointments

    db = open_db(database_only(args)[0])
    with db.connect() as conn:
        rows = list_appointments(conn, limit=args.limit)
        total = count_appointments(conn)
    print_rows(rows, ["id", "status", "start", "duration_min", "specialty", "match",
                       "referral", "via", "candidates"], args.json, total - len(rows))
    return EXIT_OK


def cmd_worklist(args: argparse.Namespace) -> int:
    """Unmatched and ambiguous appointments, then no-shows to rebook: why each is there and
    what clears it (engine.store.ledger.worklist)."""
    from engine.store.ledger import worklist

    config = config_if_any(args)
    database = config.database if config else database_only(args)[0]
    days = config.ledger.default_window_days if config else LedgerSettings().default_window_days
    db = open_db(database)
    with db.connect() as conn:
        rows = worklist.worklist(conn, utc_now(), limit=args.limit, window_days=days)
        total = worklist.count(conn)
    print_rows(rows, ["id", "start", "patient_ids", "reason", "action"], args.json,
                total - len(rows), ["appointment", "start", "patient ids", "reason", "action"])
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """The referral report: figures over the referrals received in [--since, --until)."""
    from engine.store.database import snapshot
    from engine.store.ledger.report import PeriodError, build_report, period, tables

    now = utc_now()
    try:
        cohort = period(now, args.since, args.until)
    except PeriodError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    db = open_db(database_only(args)[0])
    with snapshot(db) as conn:
        report = build_report(conn, cohort, now, args.by)
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    span = f"{utc_text(cohort.since)} to {utc_text(cohort.until)} (until excluded)"
    if not report["totals"]["received"]:
        print(f"no referrals received in {span}")
        return EXIT_OK
    print(f"referrals received {span}, as of {utc_text(now)} "
          f"(definitions: hl7-engine report --help)")
    for title, columns, rows in tables(report):
        print(f"\n{title}")
        print_table(rows, columns)
    return EXIT_OK


def cmd_link(args: argparse.Namespace) -> int:
    from engine.ledger.manual import LinkNotFound, LinkRefused, link
    from engine.logs import audit, configure_logging

    config = config_if_any(args)
    database, log_file = (config.database, config.log.file) if config else database_only(args)
    try:
        effect = link(open_db(database), config, args.appointment, args.referral, utc_now())
    except (LinkNotFound, LinkRefused) as exc:
        print(str(exc).strip("'\""), file=sys.stderr)
        return EXIT_NOT_OK
    configure_logging(log_file or None, console=None)
    audit("audit.manual_link", appointment=args.appointment, referral=args.referral)
    print(effect)
    return EXIT_OK


def cmd_sweep(args: argparse.Namespace) -> int:
    """The periodic sweep by hand: it changes referrals, so it is audited (`audit.sweep`)."""
    from engine.logs import audit, configure_logging

    config = config_if_any(args)
    database, log_file = (config.database, config.log.file) if config else database_only(args)
    db = open_db(database)
    expired, overdue, queued = sweep_now(db, config)
    configure_logging(log_file or None, console=None)
    audit("audit.sweep", expired=len(expired), overdue=len(overdue), events_queued=queued)
    for line in expired + overdue:
        print(line)
    print(f"{len(expired)} referral(s) expired, {len(overdue)} newly overdue, "
          f"{queued} event message(s) queued")
    return EXIT_OK


