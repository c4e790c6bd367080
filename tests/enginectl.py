"""Run the real engine as a subprocess for end-to-end tests: config in a temp dir, port 0, the
bound port read back from the JSON log (`mllp.listening`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from sqlalchemy import Engine as SAEngine
    from sqlalchemy import Table

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


def write_config(directory: Path, database: str, top: dict[str, Any] | None = None,
                 **channel: Any) -> Path:
    """A one-channel config like the shipped `referrals` channel, listening on a free port;
    `top` adds top-level keys (destinations, routes)."""
    shipped = yaml.safe_load((ROOT / "channels.yaml").read_text())
    ch = dict(shipped["channels"][0])
    ch["listen"] = {"host": "127.0.0.1", "port": 0}
    ch.update(channel)
    config = {
        "database": {"url": database, "sqlite_synchronous": "FULL"},
        "log": {"file": str(directory / "engine.log"), "level": "info"},
        "channels": [ch],
        **(top or {}),
    }
    path = directory / "channels.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Engine:
    """`hl7-engine run` in a subprocess (in `cwd`, with `args` after the config).  `port` is
    known once `start()` returns."""

    def __init__(self, config: Path, cwd: Path = ROOT, args: tuple[str, ...] = ()) -> None:
        self.config = config
        self.cwd = cwd
        self.args = args
        # A relative log.file is taken from the config file's folder, as the engine does.
        self.log_file = config.parent / yaml.safe_load(config.read_text())["log"]["file"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.stderr = ""  # what the engine (and its workers) wrote there, after `stop()`

    def start(self, timeout: float = 30.0) -> Engine:
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "run", "--config", str(self.config), "--quiet",
             *self.args],
            cwd=self.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events(offset):
                if event.get("event") == "mllp.listening":
                    self.port = int(event["port"])
                    return self
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"engine exited with {self.proc.returncode}: {err}")
            time.sleep(0.05)
        raise RuntimeError("engine did not start listening in time")

    def events(self, offset: int = 0) -> list[dict[str, Any]]:
        """Every JSON event in the log file after `offset` bytes, up to its last newline: a
        read can meet a write still under way (a process writes its buffered lines in one
        `write`, which a reader may see half done), whose last line is not whole yet."""
        if not self.log_file.exists():
            return []
        with self.log_file.open("rb") as f:
            f.seek(offset)
            data = f.read()
        whole = data[:data.rfind(b"\n") + 1]
        return [json.loads(line) for line in whole.splitlines() if line.strip()]

    def wait_for(self, event: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The log's events named `event`, waiting until at least one is written (the log
        file is flushed twice a second)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events() if e.get("event") == event]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> int:
        """SIGTERM and wait: the engine drains its writer and exits 0."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self.stderr = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        self.proc = None
        return code


