"""`run`, `worker` and `reload`: the engine's process, its signals (SIGTERM/SIGINT stop it, SIGHUP
reloads its config) and its pid file.  What the process runs is the service tree of
`engine.service.make_service` (listeners, writer, delivery, web, the sweep and purge timers).

Both run loops (`run`, `worker`) are `task.react` on the engine's reactor (engine/mllp/reactor.py);
with `send` the only modules that run the global reactor.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from typing import TYPE_CHECKING, Any

from engine.cli.common import EXIT_CONFIG, EXIT_NOT_OK, EXIT_OK, config_of, open_db
from engine.config import Config, ConfigError, load_config
from engine.control import stop_once
from engine.errors import CannotListen

if TYPE_CHECKING:
    from twisted.internet import defer


def cmd_run(args: argparse.Namespace) -> int:
    """The engine: its service tree on the reactor until SIGTERM/SIGINT; SIGHUP reloads the
    config; the pid file beside the config says which process to signal."""
    from engine.mllp.reactor import install

    install()
    from twisted.internet import reactor

    from engine.control import pid_file, reload_on_sighup, remove_pid, write_pid
    from engine.logs import configure_logging
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
    pid = pid_file(args.config)
    write_pid(pid)
    reload_on_sighup(reactor, lambda: _run_config(args), top.apply)
    try:
        return _serve(reactor, top)
    finally:
        remove_pid(pid)
        db.dispose()


def _serve(reactor: Any, top: Any) -> int:
    """Run the service tree under `task.react` until a stop signal: logs flushed twice a
    second, the tree stopped (the writer drains) before the reactor ends.  EXIT_CONFIG when a
    listener cannot bind."""
    from twisted.internet import task

    from engine.logs import flush_logs

    try:
        task.react(_running, (top,))
    except SystemExit as done:  # react always ends so, with the exit code
        code = done.code
    flush_logs()
    return code if isinstance(code, int) else EXIT_NOT_OK


def _running(reactor: Any, top: Any) -> defer.Deferred[None]:
    """The engine once the reactor runs.  SIGTERM and SIGINT stop the reactor once (react's own
    handlers are replaced: a worker's lost parent stops it too, and a second stop would raise);
    the returned Deferred fails with SystemExit(EXIT_CONFIG) when a listener cannot bind, and
    otherwise never fires: a stop ends the reactor and react exits 0."""
    from twisted.internet import defer
    from twisted.internet.task import LoopingCall

    from engine.logs import emit, flush_logs

    flusher = LoopingCall(flush_logs)
    flusher.clock = reactor
    failed: defer.Deferred[None] = defer.Deferred()

    def start() -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda _signum, _frame: reactor.callFromThread(stop_once,
                                                                                 reactor))
        flusher.start(0.5, now=False)
        try:
            top.startService()
        except CannotListen as exc:  # a port in use: say so and stop, do not run half deaf
            print(exc, file=sys.stderr)
            emit("error", "mllp.listen_failed", {"channel": exc.channel, "host": exc.host,
                                                 "port": exc.port, "error": exc.reason})
            stop_once(reactor)
            failed.errback(SystemExit(EXIT_CONFIG))

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    return failed


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

    from engine.mllp.reactor import install

    install()
    from twisted.internet import reactor

    from engine.logs import configure_logging
    from engine.service import make_service
    from engine.store.database import open_database
    from engine.workers import die_with_parent

    die_with_parent()
    config = config_of(args)
    configure_logging(config.log.file, config.log.level, console_level="warning",
                      worker=args.index)
    db = open_database(config.database.url, config.database.sqlite_synchronous, migrate=False)
    top = make_service(config, reactor, db, link=socket.socket(fileno=args.link_fd))
    try:
        _serve(reactor, top)
    finally:
        db.dispose()
    return EXIT_OK
