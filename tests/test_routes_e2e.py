"""Routing to a file destination, end to end: filter, transform, queue in the message's
transaction, atomic files in queue order, and the `queue` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from enginectl import (
    ROOT,
    Engine,
    create_database,
    delivered_files,
    run_cli,
    sample_payload,
    send_samples,
    write_config,
)

from engine.mllp.blocking import MLLPClient
from engine.parsing import parse


def test_routed_messages_land_as_files_in_queue_order(tmp_path: Path, db_url: str) -> None:
    """REF^I12 from PCPEHR goes to the archive with MSH-5 rewritten; a retransmission, a
    rejected message and a message the filter does not take are not routed."""
    out = tmp_path / "out"
    config = write_config(tmp_path, db_url, top={
        "destinations": [{"name": "archive", "type": "file", "directory": str(out)}],
        "routes": [{"name": "refs-to-archive", "from": "referrals",
                    "when": {"type": ["REF^I12"], "sender": "PCPEHR"},
                    "transform": [{"set": {"MSH.5": "ARCHIVE"}}],
                    "to": ["archive"]}]})
    engine = Engine(config).start()
    try:
        ref = sample_payload("ref_i12_v251.hl7")
        ref28 = sample_payload("ref_i12_v28.hl7")
        with MLLPClient("127.0.0.1", engine.port) as client:
            codes = [parse(client.exchange(m)[0])["MSA.1"] for m in (
                ref, ref, sample_payload("reject_version.hl7"),
                sample_payload("siu_s12_v251.hl7"), ref28)]
        assert codes == ["AA", "AA", "AR", "AA", "AA"]
        files = delivered_files(out, 2)
        time.sleep(1.0)  # nothing more may arrive
        files = sorted(out.glob("*.hl7"))
        assert [f.name for f in files] == ["000000000001.hl7", "000000000002.hl7"]
        first = parse(files[0].read_bytes())
        assert (first["MSH.5"], first["MSH.10"]) == ("ARCHIVE", parse(ref)["MSH.10"])
        assert files[0].read_bytes() == ref.replace(b"|REFTRACK|HUB|", b"|ARCHIVE|HUB|", 1)
        assert parse(files[1].read_bytes())["MSH.10"] == parse(ref28)["MSH.10"]
        assert not list(out.glob(".*"))  # no temporary file left behind
        shown = subprocess.run([sys.executable, "-m", "engine", "queue", "--json", "--config",
                                str(config)], cwd=ROOT, capture_output=True, text=True,
                               timeout=60)
        state = json.loads(shown.stdout)
        assert [(q["destination"], q["depth"], q["delivered"], q["dead_letters"])
                for q in state] == [("archive", 0, 2, 0)]
    finally:
        engine.stop()


def test_route_config_errors_name_their_yaml_path(tmp_path: Path) -> None:
    """Unknown channels and destinations in a route are reported with the file's path and their
    YAML paths."""
    config = write_config(tmp_path, "sqlite:///x.db", top={
        "destinations": [{"name": "archive", "type": "ftp", "directory": "x"}],
        "routes": [{"name": "r", "from": "nowhere", "to": ["missing"]}]})
    out = subprocess.run([sys.executable, "-m", "engine", "check-config", "--config",
                          str(config)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [f"{config}: {line}" for line in (
        "destinations[0].type: expected file or mllp, got 'ftp'",
        "routes[0].from: no channel named 'nowhere'",
        "routes[0].to[0]: no destination named 'missing'",
    )]


def test_routed_messages_reach_an_mllp_destination_in_order(tmp_path: Path, db_url: str) -> None:
    """A route to an MLLP destination delivers every accepted message once, in order, to a
    real downstream listener, and `queue` shows it drained."""
    from sink import Sink

    sink = Sink()
    config = write_config(tmp_path, db_url, top={
        "destinations": [{"name": "specialist", "type": "mllp", "host": "127.0.0.1",
                          "port": sink.port, "ack_timeout_s": 5,
                          "retry": {"initial_s": 0.1, "max_s": 1, "max_attempts": 5}}],
        "routes": [{"name": "all", "from": "referrals", "to": ["specialist"]}]})
    engine = Engine(config).start()
    try:
        sent = send_samples(engine.port, ("ref_i12_v251.hl7", "siu_s12_v251.hl7",
                                          "ref_i12_v28.hl7"))
        deadline = time.monotonic() + 10
        while len(sink.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sink.received == sent
        shown = subprocess.run([sys.executable, "-m", "engine", "queue", "--json", "--config",
                                str(config)], cwd=ROOT, capture_output=True, text=True,
                               timeout=60)
        assert [(q["destination"], q["depth"], q["delivered"]) for q in
                json.loads(shown.stdout)] == [("specialist", 0, 3)]

        def cli(*args: str) -> str:
            return run_cli(*args, config=config).stdout

        first = json.loads(cli("show", "1", "--json"))
        assert [(d["destination"], d["status"], [a["ack"] for a in d["attempts"]])
                for d in first["deliveries"]] == [("specialist", "delivered", ["AA"])]
        lines = cli("tail", "-n", "3").splitlines()
        assert len(lines) == 3 and all("→ specialist AA" in line for line in lines)
    finally:
        engine.stop()
        sink.close()


def test_queue_commands_from_the_cli(tmp_path: Path, sqlite_url: str) -> None:
    """pause/resume/retry/release/replay answer in words, change the queue's state, reject an
    unknown destination, and `queue` shows a paused destination as paused."""
    config = write_config(tmp_path, create_database(sqlite_url), top={
        "destinations": [{"name": "archive", "type": "file", "directory": str(tmp_path / "o")}]})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, config=config)

    assert cli("pause", "archive").stdout.strip() == "archive: paused"
    state = json.loads(cli("queue", "--json").stdout)
    assert [(q["destination"], q["state"]) for q in state] == [("archive", "paused")]
    assert cli("resume", "archive").stdout.strip() == "archive: running"
    assert cli("retry", "archive").stdout.strip() == "archive: retrying its head now"
    assert cli("release", "archive").stdout.strip() == "archive: 0 dead letter(s) queued again"
    missing = cli("replay", "1", "--to", "archive")
    assert missing.returncode == 1 and "no message with id 1" in missing.stderr
    unknown = cli("pause", "nowhere")
    assert unknown.returncode == 1 and "no destination 'nowhere'" in unknown.stderr


def test_sigkill_mid_delivery_resumes_at_least_once(tmp_path: Path, db_url: str) -> None:
    """Engine killed with SIGKILL while delivering: after restart delivery resumes in order; the
    downstream sees every message, each once except at most the one in flight."""
    from collections import Counter

    from sink import Sink, ack_for

    def slow(message: bytes, _n: int) -> bytes:
        time.sleep(0.02)
        return ack_for(message)

    sink = Sink(slow)
    config = write_config(tmp_path, db_url, top={
        "destinations": [{"name": "down", "type": "mllp", "host": "127.0.0.1",
                          "port": sink.port, "ack_timeout_s": 5}],
        "routes": [{"name": "all", "from": "referrals", "to": ["down"]}]})
    template = sample_payload("ref_i12_v251.hl7")
    sent = [template.replace(b"REF-I12-V251", f"K-{n:03d}".encode())
            .replace(b"MFP-R-1001", f"K-R-{n:03d}".encode()) for n in range(60)]
    engine = Engine(config).start()
    try:
        with MLLPClient("127.0.0.1", engine.port) as client:
            assert all(parse(client.exchange(m)[0])["MSA.1"] == "AA" for m in sent)
        deadline = time.monotonic() + 20
        while len(sink.received) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        engine.kill()
        assert 10 <= len(sink.received) < len(sent), "the kill must land mid-delivery"
        engine.start()
        deadline = time.monotonic() + 30
        while len({parse(m)["MSH.10"] for m in sink.received}) < len(sent) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        engine.stop()
        sink.close()
    received = [parse(m)["MSH.10"] for m in sink.received]
    counts = Counter(received)
    assert set(counts) == {parse(m)["MSH.10"] for m in sent}
    assert sum(n - 1 for n in counts.values()) <= 1
    firsts = list(dict.fromkeys(received))
    assert firsts == [parse(m)["MSH.10"] for m in sent]  # queue order kept across the restart