def delivered_files(directory: Path, count: int, timeout: float = 15.0) -> list[Path]:
    """A file destination's files, waiting until there are `count` (its worker runs twice a
    second) or the timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        found = sorted(directory.glob("*.hl7")) if directory.exists() else []
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def numbered_referral(tag: str, n: int) -> tuple[str, bytes]:
    """The REF^I12 sample as a new referral: MSH-10 `<tag>-<n>` and RF1-6 `MFP-R-<tag><n>`."""
    template = sample_payload("ref_i12_v251.hl7")
    control = f"{tag}-{n:06d}"
    payload = template.replace(b"REF-I12-V251", control.encode(), 1)
    return control, payload.replace(b"MFP-R-1001", f"MFP-R-{tag}{n:06d}".encode())


def ambiguous_booking(appointment: str, *referrals: str) -> list[bytes]:
    """REF^I12 referrals `MFP-R-<n>^PCPEHR` for each of `referrals` (same patient and
    specialty), then an SIU^S12 booking `SCHED-A-<appointment>^SCHED` without SCH-26 that fits
    all of them: the ledger keeps the appointment ambiguous between them."""
    ref = sample_payload("ref_i12_v251.hl7")
    out = [ref.replace(b"MFP-R-1001", f"MFP-R-{n}".encode())
           .replace(b"REF-I12-V251", f"C-MFP-R-{n}".encode()) for n in referrals]
    siu = sample_payload("siu_s12_v251.hl7").replace(b"SCHED-A-5001",
                                                     f"SCHED-A-{appointment}".encode())
    return [*out, siu.replace(b"|MFP-R-1001^PCPEHR", b"|")
            .replace(b"SIU-S12-V251", f"S-{appointment}".encode())]


def sample_payload(name: str) -> bytes:
    """A sample as `hl7-engine send` sends it: LF and CRLF become CR, except the CRLF sample."""
    data = (SAMPLES / name).read_bytes()
    if name == "crlf_terminators.hl7":
        return data
    return data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def create_database(url: str) -> str:
    """Make the database as `run` does (migrated, empty), for commands that only open one; its
    URL."""
    from engine.store.database import open_database

    open_database(url).dispose()
    return url


def stored_messages(url: str, *columns: str) -> list[tuple[Any, ...]]:
    """These columns of every stored message, in id order, read straight from the database."""
    from sqlalchemy import create_engine, select

    from engine.store.schema import messages

    db = create_engine(url)
    with db.connect() as conn:
        rows = conn.execute(select(*(messages.c[c] for c in columns))
                            .order_by(messages.c.id)).all()
    db.dispose()
    return [tuple(r) for r in rows]


def send_samples(port: int, names: tuple[str, ...]) -> list[bytes]:
    """Send these samples on one connection, each answered AA; their payloads."""
    from engine.mllp.blocking import MLLPClient
    from engine.parsing import parse

    sent = [sample_payload(n) for n in names]
    with MLLPClient("127.0.0.1", port) as client:
        assert [parse(client.exchange(m)[0])["MSA.1"] for m in sent] == ["AA"] * len(sent)
    return sent


def run_cli(*args: str, config: Path | None = None, cwd: Path | None = ROOT, stdin: str = "",
            merge_stderr: bool = False) -> subprocess.CompletedProcess[str]:
    """`hl7-engine ARGS` (`python -m engine`) in a subprocess and its finished process, output
    captured as text: run in `cwd` (None: this process's folder), with `--config CONFIG` after
    the args when `config` is given and `stdin` as its input; `merge_stderr` sends stderr into
    `stdout` (for checks on everything it printed)."""
    command = [sys.executable, "-m", "engine", *args]
    if config is not None:
        command += ["--config", str(config)]
    return subprocess.run(command, cwd=cwd, input=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                          text=True, timeout=60)


def cli_stdout(config: Path, *args: str) -> str:
    """`hl7-engine ARGS --config CONFIG`'s stdout, after checking it exited 0."""
    done = run_cli(*args, config=config)
    assert done.returncode == 0, (args, done.returncode, done.stderr)
    return done.stdout


def table_rows(db: SAEngine | str, *columns: str, table: Table | None = None) -> list[Any]:
    """Rows of `table` (default: `outbound`), in id order, read straight from the database
    (an SQLAlchemy engine or a URL): tuples of these `columns`, or with none named, each whole
    row as a dict."""
    from sqlalchemy import create_engine, select

    from engine.store.schema import outbound

    table = outbound if table is None else table
    engine = create_engine(db) if isinstance(db, str) else db
    try:
        with engine.connect() as conn:
            if columns:
                query = select(*(table.c[c] for c in columns)).order_by(table.c.id)
                return [tuple(r) for r in conn.execute(query)]
            query = select(table).order_by(table.c.id)
            return [dict(r) for r in conn.execute(query).mappings()]
    finally:
        if isinstance(db, str):
            engine.dispose()


def outbound_states(db: SAEngine | str, *more: str) -> list[Any]:
    """(control_id, status, attempts, *more columns) of every outbound row, in id order."""
    return table_rows(db, "control_id", "status", "attempts", *more)


def seed_users(url: str, users: Iterable[tuple[str, str]],
               password: Callable[[str], str] = lambda name: f"{name} password"
               ) -> dict[str, str]:
    """A new database at `url` holding `users` ((name, role) pairs, each with `password(name)`);
    each user's new bearer token, by name."""
    from datetime import UTC, datetime

    from engine.store.database import open_database
    from engine.store.users import add_user, create_token

    create_database(url)
    db = open_database(url, migrate=False)
    now = datetime.now(UTC).replace(tzinfo=None)
    tokens: dict[str, str] = {}
    with db.begin() as conn:
        for name, role in users:
            add_user(conn, name, role, password(name), now)
            tokens[name] = str(create_token(conn, name, now))
    db.dispose()
    return tokens


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition: (name, sorted labels) → value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}

