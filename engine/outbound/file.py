"""Delivery to file destinations: one file per queued row, named by its queue id.

A file is written under a temporary name, fsynced and renamed to `<queue id, 12 digits>.hl7`, so
names sort in queue order and a reader never sees half a file.  A row is marked delivered after
its file is in place: a crash in between writes the same file again under the same name
(at-least-once, idempotent).  Order, retries (twice a second), dead letters and the bookkeeping
are the queue worker's (`engine.outbound.queue`).  The write runs on the reactor's thread pool
(its fsync would block the reactor).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from engine.config import Destination
from engine.outbound.outcomes import Accepted, Errored, Outcome, Unreachable


@dataclass(frozen=True, slots=True)
class FileDestination:
    """A `file` destination: the directory its files go to."""

    name: str
    directory: str
    limit = 500  # rows a pass looks at

    @classmethod
    def of(cls, dest: Destination) -> FileDestination:
        return cls(dest.name, dest.directory)

    def deliverer(self, reactor: Any) -> FileDeliverer:
        return FileDeliverer(self, reactor)


class FileDeliverer:
    """Writes each payload as its own file; nothing is kept open between attempts."""

    def __init__(self, dest: FileDestination, reactor: Any) -> None:
        self.dest = dest
        self.reactor = reactor

    def deliver(self, row_id: int, payload: bytes) -> Deferred[Outcome]:
        pool = self.reactor.getThreadPool()
        return deferToThreadPool(self.reactor, pool, write, Path(self.dest.directory),
                                 f"{row_id:012d}.hl7", payload)

    def close(self, reason: str) -> None:
        """Nothing to drop: a write under way ends on its own."""


def write(directory: Path, name: str, payload: bytes) -> Outcome:
    """Write one file (blocking): Accepted, or why not."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / f".{name}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:  # the directory is unusable: no message is at fault
        return Unreachable(exc.strerror or type(exc).__name__)
    try:
        _write(fd, directory, name, payload)
    except OSError as exc:
        return Errored(exc.strerror or type(exc).__name__)
    return Accepted()


def _write(fd: int, directory: Path, name: str, payload: bytes) -> None:
    with open(fd, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(directory / f".{name}.tmp", directory / name)
