"""`hl7-engine`: the operator's command line (docs/cli.md describes what each command prints).

The only module that imports the global reactor.  Every command takes `--config PATH` (default
`channels.yaml`) and `--database URL` (overrides the config's `database`), before or after the
command name (after wins when both are given).  Exit codes: 0 done,
1 a message was not accepted or not found, 2 bad configuration or usage.

Output: every time is UTC, `2026-12-04T20:18:25Z` (`engine.timestamps`); `--json` prints an array
for a listing, one object for one item (`referral`, `show`, `report`), and JSON lines for `tail`.
Listings print at most `--limit` rows (default 50), and in text a last line saying how many more.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import Config, ConfigError, Database, load_config
from engine.errors import BodyPurged, CannotListen
from engine.ledger.lifecycle import STATUSES as REFERRAL_STATUSES
from engine.mllp.framing import COMMIT_ACK, COMMIT_NAK
from engine.timestamps import utc_text

if TYPE_CHECKING:
    import ssl

    from engine.mllp.blocking import MLLPClient

EXIT_OK, EXIT_NOT_OK, EXIT_CONFIG = 0, 1, 2
DEFAULT_LIMIT = 50  # rows a listing prints unless --limit says otherwise


_GLOBAL_OPTIONS = ("--config and --database may come before or after the command; given in both "
                   "places, the one after the command wins.")


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """--config and --database, on the main parser (with their defaults) and again on each
    command's parser.  A command's copies default to SUPPRESS: argparse copies a sub-parser's
    whole namespace over the main one's, so a default there would undo `--database URL COMMAND`."""
    wins = "; here it overrides one given before the command" if suppress else ""
    parser.add_argument("--config", default=argparse.SUPPRESS if suppress else "channels.yaml",
                        metavar="PATH",
                        help=f"channels.yaml to use (default: channels.yaml{wins})")
    parser.add_argument("--database", metavar="URL",
                        default=argparse.SUPPRESS if suppress else None,
                        help="database URL, overriding the config (sqlite:///FILE or "
                             f"postgresql+psycopg://USER@HOST/DB{wins})")


