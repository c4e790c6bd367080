"""The command line's global options: `--config` and `--database` are honoured before the command
name as well as after it, and after it wins when both are given."""

from __future__ import annotations

from pathlib import Path

import pytest
from enginectl import create_database, run_cli, write_config


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
def test_database_is_honoured_before_or_after_the_command(tmp_path: Path, before: bool) -> None:
    """`hl7-engine --database URL referrals` reads URL, as `referrals --database URL` does: the
    config's own database is never opened (nor created)."""
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'configured.db'}")
    url = create_database(f"sqlite:///{tmp_path / 'given.db'}")
    options = ["--config", str(config), "--database", url]
    args = [*options, "referrals"] if before else ["referrals", *options]
    out = run_cli(*args, cwd=tmp_path)
    assert (out.returncode, out.stdout, out.stderr) == (0, "(none)\n", "")
    assert not (tmp_path / "configured.db").exists()


def test_config_is_honoured_before_the_command(tmp_path: Path) -> None:
    """`--config PATH` before the command is the config used: not ./channels.yaml."""
    (tmp_path / "etc").mkdir()
    config = write_config(tmp_path / "etc", create_database(f"sqlite:///{tmp_path / 'engine.db'}"))
    out = run_cli("--config", str(config), "queue", cwd=tmp_path)
    assert (out.returncode, out.stdout, out.stderr) == (0, "(none)\n", "")


def test_after_the_command_wins_over_before(tmp_path: Path) -> None:
    """Given on both sides of the command, the option after it is the one used."""
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'configured.db'}")
    url = create_database(f"sqlite:///{tmp_path / 'after.db'}")
    out = run_cli("--config", str(tmp_path / "nowhere.yaml"), "--database",
                  f"sqlite:///{tmp_path / 'before.db'}", "referrals", "--config", str(config),
                  "--database", url, cwd=tmp_path)
    assert (out.returncode, out.stdout, out.stderr) == (0, "(none)\n", "")
    assert not (tmp_path / "before.db").exists() and not (tmp_path / "configured.db").exists()


def test_help_says_where_the_global_options_go() -> None:
    """`--help` says the options may come on either side, and which wins."""
    out = run_cli("--help", cwd=Path.cwd())
    assert "may come before or after the command" in out.stdout
    assert "the one after the command wins" in " ".join(out.stdout.split())
