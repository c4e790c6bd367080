"""The group-commit writer: one thread that takes every job waiting, works them as one batch, and
hands the results back (docs/architecture.md: committed before the ACK).

It knows neither HL7 nor Twisted: `work` turns a batch of jobs into results (one transaction),
and `deliver` runs a callable on the caller's thread (the reactor's `callFromThread`).
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import structlog

J = TypeVar("J")
R = TypeVar("R")

log = structlog.get_logger("engine.writer")
_STOP = object()
_IDLE_S = 1.0  # an idle writer still beats this often (readiness checks read `beat`)
_NEVER = sys.maxsize  # `_enough` while the writer waits for no batch to fill


class GroupCommitWriter(Generic[J, R]):
    """Batches jobs for `work`; each job's `done` callback gets its result through `deliver`.

    `fail(job, exc)` answers a job whose batch raised; it must not raise itself.  Nothing one
    batch raises ends the thread; if it ends anyway (a BaseException, or a bug in this loop),
    `writer.died` is logged at critical level and `on_died` is called, so the process can exit
    and be restarted instead of accepting frames it will never answer."""

    def __init__(
        self,
        work: Callable[[list[J]], list[R]],
        deliver: Callable[[Callable[[], None]], None],
        fail: Callable[[J, BaseException], R],
        max_batch: int = 1000,
        on_stop: Callable[[], None] | None = None,
        commit_delay_s: float = 0.0,
        expected: Callable[[], int] = lambda: 1,
        on_died: Callable[[BaseException], None] | None = None,
        observe: Callable[[int, float], None] | None = None,
    ) -> None:
        self._work = work
        self._deliver = deliver
        self._fail = fail
        self._max_batch = max_batch
        self._on_stop = on_stop
        self._commit_delay_s = commit_delay_s
        self._expected = expected
        self._on_died = on_died
        self._observe = observe  # (batch size, seconds to work and commit it): metrics
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.jobs = 0
        self.beat = time.monotonic()  # the loop's last sign of life (at least every _IDLE_S)
        self._loaded = False  # the last batch held more than half the expected jobs
        # While the writer waits for a batch to fill: how many queued jobs fill it; `submit`
        # puts a wake-up in `_filled` once that many are queued (one wake per batch, not one per
        # job).  A SimpleQueue, not an Event: its `put` is one C call, where Event.set runs a
        # Condition's Python (lock, notify_all) on the reactor for every batch.
        self._enough = _NEVER
        self._filled: queue.SimpleQueue[None] = queue.SimpleQueue()
        # Jobs submitted since the last `hand_over` (`hand_over_after_polls`), else None.
        self._held: list[tuple[J, Callable[[R], None]]] | None = None

    @property
    def alive(self) -> bool:
        """The thread is running (started and neither stopped nor dead)."""
        return self._thread is not None and self._thread.is_alive()

    def heartbeat_age(self) -> float:
        """Seconds since the loop last showed life: about `_IDLE_S` at most while idle, the
        length of the batch in hand while busy; it grows without bound once the thread died."""
        return time.monotonic() - self.beat

    def expect(self, expected: Callable[[], int]) -> None:
        """How many jobs may be coming at once (read on the writer thread, an int)."""
        self._expected = expected

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="engine-writer", daemon=True)
        self._thread.start()

    def hand_over_after_polls(self, each_poll: Callable[[Callable[[], None]], bool]) -> None:
        """Hold what `submit` is given and hand it to the writer thread in one go, by
        `hand_over`, when `each_poll` has the caller's event loop run that after each poll
        (it returns True): the writer wakes once per poll, not at each frame's `submit`
        while the reactor still reads the poll's other frames.  Otherwise `submit` queues
        each job at once."""
        if each_poll(self.hand_over):
            self._held = []

    def submit(self, job: J, done: Callable[[R], None]) -> None:
        """Queue `job`; `done(result)` is delivered once its batch is committed."""
        if self._held is not None:
            self._held.append((job, done))
            return
        self._queue.put((job, done))
        self._wake_if_filled()

    def hand_over(self) -> None:
        """Queue the jobs held since the last hand-over (on the thread that submits them), and
        wake a writer waiting for that many."""
        held = self._held
        if held:
            self._held = []
            put = self._queue.put
            for item in held:
                put(item)
            self._wake_if_filled()

    def _wake_if_filled(self) -> None:
        """Wake the writer when it waits for the batch to fill and enough jobs are queued."""
        if self._queue.qsize() >= self._enough:
            self._filled.put(None)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish every job already submitted (held ones too), then end the thread."""
        if self._thread is None:
            return
        self.hand_over()
        self._queue.put(_STOP)
        self._filled.put(None)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        died: BaseException | None = None
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - reported below, the process must know
            died = exc
        finally:
            if self._on_stop is not None:
                try:
                    self._on_stop()
                except Exception as exc:  # noqa: BLE001 - closing must not hide a death
                    log.error("writer.close_failed", error=type(exc).__name__)
        if died is not None:
            log.critical("writer.died", error=type(died).__name__)
            if self._on_died is not None:
                self._on_died(died)

    def _loop(self) -> None:
        """Take jobs until stopped.  Whatever one batch raises is that batch's problem: its jobs
        are answered through `fail` and the loop goes on with the next."""
        while True:
            try:
                first = self._queue.get(timeout=_IDLE_S)
            except queue.Empty:
                self.beat = time.monotonic()
                continue
            self.beat = time.monotonic()
            if first is _STOP:
                return
            batch, stopping = self._gather(first)
            try:
                self._commit(batch)
            except Exception as exc:  # noqa: BLE001 - a bug of ours; the writer lives on
                log.exception("writer.batch_lost", batch=len(batch), error=type(exc).__name__)
            self.beat = time.monotonic()
            if stopping:
                return

    def _gather(self, first: object) -> tuple[list[tuple[J, Callable[[R], None]]], bool]:
        """Every job waiting; then, like PostgreSQL's commit_delay, wait up to `commit_delay_s`
        for the rest of `expected()` (the open connections, each of which has at most one
        frame in work) when that is worth it (`_worth_waiting`).  Otherwise the jobs in hand
        are committed at once, and frames that arrive meanwhile form the next batch.  While it
        waits, the jobs queue up without waking the writer one by one (`_await`)."""
        batch: list[object] = [first]
        deadline = 0.0
        while len(batch) < self._max_batch:
            if not self._queue.qsize():  # this thread alone takes jobs: no Empty to raise
                if not self._worth_waiting(len(batch)):
                    break
                now = time.monotonic()
                deadline = deadline or now + self._commit_delay_s
                if now >= deadline:
                    break
                self._await(min(self._expected(), self._max_batch) - len(batch), deadline - now)
                continue
            item = self._queue.get_nowait()
            if item is _STOP:
                return batch, True  # type: ignore[return-value]
            batch.append(item)
        self._loaded = 2 * len(batch) > self._expected()
        return batch, False  # type: ignore[return-value]

    def _await(self, missing: int, timeout: float) -> None:
        """Sleep until `missing` more jobs (or `stop`) are queued, or for `timeout` seconds."""
        while not self._filled.empty():  # wake-ups left from the last wait (this thread alone
            self._filled.get_nowait()  # takes them, so get_nowait finds what empty() saw)
        self._enough = missing
        try:
            if self._queue.qsize() < missing:  # jobs queued meanwhile count
                self._filled.get(timeout=timeout)
        except queue.Empty:
            pass  # the time is up: commit what is in hand
        finally:
            self._enough = _NEVER

    def _worth_waiting(self, in_hand: int) -> bool:
        """Fewer jobs in hand than expected, and either more than half of them (the rest are on
        their way) or the last batch had more than half (high load: one fsync serves more).
        At low load a frame never waits for a batch that will not fill."""
        expected = self._expected()
        if not self._commit_delay_s or in_hand >= expected:
            return False
        return self._loaded or 2 * in_hand > expected

    def _commit(self, batch: list[tuple[J, Callable[[R], None]]]) -> None:
        jobs = [job for job, _ in batch]
        started = time.perf_counter()
        try:
            results = self._work(jobs)
            if len(results) != len(jobs):
                raise RuntimeError(f"{len(results)} results for {len(jobs)} jobs")
        except Exception as exc:  # the engine never dies on one batch: each job gets an answer
            log.exception("writer.batch_failed", batch=len(jobs), error=type(exc).__name__)
            results = [self._fail(job, exc) for job in jobs]
        self.batches += 1
        self.jobs += len(jobs)
        if self._observe is not None:
            self._observe(len(jobs), time.perf_counter() - started)
        callbacks = [done for _, done in batch]

        def fire() -> None:
            for done, result in zip(callbacks, results, strict=True):
                try:
                    done(result)
                except Exception as exc:  # noqa: BLE001 - one callback must not starve the rest
                    log.exception("writer.callback_failed", error=type(exc).__name__)

        self._deliver(fire)
