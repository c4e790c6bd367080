"""Commands other than `run` never create a database: on a SQLite file that is not there they say
so, with its absolute path, exit 2 and leave the file system as it was."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from enginectl import create_database, write_config

COMMANDS = [
    ["referrals"], ["referral", "MFP-R-1001^PCPEHR"], ["tail"], ["show", "1"],
    ["show", "1", "--raw"], ["appointments"], ["worklist"], ["report"], ["queue"],
    ["link", "A^X", "R^Y"], ["sweep"], ["purge", "--older-than", "30"], ["pause", "archive"],
    ["resume", "archive"], ["retry", "archive"], ["release", "archive"], ["replay", "1"],
    ["replay", "1", "--to", "archive"],
]


def _files(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_missing_database_is_named_and_not_created(tmp_path: Path, command: list[str]) -> None:
    """The configured SQLite file (in a folder that does not exist either) is not there: exit 2,
    one line naming it, and no file or folder appears (database, its folder, the log)."""
    database = tmp_path / "var" / "engine.db"
    config = write_config(tmp_path, f"sqlite:///{database}", top={
        "destinations": [{"name": "archive", "type": "file", "directory": str(tmp_path / "o")}],
        "routes": [{"name": "all", "from": "referrals", "to": ["archive"]}]})
    before = _files(tmp_path)
    out = subprocess.run([sys.executable, "-m", "engine", *command, "--config", str(config)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == f"no database at {database} (is the engine configured with this file?)\n"
    assert _files(tmp_path) == before


def test_a_relative_database_option_is_named_by_its_absolute_path(tmp_path: Path) -> None:
    """`--database sqlite:///here.db` with no config file: the message gives the absolute path
    (from the working directory), and nothing is created there."""
    out = subprocess.run([sys.executable, "-m", "engine", "--database", "sqlite:///here.db",
                          "referrals"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == (f"no database at {tmp_path / 'here.db'} "
                          "(is the engine configured with this file?)\n")
    assert _files(tmp_path) == set()


def test_an_existing_database_is_read(tmp_path: Path) -> None:
    """The check does not get in the way: on a database `run` made, `referrals` answers."""
    url = create_database(f"sqlite:///{tmp_path / 'engine.db'}")
    out = subprocess.run([sys.executable, "-m", "engine", "--database", url, "referrals"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (0, "(none)\n", "")
