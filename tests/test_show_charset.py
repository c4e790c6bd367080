"""`hl7-engine show ID --raw` prints a stored body in the charset the parser read it in (MSH-18,
or with MSH-18 empty strict UTF-8, else cp1252), through a real engine and a real SQLite file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from enginectl import Engine, cli_stdout, send_samples, write_config


@pytest.fixture(name="received")
def received_fixture(tmp_path: Path, sqlite_url: str) -> Iterator[Path]:
    """A real engine that received the two charset samples (message 1: ISO-8859-1 declared in
    MSH-18; message 2: cp1252 bytes with MSH-18 empty)."""
    engine = Engine(write_config(tmp_path, sqlite_url)).start()
    try:
        send_samples(engine.port, ("charset_latin1_v251.hl7", "charset_cp1252_nomsh18.hl7"))
    finally:
        engine.stop()
    yield engine.config


@pytest.mark.parametrize(("message_id", "text"), [
    ("1", "TESTPATIENT-MÜLLER^JÖRG"), ("1", "11 FAKE STRAßE"), ("2", "O’TESTPATIENT^KILO")])
def test_show_raw_decodes_the_body_in_its_charset(received: Path, message_id: str,
                                                  text: str) -> None:
    """`show --raw` prints the body in the charset the parser read it in (MSH-18 8859/1; or,
    MSH-18 empty and not UTF-8, cp1252), so no character comes out as U+FFFD; `--json` too."""
    out = cli_stdout(received, "show", message_id, "--raw")
    assert text in out and "\ufffd" not in out
    shown: dict[str, Any] = json.loads(cli_stdout(received, "show", message_id, "--raw", "--json"))
    assert text in shown["raw"]
