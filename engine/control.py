"""Talking to a running engine: its pid file, and reloading its configuration on SIGHUP.

`hl7-engine run` writes its pid to a file beside its config (`channels.yaml` → `channels.pid`)
and removes it at exit; `hl7-engine reload` reads it and sends SIGHUP.  On SIGHUP the engine
reads its config file again: a file with errors changes nothing (`config.reload_failed`, with
the same YAML-path errors as `check-config`); a valid one is applied (`config.reloaded`, naming
what changed; engine/reload.py says what a reload can change).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.error import ReactorNotRunning

from engine.config import Config, ConfigError
from engine.logs import emit


def pid_file(config_path: str | Path) -> Path:
    """Where `run` with this config keeps its pid: beside the config, `<name>.pid`."""
    path = Path(config_path).resolve()
    return path.with_name(path.stem + ".pid")


def write_pid(path: Path) -> None:
    """Write our pid (replacing a stale file); it is removed at exit by `remove_pid`."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(path)


def remove_pid(path: Path) -> None:
    """Remove the pid file if it is still ours."""
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text().strip()) == os.getpid():
            path.unlink()


_STOPPING: set[int] = set()  # the reactors a stop was asked of (one per process)


def stop_once(reactor: Any) -> None:
    """Stop the reactor, once: SIGTERM, SIGINT and a worker's lost parent may all ask, and a
    second `reactor.stop()` would raise."""
    if reactor.running and id(reactor) not in _STOPPING:
        _STOPPING.add(id(reactor))
        with contextlib.suppress(ReactorNotRunning):  # Twisted's own handler stopped it first
            reactor.stop()


class NotRunning(Exception):
    """No engine is running with this config (no pid file, or its process is gone)."""


def send_reload(config_path: str | Path) -> int:
    """SIGHUP to the engine running with this config; its pid.  Raises NotRunning."""
    path = pid_file(config_path)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise NotRunning(f"no engine is running with {config_path} (no pid file at {path})"
                         ) from exc
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise NotRunning(f"no engine is running with {config_path} (pid {pid} in {path} is "
                         "gone)") from exc
    return pid


def reload_on_sighup(reactor: Any, load: Callable[[], Config],
                     apply: Callable[[Config], dict[str, object]]) -> None:
    """On SIGHUP, on the reactor thread: `load()` the config again and `apply` it (it returns
    what changed, for the log, or raises to refuse); log the outcome."""

    def reload() -> None:
        try:
            config = load()
        except ConfigError as exc:
            emit("error", "config.reload_failed", {"problems": exc.problems})
            return
        try:
            changed = apply(config)
        except Exception as exc:  # noqa: BLE001 - a refused reload changes nothing
            emit("error", "config.reload_failed", {"problems": [str(exc)]})
            return
        emit("info", "config.reloaded" if changed else "config.unchanged", dict(changed))

    def handler(_signum: int, _frame: Any) -> None:
        reactor.callFromThread(reload)

    signal.signal(signal.SIGHUP, handler)
