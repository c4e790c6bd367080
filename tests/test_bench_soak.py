"""bench.soak against the real engine for ten seconds: valid traffic must come through every
hostile kind, `poison` (non-ASCII MSH-12, which once stopped ingest) included, and the soak
must report each kind it ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import soak
from bench.hostile import KINDS


@pytest.mark.slow
def test_a_ten_second_soak_passes_and_reports_every_kind(tmp_path: Path) -> None:
    """Exit 0 means every valid message got one AA, was stored once, and the engine still
    answered at the end; every kind that ran made attempts and recorded what came back."""
    results = tmp_path / "soak.json"
    status = soak.main(["--minutes", "0.17", "--valid-connections", "2", "--valid-rate", "40",
                        "--sample-seconds", "2",
                        "--results", str(results)])
    summary = json.loads(results.read_text())
    assert status == 0, summary["checks"]
    assert summary["valid"]["sent"] > 0
    assert set(summary["hostile"]) == set(KINDS)
    for kind, tally in summary["hostile"].items():
        assert tally["attempts"] >= 1 and tally["outcomes"], kind
    oversize = summary["hostile"]["oversize"]  # answered AR 100 and closed, never stored
    assert oversize["outcomes"] == {"AR": oversize["attempts"]} and not oversize["stored"]
    assert summary["hostile"]["poison"]["outcomes"] == {"AR": summary["hostile"]["poison"][
        "attempts"]}


def test_an_unknown_hostile_kind_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """`--no-hostile` names kinds from bench.hostile.KINDS, or `all`; a typo is an error."""
    with pytest.raises(SystemExit):
        soak.parse(["--no-hostile", "flip,slowlorris"])
    assert "slowlorris" in capsys.readouterr().err
    _, kinds = soak.parse(["--no-hostile", "flip,poison", "--no-hostile", "drop"])
    assert "flip" not in kinds and "poison" not in kinds and "drop" not in kinds
    assert soak.parse(["--no-hostile", "all"])[1] == ()
