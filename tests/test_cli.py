"""The operator's CLI against a running engine: send, tail (-f), show (--raw audit)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from enginectl import ROOT, SAMPLES, Engine, create_database, run_cli, write_config


@pytest.fixture(name="running")
def running_fixture(tmp_path: Path, sqlite_url: str) -> Iterator[Engine]:
    engine = Engine(write_config(tmp_path, sqlite_url)).start()
    try:
        yield engine
    finally:
        engine.stop()


def test_send_prints_msa1_msa2_err3(running: Engine) -> None:
    """`send` prints each ACK's MSA-1, MSA-2 and ERR-3, one line per ACK, and exits 1 when a
    message was not accepted."""
    files = [str(SAMPLES / n) for n in ("ref_i12_v251.hl7", "reject_version.hl7",
                                         "enhanced_al_al_v251.hl7", "omg_o19_v251.hl7")]
    out = run_cli("send", *files, "--to", f"127.0.0.1:{running.port}", config=running.config)
    assert out.returncode == 1
    lines = [line.split(": ", 1)[1] for line in out.stdout.splitlines()]
    assert lines == ["AA REF-I12-V251", "AR REJ-VERSION-22 203", "CA ENH-AL-AL-V251",
                     "AA ENH-AL-AL-V251", "no ACK (MSH-15/16 ask for none)"]


def test_send_reads_every_file_first_and_names_what_it_cannot_do(tmp_path: Path) -> None:
    """An unreadable file is named and nothing is sent (exit 2); an address that refuses the
    connection is named too (exit 2): no traceback either way."""
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'e.db'}")
    good = str(SAMPLES / "ref_i12_v251.hl7")
    missing = run_cli("send", good, str(tmp_path / "nope.hl7"), "--to", "127.0.0.1:1",
                      config=config)
    assert (missing.returncode, missing.stdout) == (2, "")
    assert missing.stderr == f"{tmp_path / 'nope.hl7'}: cannot read (No such file or directory)\n"
    with socket.socket() as unused:  # bound, never listening: the connection is refused
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        refused = run_cli("send", good, "--to", f"127.0.0.1:{port}", config=config)
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == f"--to 127.0.0.1:{port}: cannot connect (Connection refused)\n"


@pytest.mark.parametrize("workers", [1, 2])
def test_run_on_a_port_in_use_says_so_and_exits_2(tmp_path: Path, workers: int) -> None:
    """A channel that cannot listen stops the engine at once (exit 2, the channel and address
    named) instead of running without it; no worker is left behind."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = write_config(tmp_path, f"sqlite:///{tmp_path / 'e.db'}",
                              top={"workers": workers}, listen={"host": "127.0.0.1",
                                                                "port": port})
        out = subprocess.run([sys.executable, "-m", "engine", "run", "--config", str(config)],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.splitlines()[0] == (
        f"channel referrals: cannot listen on 127.0.0.1:{port} (Address already in use)")
    events = [json.loads(line)["event"] for line in (tmp_path / "engine.log").read_text()
              .splitlines()]
    assert "mllp.listen_failed" in events and "mllp.listening" not in events


@pytest.mark.parametrize(("url", "said"), [
    ("postgresql+psycopg://nobody:secret@127.0.0.1:1/x", "database: connection failed: "),
    ("bogus://x", "database: Can't load plugin: sqlalchemy.dialects:bogus"),
])
def test_a_database_that_cannot_be_opened_is_named_not_a_traceback(tmp_path: Path, url: str,
                                                                   said: str) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'e.db'}")
    out = subprocess.run([sys.executable, "-m", "engine", "tail", "--config", str(config),
                          "--database", url], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr.startswith(said) and out.stderr.count("\n") == 1
    assert "secret" not in out.stderr


def test_send_stops_when_the_peer_closes_the_connection(tmp_path: Path) -> None:
    """A listener that closes the connection without answering (a TLS port, a refused peer):
    `send` says so at once for that file, sends no more, and exits 1."""
    import threading

    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'e.db'}")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def close_each() -> None:
            with contextlib.suppress(OSError):
                while True:
                    conn, _ = server.accept()
                    conn.recv(65536)
                    conn.close()

        threading.Thread(target=close_each, daemon=True).start()
        files = [str(SAMPLES / "ref_i12_v251.hl7"), str(SAMPLES / "siu_s12_v251.hl7")]
        out = run_cli("send", *files, "--to", f"127.0.0.1:{port}", config=config)
    assert out.returncode == 1
    assert out.stdout == (f"{files[0]}: no ACK (the connection was closed by 127.0.0.1:{port})\n")


