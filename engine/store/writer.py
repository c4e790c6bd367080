"""The group-commit writer: one thread that takes every job waiting, works them as one batch, and
hands the results back (HL7-SPEC §3 "committed before ACK"; DESIGN.md "Throughput design").

It knows neither HL7 nor Twisted: `work` turns a batch of jobs into results (one transaction),
and `deliver` runs a callable on the caller's thread (the reactor's `callFromThread`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import structlog

J = TypeVar("J")
R = TypeVar("R")

log = structlog.get_logger("engine.writer")
_STOP = object()


class GroupCommitWriter(Generic[J, R]):
    """Batches jobs for `work`; each job's `done` callback gets its result through `deliver`."""

    def __init__(
        self,
        work: Callable[[list[J]], list[R]],
        deliver: Callable[[Callable[[], None]], None],
        fail: Callable[[J, BaseException], R],
        max_batch: int = 1000,
        on_stop: Callable[[], None] | None = None,
        commit_delay_s: float = 0.0,
        expected: Callable[[], int] = lambda: 1,
    ) -> None:
        self._work = work
        self._deliver = deliver
        self._fail = fail
        self._max_batch = max_batch
        self._on_stop = on_stop
        self._commit_delay_s = commit_delay_s
        self._expected = expected
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.jobs = 0

    def expect(self, expected: Callable[[], int]) -> None:
        """How many jobs may be coming at once (read on the writer thread, an int)."""
        self._expected = expected

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="engine-writer", daemon=True)
        self._thread.start()

    def submit(self, job: J, done: Callable[[R], None]) -> None:
        self._queue.put((job, done))

    def stop(self, timeout: float = 30.0) -> None:
        """Finish every job already submitted, then end the thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            if self._on_stop is not None:
                self._on_stop()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stopping = self._gather(first)
            self._commit(batch)
            if stopping:
                return

    def _gather(self, first: object) -> tuple[list[tuple[J, Callable[[R], None]]], bool]:
        """Every job waiting; then, like PostgreSQL's commit_delay, wait up to `commit_delay_s`
        for more while fewer jobs are in hand than `expected()` (the open connections, each of
        which has at most one frame in work).  One fsync then serves more messages."""
        batch: list[object] = [first]
        deadline = 0.0
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if not self._commit_delay_s or len(batch) >= self._expected():
                    break
                now = time.monotonic()
                deadline = deadline or now + self._commit_delay_s
                if now >= deadline:
                    break
                try:
                    item = self._queue.get(timeout=deadline - now)
                except queue.Empty:
                    break
            if item is _STOP:
                return batch, True  # type: ignore[return-value]
            batch.append(item)
        return batch, False  # type: ignore[return-value]

    def _commit(self, batch: list[tuple[J, Callable[[R], None]]]) -> None:
        jobs = [job for job, _ in batch]
        try:
            results = self._work(jobs)
        except Exception as exc:  # the engine never dies on one batch: each job gets an answer
            log.exception("writer.batch_failed", batch=len(jobs), error=type(exc).__name__)
            results = [self._fail(job, exc) for job in jobs]
        self.batches += 1
        self.jobs += len(jobs)
        callbacks = [done for _, done in batch]

        def fire() -> None:
            for done, result in zip(callbacks, results, strict=True):
                done(result)

        self._deliver(fire)
