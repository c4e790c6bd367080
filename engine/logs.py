"""The message log: structlog events as JSON lines in a file, and readable lines on a terminal.

Event names are stable and dotted (`mllp.connection_opened`, `message.stored`); keys are flat.
Never log patient data: channel, peer, control id, type, size, digest, codes.
The file is created 0600.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pwd
import sys
import threading
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import structlog

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class TeeLogger:
    """Writes each event dict as one JSON line to a file and, at its own level, a readable line
    to the console.

    File lines are buffered (`flush` runs twice a second, at exit, and at once for warnings) and
    written whole, in one `write` on a descriptor opened O_APPEND: several engine processes
    (`workers:`) share the file without ever splitting each other's lines.

    Log rotation: each `flush` checks that `path` still names the open file; once it was renamed
    or removed (logrotate's default), the path is opened anew and `log.reopened` is its first
    line (lines still buffered go there too).  Every process does this on its own, so no signal has to reach the workers; with
    `copytruncate` nothing is needed (O_APPEND writes at the new end).
    """

    def __init__(self, file: int | None, console: TextIO | None, level: int,
                 console_level: int | None = None, worker: int = 0,
                 path: str | None = None) -> None:
        self._file = file
        self._path = path
        self._pending: list[str] = []
        self._console = console
        self._level = level
        self._console_level = level if console_level is None else console_level
        self._worker = worker
        self._lock = threading.Lock()
        self._render = structlog.dev.ConsoleRenderer(colors=False) if console else None
        self._dumps = json.JSONEncoder(default=str, separators=(",", ":")).encode

    def msg(self, event: dict[str, Any]) -> None:
        level = LEVELS.get(event.get("level", "info"), 20)
        if self._worker:
            event["worker"] = self._worker
        with self._lock:
            if self._file is not None and level >= self._level:
                self._pending.append(self._dumps(event) + "\n")
                if level >= 30 or len(self._pending) >= 512:
                    self._write()
            if self._render is not None and self._console and level >= self._console_level:
                self._console.write(str(self._render(None, "", dict(event))) + "\n")
                self._console.flush()

    debug = info = warning = error = critical = exception = log = msg

    def plain(self, level: int) -> bool:
        """An event at this level goes to the file only (no console line to render)."""
        return not (self._render is not None and self._console and level >= self._console_level)

    def line(self, level: int, members: str) -> None:
        """`msg` for an event already rendered: `members` is its JSON object's inside, in
        `msg`'s order; the worker number is added as `msg` adds it."""
        if self._worker:
            members += f',"worker":{self._worker}'
        with self._lock:
            if self._file is not None and level >= self._level:
                self._pending.append("{" + members + "}\n")
                if level >= 30 or len(self._pending) >= 512:
                    self._write()

    def flush(self) -> None:
        with self._lock:
            self._follow_path()
            self._write()

    def _follow_path(self) -> None:
        """After a rotation, open the path anew; what is pending goes to the new file, after a
        `log.reopened` line."""
        if self._path is None or self._file is None:
            return
        try:
            now = os.stat(self._path)
            was = os.fstat(self._file)
            if (now.st_ino, now.st_dev) == (was.st_ino, was.st_dev):
                return
        except FileNotFoundError:
            pass
        except OSError:
            return
        try:
            fresh = open_log(self._path)
        except OSError:
            return
        os.close(self._file)
        self._file = fresh
        event: dict[str, Any] = {"event": "log.reopened", "level": "info", "file": self._path,
                                 "ts": stamp()}
        if self._worker:
            event["worker"] = self._worker
        self._pending.insert(0, self._dumps(event) + "\n")

    def _write(self) -> None:
        if self._pending and self._file is not None:
            data, self._pending = "".join(self._pending).encode("utf-8"), []
            with contextlib.suppress(OSError):
                os.write(self._file, data)


def open_log(file: str) -> int:
    """The log file's descriptor: created 0600 (and its folder), every write appended.  A file
    that ends inside a line (a process killed while it wrote) gets a newline first, so this
    process's first line is not glued to the torn one."""
    path = Path(file)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with contextlib.suppress(OSError), path.open("rb") as f:  # unreadable: nothing to check
        if f.seek(0, os.SEEK_END):  # not empty: is its last byte a newline?
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                os.write(fd, b"\n")
    return fd


class _Stamp:
    """The events' `ts`: now, UTC, ISO 8601 to the millisecond, formatted once per millisecond
    (a batch's `message.stored` lines come in one burst and mostly share their stamp), its
    date and time of day once per second."""

    def __init__(self) -> None:
        self._last: tuple[int, str] = (-1, "")  # one tuple: threads swap it whole
        self._second: tuple[int, str] = (-1, "")  # the same, for the date and time of day

    def __call__(self) -> str:
        now = time.time()  # the clock datetime.now reads
        millisecond = int(now * 1000)
        last, text = self._last
        if millisecond != last:
            text = self.text(now)
            self._last = (millisecond, text)
        return text

    def text(self, now: float) -> str:
        """`datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")`: the
        microseconds rounded half to even as `fromtimestamp` rounds them, then cut to ms."""
        second = int(now)
        micro = round((now - second) * 1e6)
        if micro >= 1_000_000:
            second, micro = second + 1, micro - 1_000_000
        at, day_time = self._second
        if second != at:
            day_time = datetime.fromtimestamp(second, UTC).isoformat()[:19]
            self._second = (second, day_time)
        return f"{day_time}.{micro // 1000:03d}+00:00"


stamp = _Stamp()


def _timestamp(_logger: Any, _name: str,
               event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["ts"] = stamp()
    return event


def _hand_over(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Any:
    return (event,), {}


def configure_logging(file: str | None, level: str = "info", console: TextIO | None = sys.stderr,
                      console_level: str | None = None, worker: int = 0) -> None:
    """Send events to `file` (JSON lines, 0600) and to `console` (readable), filtered by level.
    A worker process (`worker` > 0) adds its number to each of its events."""
    out = open_log(file) if file else None
    lowest = LEVELS.get(level, 20)
    logger = TeeLogger(out, console, lowest,
                       LEVELS.get(console_level, 20) if console_level else None, worker,
                       path=file or None)
    _SINKS.append(logger)
    global _SINK
    _SINK = logger
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            _timestamp,
            _hand_over,
        ],
        logger_factory=lambda *_args: logger,
        cache_logger_on_first_use=True,
    )


_SINKS: list[TeeLogger] = []
_SINK: TeeLogger | None = None


def emit(level: str, event: str, fields: dict[str, Any]) -> None:
    """The per-message event, straight to the configured sink: the same JSON line as through
    structlog's processor chain, at a third of the cost.  Unconfigured (tests), it goes
    through structlog."""
    if _SINK is None:
        getattr(structlog.get_logger("engine.message"), level)(event, **fields)
        return
    fields["event"] = event
    fields["level"] = level
    fields["ts"] = stamp()
    _SINK.msg(fields)


def emit_rendered(event: str, members: str) -> bool:
    """An info event whose fields are already JSON object members (`quote` for strings), in
    the order `emit` writes them; False (nothing done) when it needs `emit`'s dict: logging is
    not configured, or a console shows info events."""
    sink = _SINK
    if sink is None or not sink.plain(20):
        return False
    sink.line(20, f'{members},"event":{quote(event)},"level":"info","ts":"{stamp()}"')
    return True


quote = json.encoder.encode_basestring_ascii  # a str as JSONEncoder writes it (ensure_ascii)


def flush_logs() -> None:
    """Write out buffered log lines (the engine calls this twice a second and at exit)."""
    for sink in _SINKS:
        sink.flush()


atexit.register(flush_logs)


def audit(event: str, user: str | None = None, **fields: Any) -> None:
    """An operator action that read a body or changed state, with the account that did it:
    `user` (a web API user's name), else the operating-system account running the command."""
    structlog.get_logger("engine.audit").warning(
        event, audit=True, user=audit_user() if user is None else user, **fields)


def audit_user() -> str:
    """The operating-system account running the command: the effective uid's name, or the uid
    itself when it has no passwd entry.  Never the environment (USER, LOGNAME, SUDO_USER), which
    anyone can set, nor the terminal's login name, which `sudo -u` does not change."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
