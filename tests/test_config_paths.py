"""Relative paths in a configuration file are taken from the file's folder, whatever the working
directory: the SQLite database, `log.file`, file destinations' folders and TLS files.  A
`--database` on the command line is the user's shell path: relative to the working directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from certs import make_pki
from enginectl import Engine, create_database, delivered_files, run_cli, send_samples, write_config

from engine.config import load_config, parse_config


def _relative_config(folder: Path, **top: object) -> Path:
    """A config in `folder` whose database, log and file destination are relative paths."""
    config = write_config(folder, "sqlite:///var/engine.db", top={
        "destinations": [{"name": "archive", "type": "file", "directory": "out"}],
        "routes": [{"name": "all", "from": "referrals", "to": ["archive"]}], **top})
    data = yaml.safe_load(config.read_text())
    data["log"]["file"] = "var/log/engine.log"
    config.write_text(yaml.safe_dump(data))
    return config


@pytest.fixture(name="folders")
def folders_fixture(tmp_path: Path) -> tuple[Path, Path]:
    """(the config's folder, an empty working directory elsewhere)."""
    etc, cwd = tmp_path / "etc" / "hl7", tmp_path / "work"
    etc.mkdir(parents=True)
    cwd.mkdir()
    return etc, cwd


def test_run_puts_database_log_and_files_in_the_config_folder(folders: tuple[Path, Path]
                                                              ) -> None:
    """`run --config /…/etc/hl7/channels.yaml` from another folder: the database, the log and
    the delivered file land under etc/hl7, nothing in the working directory; a read command
    from there finds the same database."""
    etc, cwd = folders
    engine = Engine(_relative_config(etc), cwd=cwd).start()
    try:
        send_samples(engine.port, ("ref_i12_v251.hl7",))
        assert len(delivered_files(etc / "out", 1)) == 1
    finally:
        assert engine.stop() == 0
    assert (etc / "var" / "engine.db").is_file()
    assert (etc / "var" / "log" / "engine.log").is_file()
    assert list(cwd.iterdir()) == []
    out = run_cli("referrals", "--config", str(etc / "channels.yaml"), "--json", cwd=cwd)
    assert out.returncode == 0, out.stderr
    assert '"MFP-R-1001^PCPEHR"' in out.stdout
    assert list(cwd.iterdir()) == []


def test_a_database_option_is_relative_to_the_working_directory(folders: tuple[Path, Path]
                                                                ) -> None:
    """`--database sqlite:///here.db` names ./here.db, also for the ingest worker processes;
    the config's own database is not made."""
    etc, cwd = folders
    config = _relative_config(etc, workers=2)
    engine = Engine(config, cwd=cwd, args=("--database", "sqlite:///here.db")).start()
    try:
        send_samples(engine.port, ("ref_i12_v251.hl7",))
        assert len(delivered_files(etc / "out", 1)) == 1
    finally:
        assert engine.stop() == 0
    assert (cwd / "here.db").is_file()
    assert not (etc / "var" / "engine.db").exists() and not (etc / "here.db").exists()
    out = run_cli("referrals", "--config", str(config), "--database", "sqlite:///here.db", cwd=cwd)
    assert out.returncode == 0 and "MFP-R-1001^PCPEHR" in out.stdout, out.stderr


def test_tls_files_are_read_from_the_config_folder(folders: tuple[Path, Path]) -> None:
    """A listener's cert, key and client CA, and an MLLP destination's CA, cert and key, given
    relative, are read from the config's folder: `check-config` from elsewhere is OK."""
    etc, cwd = folders
    make_pki(etc / "tls")
    config = write_config(etc, create_database(f"sqlite:///{etc / 'engine.db'}"),
                          listen={"host": "127.0.0.1", "port": 0, "tls": {
                              "cert": "tls/server.pem", "key": "tls/server.key",
                              "client_ca": "tls/ca.pem"}},
                          top={"destinations": [{
                              "name": "spec", "type": "mllp", "host": "127.0.0.1", "port": 9,
                              "tls": {"ca": "tls/ca.pem", "cert": "tls/client.pem",
                                      "key": "tls/client.key"}}]})
    out = run_cli("check-config", "--config", str(config), cwd=cwd)
    assert out.returncode == 0, out.stderr
    loaded = load_config(config)
    listen, client = loaded.channels[0].tls, loaded.destinations[0].tls
    assert listen is not None and client is not None
    assert (listen.cert, listen.key, listen.client_ca) == tuple(
        str(etc / "tls" / name) for name in ("server.pem", "server.key", "ca.pem"))
    assert (client.ca, client.cert, client.key) == tuple(
        str(etc / "tls" / name) for name in ("ca.pem", "client.pem", "client.key"))


@pytest.mark.parametrize(("url", "expected"), [
    ("sqlite:///var/engine.db", "sqlite:///{etc}/var/engine.db"),
    ("sqlite+pysqlite:///e.db?timeout=5", "sqlite+pysqlite:///{etc}/e.db?timeout=5"),
    ("sqlite:////srv/engine.db", "sqlite:////srv/engine.db"),
    ("sqlite:///:memory:", "sqlite:///:memory:"),
    ("sqlite://", "sqlite://"),
    ("sqlite:///file:e.db?uri=true", "sqlite:///file:e.db?uri=true"),
    ("postgresql+psycopg://hub@db/engine", "postgresql+psycopg://hub@db/engine"),
])
def test_only_a_relative_sqlite_file_is_moved(tmp_path: Path, url: str, expected: str) -> None:
    """SQLAlchemy's `sqlite:///relative` becomes `sqlite:////absolute` under the config's folder;
    absolute files, in-memory databases, URI filenames and other databases are left alone."""
    source = tmp_path / "channels.yaml"
    config = parse_config({"database": url, "channels": [
        {"name": "a", "listen": {"port": 2575}, "accept": ["REF^I12"]}]}, str(source))
    assert config.database.url == expected.format(etc=tmp_path)


def test_defaults_are_relative_to_the_config_folder_too(tmp_path: Path) -> None:
    """Without `database:` and `log:`, the defaults (var/engine.db, var/log/engine.log) are
    under the config's folder; without a source file (parsed data) they stay as given."""
    data = {"channels": [{"name": "a", "listen": {"port": 2575}, "accept": ["REF^I12"]}]}
    config = parse_config(data, str(tmp_path / "channels.yaml"))
    assert config.database.url == f"sqlite:///{tmp_path}/var/engine.db"
    assert config.log.file == str(tmp_path / "var" / "log" / "engine.log")
    assert parse_config(data).database.url == "sqlite:///var/engine.db"
