"""Configuration errors as the operator reads them: every line starts with the file's path, and
an unknown key that resembles an allowed one is answered with that key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import ConfigError, load_config

GOOD_CHANNEL = "  - name: a\n    listen: {port: 2575}\n    accept: [REF^I12]\n"


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_a_misspelt_key_is_named_with_the_file_and_a_suggestion(tmp_path: Path) -> None:
    """`acept` in channels[0], run from the config's folder: `channels.yaml: channels[0].acept:
    unknown key; did you mean 'accept'?`, on stderr, exit 2."""
    (tmp_path / "channels.yaml").write_text(
        "channels:\n  - name: a\n    listen: {port: 2575}\n    acept: [REF^I12]\n")
    out = subprocess.run([sys.executable, "-m", "engine", "check-config"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr.splitlines()[0] == (
        "channels.yaml: channels[0].acept: unknown key; did you mean 'accept'?")


def test_every_problem_line_starts_with_the_file(tmp_path: Path) -> None:
    """Problems from every part of the file (top level, channel, routes' filters and transforms,
    destinations) each start with the path given; a key like none of the allowed ones keeps the
    list of allowed keys."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        "colour: blue\n"
        "channels:\n" + GOOD_CHANNEL +
        "destinations:\n  - {name: d, type: file, directory: out, retyr: {max_s: 1}}\n"
        "routes:\n"
        "  - name: r\n    from: a\n    to: [d]\n"
        "    when: {tpye: [REF^I12]}\n"
        "    transform: [{copy: {form: PID.3, to: PID.4}}]\n"
        "log: {levle: info}\n")
    problems = _problems(path)
    assert all(line.startswith(f"{path}: ") for line in problems), problems
    assert [line.removeprefix(f"{path}: ") for line in problems] == [
        "colour: unknown key (expected one of: channels, database, destinations, http, ledger, "
        "log, retention, routes, workers)",
        "log.levle: unknown key; did you mean 'level'?",
        "destinations[0].retyr: unknown key; did you mean 'retry'?",
        "routes[0].when.tpye: unknown key; did you mean 'type'?",
        "routes[0].transform[0].copy.form: unknown key; did you mean 'from'?",
        "routes[0].transform[0].copy.from: required",
    ]


def test_problems_that_name_their_file_already_are_not_prefixed_twice(tmp_path: Path) -> None:
    """Unreadable files and YAML syntax errors keep their single file prefix."""
    broken, missing = tmp_path / "broken.yaml", tmp_path / "missing.yaml"
    broken.write_text("channels: [\n")
    for path in (broken, missing):
        [line] = _problems(path)
        assert line.startswith(f"{path}: ") and line.count(str(path)) == 1, line
