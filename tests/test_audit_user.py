"""The audit trail names the operating-system account that ran the command (its effective uid's
name, or the uid when it has no name), whatever USER, LOGNAME or SUDO_USER say."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
from enginectl import ROOT, create_database, write_config

NO_SUCH_UID = 54321


def _audits(config: Path, env: dict[str, str]) -> list[dict[str, object]]:
    """Run `pause archive` (an audited command) and return the log's audit events."""
    done = subprocess.run([sys.executable, "-m", "engine", "pause", "archive", "--config",
                           str(config)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=env)
    assert done.returncode == 0, done.stderr
    log = config.parent / "engine.log"
    return [e for e in map(json.loads, log.read_text().splitlines()) if e.get("audit")]


def _config(folder: Path) -> Path:
    return write_config(folder, create_database(f"sqlite:///{folder / 'engine.db'}"), top={
        "destinations": [{"name": "archive", "type": "file", "directory": str(folder / "o")}]})


def test_the_audit_user_is_the_effective_account_not_the_environment(tmp_path: Path) -> None:
    """USER, LOGNAME and SUDO_USER set to another name change nothing: `audit.queue_pause`
    carries the effective uid's passwd name."""
    spoofed = {**os.environ, "USER": "mallory", "LOGNAME": "mallory", "SUDO_USER": "mallory"}
    audits = _audits(_config(tmp_path), spoofed)
    assert [(a["event"], a["user"]) for a in audits] == [
        ("audit.queue_pause", pwd.getpwuid(os.geteuid()).pw_name)]


@pytest.mark.skipif(os.geteuid() != 0, reason="taking another effective uid needs root")
def test_an_account_without_a_name_is_audited_by_its_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under an effective uid that has no passwd entry, the audit user is that uid as text,
    never `?` nor the environment's USER.  (The uid is taken in this process, briefly: the
    interpreter's own files need not be readable by it.)"""
    from structlog.testing import capture_logs

    from engine.logs import audit

    with pytest.raises(KeyError):
        pwd.getpwuid(NO_SUCH_UID)
    monkeypatch.setenv("USER", "root")
    os.seteuid(NO_SUCH_UID)
    try:
        with capture_logs() as events:
            audit("audit.sweep", expired=0)
    finally:
        os.seteuid(0)
    assert [(e["event"], e["user"]) for e in events] == [("audit.sweep", str(NO_SUCH_UID))]
