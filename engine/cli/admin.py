"""`check-config`, `purge` and `validate`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli.common import (
    EXIT_CONFIG,
    EXIT_NOT_OK,
    EXIT_OK,
    config_if_any,
    database_only,
    open_db,
    utc_now,
)
from engine.cli.output import size_text
from engine.config import Config, load_config


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    for ch in config.channels:
        print(f"channel {ch.name}: listens on {ch.host}:{ch.port}, accepts "
              f"{len(ch.accept)} message types, versions {', '.join(ch.versions)}, "
              f"validation {ch.validation}")
    for line in _outbound_summary(config):
        print(line)
    print(_time_rules(config))
    print(f"{args.config}: OK ({len(config.channels)} channel(s), database {config.database.url})")
    return EXIT_OK


def _time_rules(config: Config) -> str:
    """check-config's line for `ledger:` and `retention:`."""
    deadlines = ", ".join(f"{code} {days:g}" for code, days in config.ledger.deadlines.items())
    days = config.retention.message_bodies_days
    bodies = f"purged after {days:g} days" if days else "kept for ever"
    return (f"ledger: window {config.ledger.default_window_days} days when RF1-8 is empty, "
            f"deadlines to be scheduled {deadlines} days, swept every "
            f"{config.ledger.sweep_interval_minutes} minutes; message bodies {bodies}")


def _outbound_summary(config: Config) -> list[str]:
    """check-config's lines for destinations, routes and processes (none without routes)."""
    lines = []
    for d in config.destinations:
        where = f"mllp to {d.host}:{d.port}, ACK within {d.ack_timeout_s:g} s" \
            if d.type == "mllp" else f"file into {d.directory}"
        order = f"per_key {d.order_key}" if d.order_key else "strict"
        retry = f"every {d.retry_max_s:g} s" if d.retry_initial_s == d.retry_max_s else \
            f"{d.retry_initial_s:g}-{d.retry_max_s:g} s"
        lines.append(f"destination {d.name}: {where}, order {order}, retry {retry}, dead letter"
                     f" after {d.max_attempts} attempts")
    for r in config.routes:
        when = [f"type {', '.join(r.when.types)}"] if r.when.types else []
        when += [f"sender {', '.join(r.when.senders)}"] if r.when.senders else []
        when += [f"{path} = {value!r}" for path, value in r.when.fields]
        source = f"on {', '.join(r.on)}" if r.on else f"from {r.source}"
        lines.append(f"route {r.name}: {source}{' when ' + '; '.join(when) if when else ''}"
                     f"{f', {len(r.transform)} transform step(s)' if r.transform else ''}"
                     f" to {', '.join(r.to)}")
    if config.workers > 1 and config.destinations:
        lines.append(f"processes: {config.workers} (the main one accepts and delivers, "
                     f"{config.workers - 1} ingest{'s' if config.workers == 2 else ''})")
    elif config.workers > 1:
        lines.append(f"processes: {config.workers} (all ingest; the main one also accepts)")
    return lines


def cmd_purge(args: argparse.Namespace) -> int:
    """Retention by hand: the purge `run` does daily, `--older-than` overriding the config."""
    from engine.logs import audit, configure_logging
    from engine.store.retention import purge, returns_space, vacuum

    config = config_if_any(args)
    days = args.older_than if args.older_than is not None else (
        config.retention.message_bodies_days if config else None)
    if days is None:
        print("purge: retention is off (set `retention: {message_bodies_days: DAYS}` in "
              f"{args.config}, or give --older-than DAYS)", file=sys.stderr)
        return EXIT_CONFIG
    if not 0 < days <= 36500:  # NaN fails too
        print(f"--older-than: expected a number of days above 0 and at most 36500, got {days:g}",
              file=sys.stderr)
        return EXIT_CONFIG
    database, log_file = (config.database, config.log.file) if config else database_only(args)
    db = open_db(database)
    configure_logging(log_file or None, console=None)  # retention.purged goes to the log
    report = purge(db, utc_now(), days, dry_run=args.dry_run)
    verb = "would purge" if report.dry_run else "purged"
    print(f"{verb} {report.messages:,} message {'body' if report.messages == 1 else 'bodies'} "
          f"and {report.outbound:,} delivered/dead outbound "
          f"payload{'' if report.outbound == 1 else 's'} ({size_text(report.bytes)})")
    if report.dry_run:
        return EXIT_OK
    audit("audit.purge", older_than_days=days, messages=report.messages,
          outbound=report.outbound)
    if args.vacuum:
        print(_VACUUMED[vacuum(db)])
    elif report.bytes and db.dialect.name == "sqlite" and not returns_space(db):
        print("the freed space stays in the file for new messages; `hl7-engine purge --vacuum` "
              "gives it back to the file system (once; the engine's writes wait meanwhile)")
    return EXIT_OK


_VACUUMED = {
    "rebuilt": "vacuumed: the file was rebuilt; from now on each purge gives its space back",
    "incremental": "vacuumed: the free pages went back to the file system",
    "postgresql": "PostgreSQL: (auto)vacuum makes the space reusable; nothing to run",
}


def cmd_validate(args: argparse.Namespace) -> int:
    from engine.validation import validate

    worst = EXIT_OK
    for name in args.files:
        report = validate(Path(name).read_bytes())
        verdict = "OK" if not report.errors else f"{len(report.errors)} error(s)"
        print(f"{name}: {verdict}, {len(report.warnings)} warning(s)")
        for line in report.errors:
            print(f"  error: {line}")
        if args.warnings:
            for line in report.warnings:
                print(f"  warning: {line}")
        if report.errors:
            worst = EXIT_NOT_OK
    return worst
