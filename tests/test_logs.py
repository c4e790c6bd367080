"""The message log file (engine/logs.py): whole JSON lines, and log rotation by rename."""

from __future__ import annotations

import json
import os
import random
from datetime import UTC, datetime
from pathlib import Path

from engine.logs import TeeLogger, _Stamp, open_log


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _logger(path: Path) -> TeeLogger:
    return TeeLogger(open_log(str(path)), None, 20, path=str(path))


def test_lines_are_buffered_until_flush_and_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "log" / "engine.log"
    log = _logger(path)
    log.msg({"event": "message.stored", "level": "info", "id": 1})
    assert path.read_text() == ""
    log.flush()
    assert _lines(path) == [{"event": "message.stored", "level": "info", "id": 1}]
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_a_torn_last_line_is_closed_before_the_first_new_line(tmp_path: Path) -> None:
    """A process killed while it wrote leaves half a line: the next process starts on a line
    of its own (one newline added, only when the file does not end with one)."""
    path = tmp_path / "engine.log"
    path.write_bytes(b'{"event":"whole"}\n{"event":"to')
    log = _logger(path)
    log.msg({"event": "next", "level": "info"})
    log.flush()
    assert path.read_text().splitlines()[1:] == ['{"event":"to', '{"event":"next","level":"info"}']
    again = _logger(path)  # the file ends with a newline now: nothing is added
    again.msg({"event": "third", "level": "info"})
    again.flush()
    assert path.read_text().count("\n") == 4


def test_a_rotated_file_is_followed_by_a_new_one(tmp_path: Path) -> None:
    """logrotate renames the file: at the next flush the path is opened anew; the new file
    starts with `log.reopened`, then what was still buffered."""
    path = tmp_path / "engine.log"
    log = _logger(path)
    log.msg({"event": "first", "level": "info"})
    log.flush()
    log.msg({"event": "pending", "level": "info"})
    path.rename(tmp_path / "engine.log.1")
    log.flush()
    log.msg({"event": "after", "level": "info"})
    log.flush()
    assert [e["event"] for e in _lines(tmp_path / "engine.log.1")] == ["first"]
    assert [e["event"] for e in _lines(path)] == ["log.reopened", "pending", "after"]
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_a_removed_file_is_created_again(tmp_path: Path) -> None:
    path = tmp_path / "engine.log"
    log = _logger(path)
    path.unlink()
    log.msg({"event": "after", "level": "info"})
    log.flush()
    assert [e["event"] for e in _lines(path)] == ["log.reopened", "after"]


def test_an_unchanged_file_is_not_reopened(tmp_path: Path) -> None:
    path = tmp_path / "engine.log"
    log = _logger(path)
    for n in range(3):
        log.msg({"event": "tick", "level": "info", "n": n})
        log.flush()
    assert [e["event"] for e in _lines(path)] == ["tick", "tick", "tick"]


def test_the_stamp_is_what_datetime_writes() -> None:
    """`ts` as `datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")` writes it,
    at the roundings' edges too (a microsecond rounded up into the next millisecond or second)
    and for stamps in and out of order."""
    stamp = _Stamp()
    draw = random.Random(7)
    edges = [second + fraction for second in (1_764_547_199, 1_798_761_599, 1_000_000_000)
             for fraction in (0.0, 0.0004995, 0.0005, 0.000999, 0.9994995, 0.9995, 0.999999,
                              0.9999994, 0.9999995, 0.9999996)]
    times = edges + [draw.uniform(1e9, 4e9) for _ in range(20000)]
    times += [t + draw.choice((-1, 1)) * draw.random() / 100 for t in times[-2000:]]
    for now in times:
        assert stamp.text(now) == datetime.fromtimestamp(now, UTC).isoformat(
            timespec="milliseconds"), repr(now)
