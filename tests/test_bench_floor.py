"""bench.floor records the pipeline's own statements and replays them: the replay must rebuild
the same ledger, or the floor it reports would flatter the database."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import floor as floor_module
from bench.floor import floor, record, replay


def test_the_replay_rebuilds_the_ledger_the_pipeline_wrote() -> None:
    result = floor(("ref", "siu"), messages=40, batch=8)
    assert result.messages == 40
    assert result.commits == 5  # one per batch of 8
    # the ledger's reads and writes are batched: a few statements per batch, not per message
    assert 5 * 8 <= result.statements <= 2 * 40
    assert result.msg_per_s > 0


def test_a_statement_missing_from_the_recording_is_caught(tmp_path: Path) -> None:
    statements, untimed = record(tmp_path, ("ref",), 16, 8)
    inserts = [i for i, s in enumerate(statements)
               if s[0] != "commit" and s[1].startswith("INSERT INTO referral_keys")]
    del statements[inserts[-1]]
    with pytest.raises(RuntimeError, match="does not rebuild the ledger"):
        replay(tmp_path, statements, untimed, 16)
    assert floor_module.Floor(16, 1, 1, 0.5, 0.1).msg_per_s == 32