def test_tail_json_and_filters(running: Engine) -> None:
    """`tail --json` prints one object per stored message, filterable by status and type."""
    files = [str(SAMPLES / n) for n in ("ref_i12_v251.hl7", "reject_version.hl7")]
    run_cli("send", *files, "--to", f"127.0.0.1:{running.port}", config=running.config)
    out = run_cli("tail", "--json", config=running.config)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["control_id"], r["status"], r["ack"]) for r in rows] == [
        ("REF-I12-V251", "accepted", "AA"), ("REJ-VERSION-22", "rejected", "AR")]
    rejected = run_cli("tail", "--json", "--status", "rejected", config=running.config)
    assert [json.loads(x)["error_code"] for x in rejected.stdout.splitlines()] == ["203"]
    typed = run_cli("tail", "--type", "REF^I12", config=running.config)
    assert "REF-I12-V251" in typed.stdout and "REJ-VERSION-22" not in typed.stdout


def test_tail_follow_shows_a_message_soon_after_its_ack(running: Engine) -> None:
    """`tail -f` prints a message that arrives after it started (it polls every 0.2 s)."""
    follower = subprocess.Popen(
        [sys.executable, "-m", "engine", "tail", "-f", "--config", str(running.config)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)  # let it start and print the (empty) backlog
        run_cli("send", str(SAMPLES / "siu_s12_v251.hl7"), "--to", f"127.0.0.1:{running.port}",
                config=running.config)
        assert follower.stdout is not None
        line = follower.stdout.readline()
        assert "SIU-S12-V251" in line and "AA" in line
    finally:
        follower.kill()
        follower.wait()


def test_show_raw_prints_the_body_and_writes_an_audit_event(running: Engine) -> None:
    """`show ID` has no body; `show ID --raw` prints it and logs `audit.message_body_read`."""
    run_cli("send", str(SAMPLES / "ref_i12_v251.hl7"), "--to", f"127.0.0.1:{running.port}",
            config=running.config)
    plain = run_cli("show", "1", config=running.config)
    assert "REF-I12-V251" in plain.stdout and "PID|" not in plain.stdout
    assert not [e for e in running.events() if e["event"] == "audit.message_body_read"]
    raw = run_cli("show", "1", "--raw", config=running.config)
    assert raw.returncode == 0 and "\nPID|" in raw.stdout
    audits = [e for e in running.events() if e["event"] == "audit.message_body_read"]
    assert [(a["message_id"], a["audit"]) for a in audits] == [(1, True)]
    missing = run_cli("show", "999", config=running.config)
    assert missing.returncode == 1 and "no message with id 999" in missing.stderr


def test_log_has_no_patient_data(running: Engine) -> None:
    """The JSON log names channel, peer, control id, type, size and digest, never field data."""
    run_cli("send", str(SAMPLES / "ref_i12_v251.hl7"), "--to", f"127.0.0.1:{running.port}",
            config=running.config)
    stored = running.wait_for("message.stored")
    text = running.log_file.read_text()
    assert stored and stored[0]["control_id"] == "REF-I12-V251" and stored[0]["size"] > 800
    body = (SAMPLES / "ref_i12_v251.hl7").read_text()
    pid = next(line for line in body.splitlines() if line.startswith("PID"))
    for value in pid.split("|")[3:6]:
        for leaf in value.replace("~", "^").split("^"):
            if len(leaf) > 3:
                assert leaf not in text


def test_show_lists_the_ledger_changes_a_message_made(running: Engine, tmp_path: Path) -> None:
    """`show ID --json` traces a message to every ledger change it made."""
    ref = tmp_path / "ref.hl7"  # the sample, with a window that has not ended (RF1-8)
    ref.write_bytes((SAMPLES / "ref_i12_v251.hl7").read_bytes().replace(b"|20360712|",
                                                                          b"|20991231|"))
    run_cli("send", str(ref), "--to", f"127.0.0.1:{running.port}", config=running.config)
    shown = json.loads(run_cli("show", "1", "--json", config=running.config).stdout)
    assert shown["ledger_effect"] == "referral MFP-R-1001^PCPEHR new→pending"
    assert [(c["referral"], c["event"], c["status_before"], c["status_after"])
            for c in shown["ledger_changes"]] == [
        ("MFP-R-1001^PCPEHR", "REF^I12 open", None, "pending")]


def test_validate_reports_structure_errors_with_hl7apy(tmp_path: Path) -> None:
    """`validate` passes a well-formed REF, names the missing PID of another, and exits 1."""
    config = tmp_path / "none.yaml"
    out = run_cli("validate", str(SAMPLES / "ref_i12_v251.hl7"),
                  str(SAMPLES / "content_ref_no_pid.hl7"), config=config)
    lines = out.stdout.splitlines()
    assert out.returncode == 1
    assert lines[0].endswith("ref_i12_v251.hl7: OK, 8 warning(s)")
    assert lines[1].endswith("content_ref_no_pid.hl7: 1 error(s), 8 warning(s)")
    assert lines[2] == "  error: Missing required child REF_I12.PID"


def test_empty_listings_say_none(tmp_path: Path, sqlite_url: str) -> None:
    """On an empty ledger, `referrals`, `worklist` and `queue` say "(none)" instead of printing a
    header alone."""
    config = write_config(tmp_path, create_database(sqlite_url))
    for command in ("referrals", "worklist", "queue"):
        done = run_cli(command, config=config)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "(none)", command
