"""Reloading the configuration of a running engine with SIGHUP: a real engine process, real
sockets, a real SQLite file.

A bad file changes nothing; an added channel listens; a removed one stops accepting and its
open connections close once their frames are answered; a changed one is replaced while its old
connections finish; unchanged channels keep their connections; routes apply to the next batch.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from enginectl import Engine, delivered_files, numbered_referral, run_cli, sample_payload

from engine.config import parse_config
from engine.mllp.blocking import MLLPClient
from engine.parsing import parse
from engine.reload import diff

ACCEPT = ["REF^I12-I15", "SIU^S12-S26"]


def _channel(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "listen": {"host": "127.0.0.1", "port": 0}, "accept": ACCEPT,
            "ack": {"application": "REFTRACK", "facility": "HUB"}, **extra}


def _write(path: Path, channels: list[dict[str, Any]], **top: Any) -> None:
    config = {"database": {"url": f"sqlite:///{path.parent / 'engine.db'}"},
              "log": {"file": str(path.parent / "engine.log"), "level": "info"},
              "channels": channels, **top}
    path.write_text(yaml.safe_dump(config))


class Running:
    """An engine whose channels' ports are read from its log, by channel name."""

    def __init__(self, config: Path) -> None:
        self.engine = Engine(config).start()

    def ports(self) -> dict[str, int]:
        return {e["channel"]: int(e["port"]) for e in self.engine.events()
                if e.get("event") == "mllp.listening"}

    def hup(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        """SIGHUP, then the first `event` logged after it."""
        seen = len(self.engine.events())
        assert self.engine.proc is not None
        self.engine.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.engine.events()[seen:]:
                if e.get("event") == event:
                    return e
            time.sleep(0.05)
        raise AssertionError(f"no {event} after SIGHUP")


@pytest.fixture(name="running")
def running_fixture(tmp_path: Path) -> Iterator[tuple[Running, Path]]:
    config = tmp_path / "channels.yaml"
    _write(config, [_channel("main"), _channel("side")])
    running = Running(config)
    yield running, config
    running.engine.stop()


def _aa(port: int, payload: bytes) -> str:
    with MLLPClient("127.0.0.1", port, timeout=10) as client:
        return str(parse(client.exchange(payload)[0])["MSA.1"])


def test_a_bad_file_changes_nothing(running: tuple[Running, Path]) -> None:
    """A reload of a file with errors logs `config.reload_failed` with the same YAML-path
    errors as check-config, and the engine goes on as before on the same ports."""
    r, config = running
    ports = r.ports()
    config.write_text(config.read_text().replace("accept:", "acept:", 1))
    failed = r.hup("config.reload_failed")
    assert any("channels[0].acept" in p for p in failed["problems"])
    assert _aa(ports["main"], sample_payload("ref_i12_v251.hl7")) == "AA"
    assert r.engine.proc is not None and r.engine.proc.poll() is None


def test_added_channel_listens_and_removed_one_closes_after_answering(
        running: tuple[Running, Path]) -> None:
    """`side` removed, `extra` added: `extra` listens; `side` refuses new connections, and its
    idle open connection is closed (one with a frame in work closes once it is answered:
    test_mllp_server covers that step by step).  `main`'s open connection stays open and is
    answered across the reload."""
    r, config = running
    ports = r.ports()
    keep = MLLPClient("127.0.0.1", ports["main"], timeout=10)
    side = socket.create_connection(("127.0.0.1", ports["side"]), timeout=10)
    try:
        assert parse(keep.exchange(numbered_referral("KEEP", 1)[1])[0])["MSA.1"] == "AA"
        _write(config, [_channel("main"), _channel("extra")])
        reloaded = r.hup("config.reloaded")
        assert (reloaded["channels_added"], reloaded["channels_removed"]) == (["extra"], ["side"])
        assert _aa(r.ports()["extra"], sample_payload("siu_s12_v251.hl7")) == "AA"
        assert side.recv(65536) == b""  # closed by the engine
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", ports["side"]), timeout=2).close()
        assert parse(keep.exchange(numbered_referral("KEEP", 2)[1])[0])["MSA.1"] == "AA"
    finally:
        keep.close()
        side.close()


def test_changed_channel_takes_new_rules_on_its_port(running: tuple[Running, Path]) -> None:
    """`main` changed to accept REF only: on the same port, a new connection's SIU is now AR
    201, while `side` (unchanged) still takes SIU."""
    r, config = running
    ports = r.ports()
    assert _aa(ports["main"], sample_payload("siu_s12_v251.hl7")) == "AA"
    _write(config, [{**_channel("main"), "accept": ["REF^I12-I15"]}, _channel("side")])
    reloaded = r.hup("config.reloaded")
    assert reloaded["channels_changed"] == ["main"]
    siu = sample_payload("siu_s15_v251.hl7")
    assert _aa(ports["main"], siu) == "AR"
    assert _aa(ports["side"], sample_payload("siu_s26_v251.hl7")) == "AA"


def test_routes_apply_to_the_next_batch(running: tuple[Running, Path], tmp_path: Path) -> None:
    """A route and a file destination added by a reload take the next message."""
    r, config = running
    ports = r.ports()
    out = tmp_path / "out"
    _write(config, [_channel("main"), _channel("side")], workers=1,
           destinations=[{"name": "archive", "type": "file", "directory": str(out)}],
           routes=[{"name": "keep", "from": "main", "to": ["archive"]}])
    reloaded = r.hup("config.reloaded")
    assert reloaded["routes"] is True and reloaded["destinations"] == ["archive"]
    assert _aa(ports["main"], sample_payload("ref_i12_v251.hl7")) == "AA"
    assert len(delivered_files(out, 1)) == 1


def test_a_database_change_is_refused(running: tuple[Running, Path], tmp_path: Path) -> None:
    """The database is read once at start: a reload that changes it is refused whole."""
    r, config = running
    data = yaml.safe_load(config.read_text())
    data["database"]["url"] = f"sqlite:///{tmp_path / 'other.db'}"
    data["channels"].append(_channel("extra"))
    config.write_text(yaml.safe_dump(data))
    failed = r.hup("config.reload_failed")
    assert "database changed" in failed["problems"][0]
    assert "extra" not in r.ports()


def test_diff_names_what_changed() -> None:
    """The pure difference: channels added, removed, changed; routes; restart-only keys."""
    def config(**top: Any) -> Any:
        return parse_config({"channels": [_channel("a"), _channel("b")], **top})

    old = config()
    new = parse_config({"channels": [{**_channel("a"), "accept": ["REF^I12"]}, _channel("c")],
                        "workers": 1})
    change = diff(old, new)
    assert (change.added, change.removed, change.changed) == (("c",), ("b",), ("a",))
    assert not change.restart and not change.routes
    assert diff(old, config()).empty


def _reload(config: Path) -> tuple[int, str]:
    """`hl7-engine reload --config CONFIG` (in this process's folder): its exit code and
    everything it printed."""
    done = run_cli("reload", config=config, cwd=None, merge_stderr=True)
    return done.returncode, done.stdout


def test_reload_command_checks_the_file_then_signals(running: tuple[Running, Path]) -> None:
    """`hl7-engine reload`: a file with errors is reported (exit 2) and the engine is not
    signalled; a good one is signalled through the pid file beside the config (exit 0) and
    the engine logs `config.reloaded`."""
    r, config = running
    assert (config.parent / "channels.pid").read_text().strip() == str(r.engine.proc.pid)  # type: ignore[union-attr]
    good = config.read_text()
    config.write_text(good.replace("accept:", "acept:", 1))
    code, out = _reload(config)
    assert code == 2 and "channels[0].acept" in out
    _write(config, [_channel("main")])
    seen = len(r.engine.events())
    code, out = _reload(config)
    assert code == 0, out
    deadline = time.monotonic() + 10
    while not [e for e in r.engine.events()[seen:] if e.get("event") == "config.reloaded"]:
        assert time.monotonic() < deadline, "no config.reloaded"
        time.sleep(0.05)


def test_reload_command_without_an_engine(tmp_path: Path) -> None:
    """No engine runs with this config: exit 1, saying so."""
    config = tmp_path / "channels.yaml"
    _write(config, [_channel("main")])
    code, out = _reload(config)
    assert code == 1 and "no engine is running" in out
