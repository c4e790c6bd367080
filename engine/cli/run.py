"""`run`, `worker` and `reload`: the engine's process, its signals (SIGTERM/SIGINT stop it, SIGHUP
reloads its config), its pid file, and the sweep and purge it runs on a timer.

The only module that imports the global reactor.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.config import Config, ConfigError, load_config
from engine.errors import CannotListen

if TYPE_CHECKING:

    pass
from engine.cli.common import EXIT_CONFIG, EXIT_NOT_OK, EXIT_OK, config_of, open_db, utc_now
from engine.cli.ledger import sweep_now


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
    db = open_db(config.database, create=True)
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
    config = config_of(args)
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
    config = config_of(args)
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
        expired, overdue, queued = sweep_now(db, config)
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

    d = deferToThreadPool(reactor, reactor.getThreadPool(), purge, db, utc_now(), days,
                          stopping=stopping)
    d.addErrback(lambda _failure: None)  # already logged as retention.purge_failed
    return None
