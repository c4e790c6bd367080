"""The group-commit writer's batching on its real thread: a lone frame is committed at once
however long the commit delay, and under load the writer waits for the rest of the expected
frames so that one commit serves them all."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from engine.store.writer import GroupCommitWriter

EXPECTED = 8  # open connections
LONG_DELAY_S = 60.0  # a test that waited for it would time out first


class _Recorder:
    """Work that records each batch's jobs; the first batch waits for `release`."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.answered: list[int] = []
        self.all_in = threading.Event()
        self.want = 0

    def work(self, jobs: list[int]) -> list[int]:
        if not self.batches:
            self.started.set()
            self.release.wait(10)
        self.batches.append(jobs)
        return jobs

    def done(self, job: int) -> None:
        self.answered.append(job)
        if len(self.answered) == self.want:
            self.all_in.set()

    def wait_for(self, count: int) -> bool:
        self.want = count
        self.all_in.clear()
        return len(self.answered) >= count or self.all_in.wait(10)


def writer(rec: _Recorder) -> GroupCommitWriter[int, int]:
    return GroupCommitWriter(rec.work, lambda fire: fire(), lambda job, exc: -job,
                             commit_delay_s=LONG_DELAY_S, expected=lambda: EXPECTED)


def test_a_lone_frame_is_committed_at_once_whatever_the_delay() -> None:
    rec = _Recorder()
    rec.release.set()
    w = writer(rec)
    w.start()
    try:
        w.submit(1, rec.done)
        assert rec.wait_for(1), "the lone frame waited for a batch that would not fill"
        w.submit(2, rec.done)
        assert rec.wait_for(2)
        assert rec.batches == [[1], [2]]
    finally:
        w.stop(timeout=10)


def test_frames_arriving_during_a_commit_form_the_next_batch_and_wait_for_the_rest() -> None:
    """While the first commit is in flight five frames arrive: more than half the expected,
    so the writer waits for the other three; after a full batch the next lone frame waits too
    (high load), until the batch is full again."""
    rec = _Recorder()
    w = writer(rec)
    w.start()
    try:
        w.submit(1, rec.done)
        assert rec.started.wait(10)
        for job in range(2, 7):
            w.submit(job, rec.done)
        rec.release.set()
        for job in range(7, 10):
            w.submit(job, rec.done)
        assert rec.wait_for(9)
        for job in range(10, 18):
            w.submit(job, rec.done)
        assert rec.wait_for(17)
        assert rec.batches == [[1], list(range(2, 10)), list(range(10, 18))]
    finally:
        w.stop(timeout=10)


def test_stop_while_waiting_for_a_batch_to_fill_commits_the_jobs_in_hand() -> None:
    """Under load the writer waits for a full batch; `stop` ends that wait at once, and the
    jobs already submitted are committed and answered before the thread ends."""
    rec = _Recorder()
    w = writer(rec)
    w.start()
    w.submit(1, rec.done)
    assert rec.started.wait(10)
    for job in range(2, 7):
        w.submit(job, rec.done)
    rec.release.set()
    started = time.monotonic()
    w.stop(timeout=10)
    assert time.monotonic() - started < 5, "stop waited for a batch that would not fill"
    assert rec.batches == [[1], list(range(2, 7))]
    assert rec.answered == list(range(1, 7))


def _holding(rec: _Recorder) -> tuple[GroupCommitWriter[int, int], list[Callable[[], None]]]:
    """A writer that holds its jobs until the registered `hand_over` runs (as the engine's
    reactor runs it after each poll), and that registered call."""
    registered: list[Callable[[], None]] = []
    w = writer(rec)
    w.hand_over_after_polls(lambda call: registered.append(call) is None)
    return w, registered


def test_held_jobs_reach_the_writer_together_at_the_hand_over() -> None:
    rec = _Recorder()
    rec.release.set()
    w, [hand_over] = _holding(rec)
    w.start()
    try:
        for job in range(1, 9):
            w.submit(job, rec.done)
        time.sleep(0.05)
        assert rec.batches == [], "a held job reached the writer before the hand-over"
        hand_over()
        assert rec.wait_for(8)
        assert rec.batches == [list(range(1, 9))]
        hand_over()  # nothing held: nothing to do
        for job in range(9, 17):
            w.submit(job, rec.done)
        hand_over()
        assert rec.wait_for(16)
        assert rec.batches == [list(range(1, 9)), list(range(9, 17))]
    finally:
        w.stop(timeout=10)


def test_stop_hands_over_the_held_jobs_first() -> None:
    rec = _Recorder()
    rec.release.set()
    w, _ = _holding(rec)
    w.start()
    for job in (1, 2):
        w.submit(job, rec.done)
    w.stop(timeout=10)
    assert rec.answered == [1, 2]


def test_without_an_event_loop_to_hand_over_each_job_goes_at_once() -> None:
    rec = _Recorder()
    rec.release.set()
    w = writer(rec)
    w.hand_over_after_polls(lambda _call: False)
    w.start()
    try:
        w.submit(1, rec.done)
        assert rec.wait_for(1)
    finally:
        w.stop(timeout=10)
