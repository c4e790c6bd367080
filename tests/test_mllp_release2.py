"""MLLP release 2 on a listener (docs/hl7-rules.md, `framing.mllp_release: 2`), end to end over real
TCP into a real SQLite file: the commit ACK frame once the message is stored, then the HL7 ACK,
which R2 never replaces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from enginectl import ROOT, Engine, sample_payload, write_config

from engine.config import ConfigError, parse_config
from engine.mllp.blocking import MLLPClient
from engine.parsing import parse


@pytest.mark.parametrize("workers", [1, 2])
def test_commit_ack_then_the_hl7_ack_for_every_frame(tmp_path: Path, sqlite_url: str,
                                                      workers: int) -> None:
    """A referral, a rejected version and garbage are each stored, so each gets 0x06 first;
    then AA, AR 203 and AR; `hl7-engine send` prints the commit line before the ACK's."""
    config = write_config(tmp_path, sqlite_url, {"workers": workers},
                          framing={"mllp_release": 2})
    engine = Engine(config).start()
    try:
        with MLLPClient("127.0.0.1", engine.port) as client:
            answers = [client.exchange(m, 2) for m in (
                sample_payload("ref_i12_v251.hl7"), sample_payload("reject_version.hl7"),
                b"GET / HTTP/1.0\r\n\r\n")]
        sent = subprocess.run([sys.executable, "-m", "engine", "send",
                               str(ROOT / "samples" / "siu_s12_v251.hl7"),
                               "--to", f"127.0.0.1:{engine.port}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    finally:
        assert engine.stop() == 0
    assert [a[0] for a in answers] == [b"\x06"] * 3
    assert [parse(a[1])["MSA.1"] for a in answers] == ["AA", "AR", "AR"]
    assert parse(answers[1][1])["ERR.1.4.1"] == "203"  # a v2.2 sender: ERR-1
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.splitlines() == [
        f"{ROOT / 'samples' / 'siu_s12_v251.hl7'}: MLLP commit ACK (stored)",
        f"{ROOT / 'samples' / 'siu_s12_v251.hl7'}: AA SIU-S12-V251"]


def test_release_1_is_the_default_and_only_1_or_2_is_taken() -> None:
    base = {"name": "a", "listen": {"port": 0}, "accept": ["REF^I12"]}
    assert parse_config({"channels": [base]}).channels[0].mllp_release == 1
    with pytest.raises(ConfigError) as info:
        parse_config({"channels": [{**base, "framing": {"mllp_release": 3}}]})
    assert info.value.problems == [
        "channels[0].framing.mllp_release: expected an integer in 1-2, got 3"]
