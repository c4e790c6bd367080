"""Ingest workers (`workers: 2`): connections are shared between the main process and a worker
process, over real TCP into one real database.

Every message is stored once and acknowledged on its own connection; a resend that lands in the
other process is still a retransmission; `max_connections` counts both processes; and the worker
ends with the main process, even when that one is killed.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from enginectl import (
    Engine,
    delivered_files,
    metric_samples,
    numbered_referral,
    stored_messages,
    write_config,
)

from engine.mllp.blocking import MLLPClient
from engine.parsing import parse


def _message(n: int) -> tuple[str, bytes]:
    """A new referral each: a unique MSH-10 and RF1-6."""
    return numbered_referral("WRK", n)


def _rows(url: str) -> list[tuple[str, int]]:
    return [(str(c), int(r)) for c, r in stored_messages(url, "control_id", "retransmissions")]


def _workers_of(engine: Engine) -> set[int]:
    """Which processes stored messages: 0 is the main one (its events carry no `worker`)."""
    return {int(e.get("worker", 0)) for e in engine.events() if e["event"] == "message.stored"}


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2:].split()[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_connections_are_shared_and_each_message_stored_once(tmp_path: Path, db_url: str
                                                             ) -> None:
    """Eight connections, 50 messages each: every one AA'd with its own MSH-10 in MSA-2, stored
    exactly once, and both processes took some of the connections."""
    engine = Engine(write_config(tmp_path, db_url, top={"workers": 2})).start()
    results: dict[int, list[tuple[str, str]]] = {}

    def send(stream: int) -> None:
        got = results.setdefault(stream, [])
        with MLLPClient("127.0.0.1", engine.port, timeout=10) as client:
            for n in range(stream, 400, 8):
                control, payload = _message(n)
                (ack,) = client.exchange(payload)
                got.append((parse(ack)["MSA.1"], parse(ack)["MSA.2"]))
                assert got[-1][1] == control

    try:
        threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(a for acks in results.values() for a in acks) == sorted(
            ("AA", _message(n)[0]) for n in range(400))
        engine.wait_for("message.stored")
        time.sleep(0.6)  # the log is flushed twice a second
        assert _workers_of(engine) == {0, 1}
    finally:
        assert engine.stop() == 0
    assert "Traceback" not in engine.stderr  # both processes stopped cleanly
    stored = sorted(c for c, _ in _rows(db_url))
    assert stored == sorted(_message(n)[0] for n in range(400))


def test_with_destinations_the_main_process_delivers_and_workers_ingest(tmp_path: Path,
                                                                        sqlite_url: str) -> None:
    """A route and no `workers:` (the default is then 2): every connection goes to the worker
    (the main process keeps its core for delivery), and every message reaches the file
    destination once."""
    out = tmp_path / "out"
    engine = Engine(write_config(tmp_path, sqlite_url, top={
        "destinations": [{"name": "archive", "type": "file", "directory": str(out)}],
        "routes": [{"name": "all", "from": "referrals", "to": ["archive"]}]})).start()
    try:
        for n in range(6):
            with MLLPClient("127.0.0.1", engine.port, timeout=10) as client:
                (ack,) = client.exchange(_message(n)[1])
            assert parse(ack)["MSA.1"] == "AA"
        files = delivered_files(out, 6)
        time.sleep(0.6)  # the log is flushed twice a second
        assert _workers_of(engine) == {1}
    finally:
        assert engine.stop() == 0
    assert sorted(parse(f.read_bytes())["MSH.10"] for f in files) == [
        _message(n)[0] for n in range(6)]


def test_a_resend_in_the_other_process_is_a_retransmission(tmp_path: Path, db_url: str
                                                            ) -> None:
    """The same bytes sent on four connections (round robin puts them in both processes): one
    row, three retransmissions, four identical AA codes."""
    engine = Engine(write_config(tmp_path, db_url, top={"workers": 2})).start()
    control, payload = _message(1)
    try:
        codes = []
        for _ in range(4):
            with MLLPClient("127.0.0.1", engine.port, timeout=10) as client:
                (ack,) = client.exchange(payload)
                codes.append((parse(ack)["MSA.1"], parse(ack)["MSA.2"]))
    finally:
        assert engine.stop() == 0
    assert codes == [("AA", control)] * 4
    assert _rows(db_url) == [(control, 3)]


def test_max_connections_counts_every_process(tmp_path: Path, sqlite_url: str) -> None:
    """With max_connections 2 and two processes, a third open connection is refused (closed at
    once, `mllp.connection_refused`), and taken again once one closes."""
    config = write_config(tmp_path, sqlite_url, top={"workers": 2},
                          limits={"max_connections": 2})
    engine = Engine(config).start()
    try:
        first = MLLPClient("127.0.0.1", engine.port, timeout=5)
        second = MLLPClient("127.0.0.1", engine.port, timeout=5)
        for n, client in enumerate((first, second)):
            (ack,) = client.exchange(_message(n)[1])
            assert parse(ack)["MSA.1"] == "AA"
        third = MLLPClient("127.0.0.1", engine.port, timeout=5)
        assert _refused(third, _message(9)[1])
        assert engine.wait_for("mllp.connection_refused")
        third.close()
        first.close()
        deadline = time.monotonic() + 10
        while True:  # the close note travels from whichever process held `first`
            with MLLPClient("127.0.0.1", engine.port, timeout=5) as fourth:
                try:
                    acks = fourth.exchange(_message(3)[1])
                except ConnectionResetError:
                    acks = []
            if acks or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert [parse(a)["MSA.1"] for a in acks] == ["AA"]
        second.close()
    finally:
        assert engine.stop() == 0


def _refused(client: MLLPClient, payload: bytes) -> bool:
    """The engine closed this connection without an answer (a close or a reset)."""
    try:
        return client.exchange(payload) == []
    except ConnectionResetError:
        return True


def test_the_worker_ends_with_the_main_process(tmp_path: Path, sqlite_url: str) -> None:
    """SIGKILL of the main process: its worker exits too (no orphan keeps the database), and
    a restarted engine serves again."""
    engine = Engine(write_config(tmp_path, sqlite_url, top={"workers": 2})).start()
    assert engine.proc is not None
    deadline = time.monotonic() + 10
    while not (workers := _children(engine.proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(workers) == 1
    engine.kill()
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{workers[0]}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(workers[0])
    engine.start()
    try:
        with MLLPClient("127.0.0.1", engine.port, timeout=10) as client:
            (ack,) = client.exchange(_message(5)[1])
        assert parse(ack)["MSA.1"] == "AA"
    finally:
        assert engine.stop() == 0


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


@pytest.mark.parametrize("bad", [0, 65, "two"])
def test_workers_setting_is_checked(bad: object) -> None:
    """`workers:` is a whole number of processes, 1-64."""
    from engine.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as info:
        parse_config({"workers": bad, "channels": [
            {"name": "c", "listen": {"port": 0}, "accept": ["REF^I12"]}]})
    assert info.value.problems == [f"workers: expected an integer in 1-64, got {bad!r}"]


def test_workers_default_to_two_with_destinations_and_one_without() -> None:
    """Delivery gets a process of its own unless `workers:` says otherwise."""
    from engine.config import parse_config

    channels = [{"name": "c", "listen": {"port": 0}, "accept": ["REF^I12"]}]
    routed = {"destinations": [{"name": "d", "type": "file", "directory": "out"}],
              "routes": [{"name": "r", "from": "c", "to": ["d"]}]}
    assert parse_config({"channels": channels}).workers == 1
    assert parse_config({"channels": channels, **routed}).workers == 2
    assert parse_config({"channels": channels, "workers": 1, **routed}).workers == 1
    assert parse_config({"channels": channels, "workers": 3}).workers == 3


def _allowing(tmp_path: Path, sqlite_url: str, workers: int, allow: str) -> Engine:
    """An engine on loopback whose channel lets only `allow` connect."""
    directory = tmp_path / allow.replace("/", "_")
    directory.mkdir()
    return Engine(write_config(directory, sqlite_url, top={"workers": workers},
                               listen={"host": "127.0.0.1", "port": 0, "allow": [allow]})).start()


@pytest.mark.parametrize("workers", [1, 2])
def test_listen_allow_refuses_other_peers_over_tcp(tmp_path: Path, sqlite_url: str,
                                                   workers: int) -> None:
    """A channel whose `listen.allow` leaves out 127.0.0.1 closes a loopback connection at once
    (no ACK, nothing stored) and logs it; allowing 127.0.0.0/8 lets the same message in."""
    shut = _allowing(tmp_path, sqlite_url, workers, "10.0.0.0/8")
    try:
        with MLLPClient("127.0.0.1", shut.port, timeout=5) as client:
            # a worker still starting takes the connection once it runs: wait for the close
            assert client.exchange(_message(1)[1], 1, 20.0) == [] and client.closed
        assert shut.wait_for("mllp.connection_refused")[0]["reason"] == "not_allowed"
    finally:
        shut.stop()
    open_ = _allowing(tmp_path, sqlite_url, workers, "127.0.0.0/8")
    try:
        with MLLPClient("127.0.0.1", open_.port, timeout=5) as client:
            (ack,) = client.exchange(_message(1)[1])
        assert parse(ack)["MSA.1"] == "AA"
    finally:
        open_.stop()


def _metric_totals(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as answer:
        return metric_samples(answer.read().decode())


def test_metrics_count_the_frames_every_process_answered(tmp_path: Path, sqlite_url: str
                                                         ) -> None:
    """`workers: 3` with `http:`: twelve connections, each a new referral and a garbage frame.
    The main process's /metrics counts all 24 frames by type and ACK code, every ACK latency and
    every committed frame, wherever they were answered (the workers send theirs once a
    second); and more than one process took connections."""
    engine = Engine(write_config(tmp_path, sqlite_url, top={
        "workers": 3, "http": {"listen": {"host": "127.0.0.1", "port": 0}}})).start()
    try:
        base = f"http://127.0.0.1:{engine.wait_for('http.listening')[0]['port']}"
        for n in range(12):
            with MLLPClient("127.0.0.1", engine.port, timeout=10) as client:
                assert parse(client.exchange(_message(n)[1])[0])["MSA.1"] == "AA"
                assert parse(client.exchange(b"not hl7\r")[0])["MSA.1"] == "AR"
        want = {(("ack", "AA"), ("channel", "referrals"), ("type", "REF^I12")): 12.0,
                (("ack", "AR"), ("channel", "referrals"), ("type", "unknown")): 12.0}
        deadline = time.monotonic() + 30
        while True:  # the workers' figures arrive within a second or two
            samples = _metric_totals(base)
            counted = {labels: v for (name, labels), v in samples.items()
                       if name == "hl7_engine_messages_total"}
            if counted == want or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert counted == want
        assert samples[("hl7_engine_ack_latency_seconds_count",
                        (("channel", "referrals"),))] == 24
        assert samples[("hl7_engine_commit_batch_size_sum", ())] == 24
        time.sleep(0.6)  # the log is flushed twice a second
        assert len(_workers_of(engine)) > 1
    finally:
        assert engine.stop() == 0