def _positive(text: str) -> int:
    """--limit's type: a whole number of rows, at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of rows, at least 1, got {text!r}")
    return value


def _limit_option(parser: argparse.ArgumentParser, *names: str) -> None:
    parser.add_argument(*names, "--limit", dest="limit", type=_positive, default=DEFAULT_LIMIT,
                        metavar="N", help="print at most N rows (default: %(default)s); the text "
                                          "output then says how many more there are")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    p = argparse.ArgumentParser(prog="hl7-engine",
                                description="HL7 v2 interface engine that tracks referrals.",
                                epilog=_GLOBAL_OPTIONS)
    _global_options(p, suppress=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", parents=[common], help="start every channel's MLLP listener")
    run.add_argument("--quiet", action="store_true",
                     help="terminal shows warnings only (the log file keeps everything)")
    run.add_argument("--workers", type=int, metavar="N",
                     help="processes, overriding the config's `workers:` (1-64; its default is 1, "
                          "or 2 with destinations)")
    worker = sub.add_parser("worker", parents=[common])  # started by `run`, not by hand
    worker.add_argument("--index", type=int, required=True)
    worker.add_argument("--link-fd", type=int, required=True)
    sub.add_parser("reload", parents=[common],
                   help="check the config, then have the engine running with it reload it "
                        "(SIGHUP; no restart, connections stay open)")
    sub.add_parser("check-config", parents=[common],
                   help="validate the configuration, print every problem with its YAML path")
    send = sub.add_parser("send", parents=[common], help="send HL7 files over MLLP, print ACKs")
    send.add_argument("files", nargs="+", metavar="FILE")
    send.add_argument("--to", required=True, metavar="HOST:PORT")
    send.add_argument("--timeout", type=float, default=10.0, metavar="S",
                      help="seconds to wait for each ACK (default: %(default)s)")
    send.add_argument("--as-is", action="store_true",
                      help="send the bytes unchanged (default: LF and CRLF become CR)")
    send.add_argument("--tls", action="store_true",
                      help="connect with TLS, trusting the system's certificate authorities")
    send.add_argument("--ca", metavar="PATH",
                      help="trust this CA certificate (PEM) instead of the system's; implies --tls")
    send.add_argument("--cert", metavar="PATH",
                      help="present this client certificate (PEM, leaf first) for mutual TLS; "
                           "needs --key; implies --tls")
    send.add_argument("--key", metavar="PATH",
                      help="the private key (PEM, not encrypted) of --cert")
    send.add_argument("--server-name", metavar="NAME",
                      help="the name the server's certificate must carry (default: the --to "
                           "host); implies --tls")
    tail = sub.add_parser("tail", parents=[common], help="the message log, newest last")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new messages")
    _limit_option(tail, "-n", "--lines")
    tail.add_argument("--channel")
    tail.add_argument("--type", metavar="TYPE^TRIGGER", help="e.g. REF^I12")
    tail.add_argument("--status", choices=["accepted", "errored", "rejected"])
    tail.add_argument("--json", action="store_true",
                      help="one JSON object per line (JSON lines), with or without -f")
    show = sub.add_parser("show", parents=[common], help="one stored message, with its ACK")
    show.add_argument("id", type=int)
    show.add_argument("--raw", action="store_true",
                      help="also print the message body (writes an audit event)")
    show.add_argument("--json", action="store_true")
    refs = sub.add_parser("referrals", parents=[common], help="the referral ledger")
    refs.add_argument("--status", choices=REFERRAL_STATUSES,
                      help="only referrals in this status")
    refs.add_argument("--overdue", action="store_true",
                      help="only pending/accepted referrals past their deadline to be scheduled")
    refs.add_argument("--json", action="store_true")
    _limit_option(refs)
    one = sub.add_parser("referral", parents=[common], help="one referral with its history")
    one.add_argument("id", metavar="ID", help="any of its keys, as EI text: MFP-R-1001^PCPEHR")
    one.add_argument("--json", action="store_true")
    appts = sub.add_parser("appointments", parents=[common], help="appointments and their match")
    appts.add_argument("--json", action="store_true")
    _limit_option(appts)
    work = sub.add_parser("worklist", parents=[common],
                          help="what waits for a person, oldest first: unmatched and ambiguous "
                               "appointments, then no-shows to rebook; each with why and what "
                               "clears it")
    work.add_argument("--json", action="store_true")
    _limit_option(work)
    link = sub.add_parser("link", parents=[common],
                          help="link an appointment to a referral by hand (history: via manual)")
    link.add_argument("appointment", metavar="APPOINTMENT")
    link.add_argument("referral", metavar="REFERRAL")
    val = sub.add_parser("validate", parents=[common],
                         help="check files against the HL7 standard's structure (hl7apy)")
    val.add_argument("files", nargs="+", metavar="FILE")
    val.add_argument("--warnings", action="store_true", help="also print hl7apy's warnings")
    queue = sub.add_parser("queue", parents=[common],
                           help="per destination: state, depth, oldest age, dead letters")
    queue.add_argument("--json", action="store_true")
    for verb, text in (("pause", "stop sending to a destination (its queue keeps filling)"),
                       ("resume", "send to a paused destination again"),
                       ("retry", "retry a destination's head now, resetting its backoff")):
        act = sub.add_parser(verb, parents=[common], help=text)
        act.add_argument("destination", metavar="DEST")
    rel = sub.add_parser("release", parents=[common], help="queue dead letters again")
    rel.add_argument("destination", metavar="DEST")
    rel.add_argument("id", nargs="?", type=int, metavar="ID", help="one queue id (default: all)")
    rep = sub.add_parser("replay", parents=[common],
                         help="queue a stored message again: through its channel's routes as "
                              "configured now, or as received to one destination (--to)")
    rep.add_argument("message_id", type=int, metavar="MESSAGE_ID")
    rep.add_argument("--to", metavar="DEST",
                     help="send the bytes as received to this destination, whatever the routes "
                          "say (default: through the routes, filters and transforms)")
    report = sub.add_parser(
        "report", parents=[common],
        help="of the referrals received in a period: booked, how fast, seen, loop closed, lost",
        epilog="How each figure is counted: README.md \"The referral report\", or "
               "`python -m pydoc engine.ledger.report`.")
    report.add_argument("--since", metavar="DATE",
                        help="first day of the cohort (by received_at), YYYY-MM-DD, UTC midnight "
                             "(default: 90 days before --until)")
    report.add_argument("--until", metavar="DATE",
                        help="the day after the cohort (excluded), YYYY-MM-DD, UTC midnight "
                             "(default: now)")
    report.add_argument("--by", choices=["specialty", "source", "priority"],
                        help="the same figures per group, and the total")
    report.add_argument("--json", action="store_true")
    sub.add_parser("sweep", parents=[common],
                   help="expire pending/accepted referrals past RF1-8 and report overdue ones "
                        "(run also daily by `run`)")
    purge = sub.add_parser("purge", parents=[common],
                           help="empty message bodies and delivered/dead outbound payloads "
                                "older than the retention (run also daily by `run` when "
                                "retention.message_bodies_days is set)")
    purge.add_argument("--older-than", type=float, metavar="DAYS",
                       help="purge bodies older than this (default: the config's "
                            "retention.message_bodies_days)")
    purge.add_argument("--dry-run", action="store_true",
                       help="only count what would be purged; change nothing")
    purge.add_argument("--vacuum", action="store_true",
                       help="SQLite: also give the freed space back to the file system; a file "
                            "made before retention existed is rebuilt once (VACUUM), which needs "
                            "the database to itself briefly: the engine's writes wait meanwhile")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {
        "run": cmd_run, "worker": cmd_worker, "reload": cmd_reload, "check-config": cmd_check_config, "send": cmd_send,
        "tail": cmd_tail, "show": cmd_show, "referrals": cmd_referrals,
        "referral": cmd_referral, "appointments": cmd_appointments, "worklist": cmd_worklist,
        "link": cmd_link, "report": cmd_report, "sweep": cmd_sweep, "purge": cmd_purge, "validate": cmd_validate,
        "queue": cmd_queue,
        "pause": cmd_queue_action, "resume": cmd_queue_action, "retry": cmd_queue_action,
        "release": cmd_queue_action, "replay": cmd_queue_action,
    }[args.command]
    try:
        return int(handler(args))
    except BrokenPipeError:  # `hl7-engine tail | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:
        if not _database_error(exc):
            raise
        print(f"database: {_reason(exc)}", file=sys.stderr)
        return EXIT_CONFIG


def _database_error(exc: Exception) -> bool:
    """Is it SQLAlchemy's (the database cannot be reached, or the URL is wrong)?  Checked
    without importing SQLAlchemy, which `--help` and `send` never need."""
    errors = sys.modules.get("sqlalchemy.exc")
    return errors is not None and isinstance(exc, errors.SQLAlchemyError)


def _reason(exc: Exception) -> str:
    """The driver's own words (first line; never the URL, which may hold a password)."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


# --- configuration and database --------------------------------------------------------------


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    if args.database:
        database = dataclasses.replace(config.database, url=args.database)
        config = dataclasses.replace(config, database=database)
    return config


def _database_only(args: argparse.Namespace) -> tuple[Database, str]:
    """For read commands: the config's database (and log file), or --database alone."""
    if args.database and not Path(args.config).exists():
        return Database(args.database), ""
    config = _config(args)
    return config.database, config.log.file


def _open(database: Database, create: bool = False) -> Any:
    """The database, migrated.  Only `run` may `create` a SQLite file: the other commands read
    or change an engine's database, and a new empty one would hide a wrong path."""
    from engine.store.database import open_database

    if not create:
        _must_exist(database.url)
    try:
        return open_database(database.url, database.sqlite_synchronous)
    except OSError as exc:  # the SQLite file's folder cannot be made
        raise ConfigError([f"database: cannot open {exc.filename or database.url} "
                           f"({exc.strerror or type(exc).__name__})"]) from exc


def _must_exist(url: str) -> None:
    """A ConfigError when `url` names a SQLite file that is not there."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database).absolute()
    if not path.exists():
        raise ConfigError([f"no database at {path} (is the engine configured with this file?)"])


# --- commands --------------------------------------------------------------------------------


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


def cmd_run(args: argparse.Namespace) -> int:
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall

    from engine.control import pid_file, reload_on_sighup, remove_pid, write_pid
    from engine.logs import configure_logging, emit, flush_logs
    from engine.service import make_service

    if args.workers is not None and not 1 <= args.workers <= 64:
        print(f"--workers: expected 1-64, got {args.workers}", file=sys.stderr)
        return EXIT_CONFIG
    config = _run_config(args)
    configure_logging(config.log.file, config.log.level,
                      console_level="warning" if args.quiet else config.log.level)
    db = _open(config.database, create=True)
    worker_argv = ["--config", args.config, "--database", config.database.url]
    top = make_service(config, reactor, db, worker_argv)
    r: Any = reactor
    pid = pid_file(args.config)
    write_pid(pid)
    reload_on_sighup(r, lambda: _run_config(args), top.apply)
    flusher = LoopingCall(flush_logs)
    flusher.clock = r
    r.callWhenRunning(flusher.start, 0.5, now=False)
    exit_code = [EXIT_OK]
    sweeper = LoopingCall(lambda: _sweep_in_thread(r, db, top.config))  # reloads apply
    sweeper.clock = r
    purger = _daily_purge(r, db, lambda: top.config)

    def start() -> None:
        try:
            top.startService()
        except CannotListen as exc:  # a port in use: say so and stop, do not run half deaf
            print(exc, file=sys.stderr)
            emit("error", "mllp.listen_failed", {"channel": exc.channel, "host": exc.host,
                                                 "port": exc.port, "error": exc.reason})
            exit_code[0] = EXIT_CONFIG
            _stop(r)
            return
        sweeper.start(60 * config.ledger.sweep_interval_minutes, now=True)  # at start too
        if purger is not None:
            purger.start(86400, now=True)  # at start, then daily

    r.callWhenRunning(start)
    r.addSystemEventTrigger("before", "shutdown", top.stopService)
    _stop_on_signals(r)
    r.run(installSignalHandlers=False)
    remove_pid(pid)
    db.dispose()
    return exit_code[0]


def _run_config(args: argparse.Namespace) -> Config:
    """`run`'s configuration: the file, with --database and --workers applied (a reload
    reads it the same way)."""
    config = _config(args)
    if args.workers is not None:
        config = dataclasses.replace(config, workers=args.workers)
    return config


def cmd_reload(args: argparse.Namespace) -> int:
    """Check the config file, then signal the engine running with it to reload it (SIGHUP)."""
    from engine.control import NotRunning, send_reload

    try:
        load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{args.config}: not reloaded (fix the errors above)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        pid = send_reload(args.config)
    except NotRunning as exc:
        print(exc, file=sys.stderr)
        return EXIT_NOT_OK
    print(f"asked the engine (pid {pid}) to reload {args.config}; its log says "
          "config.reloaded, or config.reload_failed and why")
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    """An ingest worker (engine/workers.py): started by `run` with one end of a socket pair."""
    import socket

    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall

    from engine.logs import configure_logging, flush_logs
    from engine.service import make_service
    from engine.store.database import open_database
    from engine.workers import die_with_parent

    die_with_parent()
    config = _config(args)
    configure_logging(config.log.file, config.log.level, console_level="warning",
                      worker=args.index)
    db = open_database(config.database.url, config.database.sqlite_synchronous, migrate=False)
    top = make_service(config, reactor, db, link=socket.socket(fileno=args.link_fd))
    r: Any = reactor
    flusher = LoopingCall(flush_logs)
    flusher.clock = r
    r.callWhenRunning(flusher.start, 0.5, now=False)
    r.callWhenRunning(top.startService)
    r.addSystemEventTrigger("before", "shutdown", top.stopService)
    _stop_on_signals(r)
    r.run(installSignalHandlers=False)
    flush_logs()
    db.dispose()
    return EXIT_OK


def _stop(reactor: Any) -> None:
    """Stop the reactor once (the writer drains first)."""
    if reactor.running and not getattr(reactor, "_stopping", False):
        reactor._stopping = True
        reactor.stop()


def _stop_on_signals(reactor: Any) -> None:
    """SIGTERM and SIGINT stop the reactor once (the writer drains first); a second signal, as
    `make` and a terminal both send, is not an error."""
    import signal

    def handler(_signum: int, _frame: Any) -> None:
        reactor.callFromThread(_stop, reactor)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _sweep_in_thread(reactor: Any, db: Any, config: Config) -> Any:
    """The periodic sweep (expiry, overdue, their referral events), off the reactor, on its own
    connection."""
    from twisted.internet.threads import deferToThreadPool

    from engine.logs import emit

    def work() -> None:
        expired, overdue, queued = _sweep(db, config)
        emit("info", "ledger.sweep", {"expired": len(expired), "overdue": len(overdue),
                                      "events_queued": queued})

    def failed(failure: Any) -> None:
        emit("error", "ledger.sweep_failed", {"error": failure.type.__name__})

    d = deferToThreadPool(reactor, reactor.getThreadPool(), work)
    d.addErrback(failed)
    return None


def _daily_purge(reactor: Any, db: Any, config: Callable[[], Config]) -> Any:
    """The retention purge `run` starts with the sweep (a LoopingCall); each run reads the
    current config's `retention.message_bodies_days` (a reload may set or clear it) and does
    nothing without one."""
    from twisted.internet.task import LoopingCall

    def tick() -> None:
        days = config().retention.message_bodies_days
        if days is not None:
            _purge_in_thread(reactor, db, days)

    purger = LoopingCall(tick)
    purger.clock = reactor
    return purger


def _purge_in_thread(reactor: Any, db: Any, days: float) -> Any:
    """The daily purge, off the reactor like the sweep, on its own connection; it stops between
    two chunks when the engine stops.  `purge` logs `retention.purged` and
    `retention.purge_failed` itself."""
    from twisted.internet.threads import deferToThreadPool

    from engine.store.retention import purge

    def stopping() -> bool:
        return bool(getattr(reactor, "_stopping", False))

    d = deferToThreadPool(reactor, reactor.getThreadPool(), purge, db, _now(), days,
                          stopping=stopping)
    d.addErrback(lambda _failure: None)  # already logged as retention.purge_failed
    return None


def cmd_send(args: argparse.Namespace) -> int:
    from engine.mllp.blocking import MLLPClient

    host, _, port = args.to.rpartition(":")
    if not host or not port.isdigit():
        print(f"--to: expected HOST:PORT, got {args.to!r}", file=sys.stderr)
        return EXIT_CONFIG
    payloads: list[tuple[str, bytes]] = []
    for name in args.files:  # every file is read before anything is sent
        try:
            payloads.append((name, Path(name).read_bytes()))
        except OSError as exc:
            print(f"{name}: cannot read ({exc.strerror or type(exc).__name__})", file=sys.stderr)
    if len(payloads) < len(args.files):
        return EXIT_CONFIG
    context = _tls_context(args)
    try:
        client = MLLPClient(host, int(port), args.timeout, context, args.server_name)
    except OSError as exc:
        return _send_failed(args, exc, None)
    with client:
        try:
            return _send_all(client, payloads, args)
        except OSError as exc:
            return _send_failed(args, exc, client.frames > 0)


def _send_failed(args: argparse.Namespace, exc: OSError, answered: bool | None) -> int:
    """One stderr line for a connection that failed while opening (`answered` None) or later,
    before or after its first ACK.  TLS 1.3 shows a refused client certificate at the first
    read, so a TLS error before any ACK is a failed handshake too."""
    import ssl

    tls = isinstance(exc, ssl.SSLError)
    reason = _ssl_reason(exc) if isinstance(exc, ssl.SSLError) else (
        exc.strerror or type(exc).__name__)  # (isinstance again: mypy narrows on it)
    if tls and not answered:
        print(f"--to {args.to}: TLS handshake failed ({reason})", file=sys.stderr)
        return EXIT_CONFIG
    if answered is None:
        print(f"--to {args.to}: cannot connect ({reason})", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.to}: connection lost ({'TLS: ' if tls else ''}{reason})", file=sys.stderr)
    return EXIT_NOT_OK


class _EncryptedKey(Exception):
    """--key asks for a passphrase: `send` never prompts for one."""


def _no_passphrase() -> str:
    raise _EncryptedKey


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """`send`'s TLS: None without any TLS option.  The server's certificate must chain to
    --ca (or a system CA) and name --server-name (or the --to host).  A file that will not do
    is a ConfigError naming the option and the file."""
    import ssl

    if not (args.tls or args.ca or args.cert or args.key or args.server_name):
        return None
    if bool(args.cert) != bool(args.key):
        raise ConfigError(["--cert needs --key" if args.cert else "--key needs --cert"])
    for option, path in (("--ca", args.ca), ("--cert", args.cert), ("--key", args.key)):
        if path:
            _check_pem(option, path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if args.ca:
        _load_certificates(context, "--ca", args.ca, "CA certificate")
    else:
        context.load_default_certs()
    if args.cert:
        _load_certificates(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), "--cert", args.cert,
                           "certificate")
        try:
            context.load_cert_chain(args.cert, args.key, password=_no_passphrase)
        except _EncryptedKey:
            raise ConfigError([f"--key {args.key}: encrypted (give an unencrypted key)"]) from None
        except ssl.SSLError as exc:
            raise ConfigError([f"--key {args.key}: does not match the certificate in --cert"
                               if exc.reason == "KEY_VALUES_MISMATCH"
                               else f"--key {args.key}: not a valid private key"]) from None
    return context


def _check_pem(option: str, path: str) -> None:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{option} {path}: cannot read "
                           f"({exc.strerror or type(exc).__name__})"]) from None
    if b"-----BEGIN " not in data:
        raise ConfigError([f"{option} {path}: not a PEM file"])


def _load_certificates(context: ssl.SSLContext, option: str, path: str, what: str) -> None:
    import ssl

    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError:
        raise ConfigError([f"{option} {path}: not a valid {what}"]) from None


def _ssl_reason(exc: ssl.SSLError) -> str:
    """OpenSSL's words without their codes: "[SSL: X] certificate verify failed: ... (_ssl.c:1)"
    becomes "certificate verify failed: ..."."""
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    text = re.sub(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$", "", str(exc.strerror or exc))
    return text or type(exc).__name__


def _send_all(client: MLLPClient, payloads: list[tuple[str, bytes]], args: argparse.Namespace) -> int:
    """Send each file in turn and print its ACKs (MSA-1, MSA-2, ERR-3); 1 if any was not AA/CA."""
    worst = EXIT_OK
    for name, payload in payloads:
        if not args.as_is:
            payload = payload.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
        expected = _expected_acks(payload)
        wait = args.timeout if expected else min(args.timeout, 1.0)
        acks = client.exchange(payload, 1, wait)
        if acks and acks[0] in _COMMIT_WORDS:  # MLLP release 2: the transport's answer first
            print(f"{name}: {_COMMIT_WORDS[acks[0]]}")
            worst = worst if acks[0] == COMMIT_ACK else EXIT_NOT_OK
            acks = client.receive(1, wait)
        if acks and expected > 1 and _ack_fields(acks[0])[0] == "CA":
            acks += client.receive(1, args.timeout)  # the application ACK follows a CA
        if not acks and client.closed:  # the rest cannot be sent either
            print(f"{name}: no ACK (the connection was closed by {args.to})")
            return EXIT_NOT_OK
        if not acks:
            print(f"{name}: no ACK" + (" (MSH-15/16 ask for none)" if not expected
                                       else f" within {args.timeout:g} s"))
            worst = worst if not expected else EXIT_NOT_OK
        for ack in acks:
            msa1, msa2, err3 = _ack_fields(ack)
            print(f"{name}: {msa1} {msa2} {err3}".rstrip())
            if msa1 not in ("AA", "CA"):
                worst = EXIT_NOT_OK
    return worst


_COMMIT_WORDS = {COMMIT_ACK: "MLLP commit ACK (stored)", COMMIT_NAK: "MLLP commit NAK (not stored)"}


def _expected_acks(payload: bytes) -> int:
    from engine.ack import ACCEPTED, ack_codes
    from engine.errors import HL7Error
    from engine.parsing import parse

    try:
        msg = parse(payload)
    except HL7Error:
        return 1
    msh15, msh16 = msg.get("MSH.15"), msg.get("MSH.16")
    if not msh15 and not msh16:
        return 1
    # The most ACKs the receiver may send: accept ACK unless NE, application ACK unless NE.
    return len(ack_codes(ACCEPTED, msh15 or "AL", "AL" if msh16 not in ("", "NE") else "NE")) \
        if msh15 != "NE" else int(msh16 not in ("", "NE"))


def _ack_fields(ack: bytes) -> tuple[str, str, str]:
    from engine.errors import HL7Error
    from engine.parsing import parse

    try:
        msg = parse(ack)
    except HL7Error:
        return "?", "", "(unreadable ACK)"
    return msg.get("MSA.1"), msg.get("MSA.2"), msg.get("ERR.3") or msg.get("ERR.1.4")


def cmd_tail(args: argparse.Namespace) -> int:
    from engine.routes.delivery import delivery_lines
    from engine.store.messages import count_rows, log_rows

    database, _ = _database_only(args)
    db = _open(database)
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
        _print_more(more)  # older messages: the listing shows the newest
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


def _log_record(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "received_at": utc_text(row.received_at),
        "channel": row.channel,
        "peer": row.peer,
        "sender": f"{row.sending_application}^{row.sending_facility}".strip("^"),
        "type": row.message_type,
        "control_id": row.control_id,
        "version": row.version,
        "size": row.size,
        "digest": row.digest,
        "status": row.status,
        "ack": row.ack_codes,
        "error_code": row.error_code,
        "error_location": row.error_location,
        "error_text": row.error_text,
        "control_id_reused": bool(row.control_id_reused),
        "retransmissions": row.retransmissions,
        "ledger_effect": row.ledger_effect,
    }


def _log_line(row: Any, as_json: bool, sent: list[str] | None = None) -> str:
    rec = _log_record(row)
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
    from engine.ledger.views import changes_of_message
    from engine.logs import audit, configure_logging
    from engine.parsing.parser import decode
    from engine.routes.delivery import deliveries_of
    from engine.store.messages import message_row
    from engine.store.relayed import relayed_of

    database, log_file = _database_only(args)
    db = _open(database)
    with db.connect() as conn:
        row = message_row(conn, args.id, with_raw=args.raw)
        changes = changes_of_message(conn, args.id)
        sent = deliveries_of(conn, args.id)
        relayed = relayed_of(conn, args.id)
    if row is None:
        print(f"no message with id {args.id}", file=sys.stderr)
        return EXIT_NOT_OK
    rec = _log_record(row)
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
    _print_labelled([(key, value) for key, value in rec.items()
                     if key not in ("raw", "ledger_changes", "deliveries", "relayed_acks")
                     and not (key == "purged_at" and value is None)])
    if changes:
        print("\nledger changes")
        _print_table([_history_row({**c, "message_id": None, "control_id": None})
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


# --- the ledger ------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _print_rows(rows: list[dict[str, Any]], columns: list[str], as_json: bool,
                more: int = 0, headers: list[str] | None = None) -> None:
    """A listing: the JSON contract (an array) with `--json`, else an aligned table of
    `columns` (headed `headers`) and, when the limit left `more` rows out, a line saying so."""
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    _print_table(rows, columns, headers)
    _print_more(more)


def _print_more(more: int) -> None:
    """The last line of a listing cut at --limit (text only)."""
    if more > 0:
        print(f"… {more:,} more; use --limit")


def _cell(value: Any) -> str:
    """A value as a table or a labelled line shows it: '-' for nothing, lists joined with
    ', ', yes/no for booleans; never a Python repr."""
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    return str(value)


def _print_table(rows: list[dict[str, Any]], columns: list[str],
                 headers: list[str] | None = None) -> None:
    """Aligned columns (`headers` instead of the column names when given)."""
    if not rows:  # a header alone reads like a broken command
        print("(none)")
        return
    table = [headers or columns] + [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _print_labelled(pairs: list[tuple[str, Any]]) -> None:
    """`label  value` lines, the values aligned."""
    width = max(len(label) for label, _ in pairs)
    for label, value in pairs:
        print(f"{label:<{width}}  {_cell(value)}")


def cmd_referrals(args: argparse.Namespace) -> int:
    from engine.ledger.views import count_referrals, list_referrals

    db = _open(_database_only(args)[0])
    now = _now()
    overdue_at = now if args.overdue else None
    with db.connect() as conn:
        rows = list_referrals(conn, status=args.status, overdue_at=overdue_at,
                              limit=args.limit, now=now)
        total = count_referrals(conn, status=args.status, overdue_at=overdue_at)
    columns = ["id", "status", "source", "priority", "specialty", "patient_ids",
               "appointments", "received_at", "due_at"]
    _print_rows(rows, columns + (["days_overdue"] if args.overdue else []), args.json,
                total - len(rows))
    return EXIT_OK


def cmd_referral(args: argparse.Namespace) -> int:
    from engine.ledger.views import find_referral
    from engine.mappings.changes import EI

    db = _open(_database_only(args)[0])
    with db.connect() as conn:
        found = find_referral(conn, EI.parse(args.id), _now())
    if found is None:
        print(f"no referral {args.id}", file=sys.stderr)
        return EXIT_NOT_OK
    if args.json:
        print(json.dumps(found, indent=2))
        return EXIT_OK
    _print_labelled(_referral_lines(found))
    print("\nhistory")
    _print_table([_history_row(h) for h in found["history"]],
                 ["at", "event", "change", "appointment", "message", "note"],
                 ["time", "event", "before → after", "appointment", "message", "note"])
    if found["events"]:
        print("\nevent messages sent")
        _print_table(found["events"], ["created_at", "event", "destination", "queue_id",
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


def _history_row(h: dict[str, Any]) -> dict[str, Any]:
    """A history row for the text table: the status change as `before → after` and the message
    as `#id control-id`."""
    before, after = h["status_before"], h["status_after"]
    change = None if before is None and after is None else f"{before or '-'} → {after or '-'}"
    message = " ".join(part for part in (f"#{h['message_id']}" if h["message_id"] else "",
                                         h["control_id"] or "") if part)
    return {**h, "change": change, "message": message, "note": h["rule"]}


def cmd_appointments(args: argparse.Namespace) -> int:
    from engine.ledger.views import count_appointments, list_appointments

    db = _open(_database_only(args)[0])
    with db.connect() as conn:
        rows = list_appointments(conn, limit=args.limit)
        total = count_appointments(conn)
    _print_rows(rows, ["id", "status", "start", "duration_min", "specialty", "match",
                       "referral", "via", "candidates"], args.json, total - len(rows))
    return EXIT_OK


def cmd_worklist(args: argparse.Namespace) -> int:
    """Unmatched and ambiguous appointments, then no-shows to rebook: why each is there and
    what clears it (engine.ledger.worklist)."""
    from engine.ledger import worklist

    config = _config_if_any(args)
    database = config.database if config else _database_only(args)[0]
    days = config.ledger.default_window_days if config else worklist.DEFAULT_WINDOW_DAYS
    db = _open(database)
    with db.connect() as conn:
        rows = worklist.worklist(conn, _now(), limit=args.limit, window_days=days)
        total = worklist.count(conn)
    _print_rows(rows, ["id", "start", "patient_ids", "reason", "action"], args.json,
                total - len(rows), ["appointment", "start", "patient ids", "reason", "action"])
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """The referral report: figures over the referrals received in [--since, --until)."""
    from engine.ledger.report import PeriodError, build_report, period, tables

    now = _now()
    try:
        cohort = period(now, args.since, args.until)
    except PeriodError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    db = _open(_database_only(args)[0])
    with db.connect() as conn:
        if conn.dialect.name == "postgresql":  # its queries see one snapshot (SQLite's do)
            conn.execution_options(isolation_level="REPEATABLE READ")
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
        _print_table(rows, columns)
    return EXIT_OK


def cmd_link(args: argparse.Namespace) -> int:
    from engine.ledger.apply import link_manually
    from engine.logs import audit, configure_logging
    from engine.mappings.changes import EI

    config = _config_if_any(args)
    database, log_file = (config.database, config.log.file) if config else _database_only(args)
    router = _event_router(config)
    db = _open(database)
    try:
        with db.begin() as conn:
            events: list[tuple[int, str]] | None = [] if router else None
            now = _now()
            effect = link_manually(conn, EI.parse(args.appointment), EI.parse(args.referral),
                                   now, events)
            if router and events:
                router.queue(conn, events, None, now)
    except LookupError as exc:
        print(str(exc).strip("'\""), file=sys.stderr)
        return EXIT_NOT_OK
    configure_logging(log_file or None, console=None)
    audit("audit.manual_link", appointment=args.appointment, referral=args.referral)
    print(effect)
    return EXIT_OK


def cmd_sweep(args: argparse.Namespace) -> int:
    """The periodic sweep by hand: it changes referrals, so it is audited (`audit.sweep`)."""
    from engine.logs import audit, configure_logging

    config = _config_if_any(args)
    database, log_file = (config.database, config.log.file) if config else _database_only(args)
    db = _open(database)
    expired, overdue, queued = _sweep(db, config)
    configure_logging(log_file or None, console=None)
    audit("audit.sweep", expired=len(expired), overdue=len(overdue), events_queued=queued)
    for line in expired + overdue:
        print(line)
    print(f"{len(expired)} referral(s) expired, {len(overdue)} newly overdue, "
          f"{queued} event message(s) queued")
    return EXIT_OK


def _sweep(db: Any, config: Config | None) -> tuple[list[str], list[str], int]:
    """Expiry, then the once-only overdue notice, and the `on:` routes' rows for both, in
    chunked transactions: (expired lines, overdue lines, rows queued)."""
    from engine.ledger.apply import LedgerSettings
    from engine.ledger.sweep import run_sweep

    now = _now()
    router = _event_router(config)
    queue = (lambda conn, events: router.queue(conn, events, None, now)) if router else None
    return run_sweep(db, now, config.ledger if config else LedgerSettings(), queue)


def cmd_purge(args: argparse.Namespace) -> int:
    """Retention by hand: the purge `run` does daily, `--older-than` overriding the config."""
    from engine.logs import audit, configure_logging
    from engine.store.retention import purge, returns_space, vacuum

    config = _config_if_any(args)
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
    database, log_file = (config.database, config.log.file) if config else _database_only(args)
    db = _open(database)
    configure_logging(log_file or None, console=None)  # retention.purged goes to the log
    report = purge(db, _now(), days, dry_run=args.dry_run)
    verb = "would purge" if report.dry_run else "purged"
    print(f"{verb} {report.messages:,} message {'body' if report.messages == 1 else 'bodies'} "
          f"and {report.outbound:,} delivered/dead outbound "
          f"payload{'' if report.outbound == 1 else 's'} ({_size(report.bytes)})")
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


def _size(count: int) -> str:
    """Bytes as people read them: 2.1 MB."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def _config_if_any(args: argparse.Namespace) -> Config | None:
    """The configuration, or None when only --database was given and there is no config file."""
    if args.database and not Path(args.config).exists():
        return None
    return _config(args)


def _event_router(config: Config | None) -> Any:
    """The `on:` routes (engine.routes.event_queue.EventRouter), or None without any."""
    if config is None:
        return None
    from engine.routes.event_queue import EventRouter

    router = EventRouter.of(config.routes, [(ch.name, ch.ack.application, ch.ack.facility)
                                            for ch in config.channels])
    return router.keyed(config.destinations) if router is not None else None


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


def cmd_queue(args: argparse.Namespace) -> int:
    from engine.routes.delivery import queue_state

    config = _config(args)
    db = _open(config.database)
    rows = queue_state(db, config.destinations, _now())
    _print_rows(rows, ["destination", "type", "order", "state", "depth", "oldest_age_s",
                       "delivered", "dead_letters", "held_keys", "last_error"], args.json)
    return EXIT_OK


def cmd_queue_action(args: argparse.Namespace) -> int:
    """pause, resume, retry, release, replay: state changes, each audited."""
    from engine.logs import audit, configure_logging
    from engine.routes import operator

    config = _config(args)
    if args.command == "replay" and args.to is None:
        return _replay_routed(args, config)
    names = {d.name for d in config.destinations}
    dest = args.to if args.command == "replay" else args.destination
    if dest not in names:
        print(f"no destination {dest!r} in {args.config} "
              f"(known: {', '.join(sorted(names)) or 'none'})", file=sys.stderr)
        return EXIT_NOT_OK
    db = _open(config.database)
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
                queued = operator.replay(conn, args.message_id, dest, _now(), key_path)
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

    db = _open(config.database)
    with db.begin() as conn:
        try:
            queued = operator.replay_routed(conn, args.message_id, config, _now())
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
