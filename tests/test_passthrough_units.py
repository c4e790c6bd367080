"""Pass-through ACKs without sockets: the relayed ACK's bytes, the waiters' timeout, the config.

The end-to-end behaviour (a real sender, engine and downstream over TCP) is in
`tests/test_passthrough.py`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from twisted.internet.task import Clock

from engine.ack import AckBuilder
from engine.config import ConfigError, parse_config
from engine.outbound.passthrough import Waiters
from engine.parsing import parse

NOW = datetime(2026, 11, 28, 9, 30, 0, tzinfo=UTC)
SENT = parse(b"MSH|^~\\&|PCPEHR|NORTHCLINIC|REFTRACK|HUB|20261128||REF^I12^REF_I12|C-17|P|2.5.1\r"
             b"PID|1||TESTMRN^^^NORTHCLINIC^MR\r")
HEAD = "MSH|^~\\&|REFTRACK|HUB|PCPEHR|NORTHCLINIC|20261128093000+0000||ACK^I12^ACK|ACK1|P|2.5.1\r"


@pytest.fixture(name="builder")
def builder_fixture() -> AckBuilder:
    return AckBuilder("REFTRACK", "HUB", control_ids=lambda: "ACK1", clock=lambda: NOW)


def test_relay_keeps_msa1_and_err_and_rebuilds_msh_and_msa2(builder: AckBuilder) -> None:
    """MSA-1 and the ERR segment come from the downstream; MSH and MSA-2 are the sender's."""
    downstream = (b"MSH|^~\\&|SPECEHR|SOUTH|REFTRACK|HUB|20261128||ACK^I12^ACK|D-9|P|2.5.1\r"
                  b"MSA|AE|OUT-1\r"
                  b"ERR||RF1^1^6|101^Required field missing^HL70357|E||||key \\F\\ missing\r")
    assert builder.relay(SENT, downstream) == (
        HEAD + "MSA|AE|C-17\r"
        "ERR||RF1^1^6|101^Required field missing^HL70357|E||||key \\F\\ missing\r").encode()


def test_relay_of_an_accept_has_no_err(builder: AckBuilder) -> None:
    """A downstream AA becomes an AA for the sender's control id, nothing else."""
    downstream = b"MSH|^~\\&|SPECEHR|SOUTH|||20261128||ACK|D-9|P|2.3\rMSA|AA|OUT-1\r"
    assert builder.relay(SENT, downstream) == (HEAD + "MSA|AA|C-17\r").encode()


def test_relay_re_encodes_other_delimiters(builder: AckBuilder) -> None:
    """A downstream with its own delimiters is re-encoded: its components become `^`, a literal
    `|` in a value becomes `\\F\\`; MSA-3 (v2.3 text) is copied too."""
    downstream = (b"MSH#$%*@#SPECEHR#SOUTH###20261128##ACK$I12#D-9#P#2.3\r"
                  b"MSA#AR#OUT-1#not$here|there\r"
                  b"ERR#RF1$1$6$101@Required@HL70357\r")
    assert builder.relay(SENT, downstream) == (
        HEAD + "MSA|AR|C-17|not^here\\F\\there\r"
        "ERR|RF1^1^6^101&Required&HL70357\r").encode()


@pytest.mark.parametrize("downstream", [b"not hl7 at all", b"MSH|^~\\&|X|Y\rMSA|ZZ|OUT-1\r",
                                        b"MSH|^~\\&|X|Y|||20261128||ACK|D|P|2.5.1\r"])
def test_an_unreadable_downstream_answer_is_ae_207(builder: AckBuilder, downstream: bytes
                                                   ) -> None:
    """Garbage, an unknown MSA-1 or no MSA at all: the sender gets AE 207, never an accept."""
    ack = builder.relay(SENT, downstream)
    assert ack.startswith(HEAD.encode() + b"MSA|AE|C-17\rERR|||207^")


def test_timeout_answer_is_ae_207_with_the_reason(builder: AckBuilder) -> None:
    """No answer in time: one AE with ERR-3 207 and the reason in ERR-8."""
    assert builder.timed_out(SENT, "no answer from specialist-ehr within 5 s") == (
        HEAD + "MSA|AE|C-17\r"
        "ERR|||207^Application internal error^HL70357|E||||"
        "no answer from specialist-ehr within 5 s\r").encode()


def test_waiters_get_the_answer_or_none_after_the_timeout() -> None:
    """Two senders wait for one row and both get its answer; a third times out with None and
    is forgotten, so a late answer reaches nobody."""
    clock = Clock()
    clock.callFromThread = lambda f, *a: f(*a)  # type: ignore[attr-defined]
    waiters = Waiters(clock)
    got: list[Any] = []
    waiters.wait(1, 5).addCallback(got.append)
    waiters.wait(1, 5).addCallback(got.append)
    waiters.wait(2, 5).addCallback(got.append)
    report = waiters.reporter()
    assert report(1, b"ACK-1") is True
    assert got == [b"ACK-1", b"ACK-1"]
    clock.advance(5)
    assert got == [b"ACK-1", b"ACK-1", None]
    assert report(2, b"late") is False and not waiters.waiting(2)
    assert clock.getDelayedCalls() == []


def _config(ack: dict[str, Any], destination: dict[str, Any] | None = None,
            route_to: str = "specialist-ehr") -> dict[str, Any]:
    return {
        "channels": [{"name": "referrals", "listen": {"port": 0}, "accept": ["REF^I12"],
                      "ack": ack}],
        "destinations": [destination or {"name": "specialist-ehr", "type": "mllp",
                                         "host": "127.0.0.1", "port": 6661},
                         {"name": "archive", "type": "file", "directory": "/tmp/x"}],
        "routes": [{"name": "r", "from": "referrals", "to": [route_to]}],
    }


def test_downstream_mode_parses() -> None:
    """`ack: {mode: downstream, destination, timeout_s}` names the relayed destination."""
    config = parse_config(_config({"mode": "downstream", "destination": "specialist-ehr",
                                   "timeout_s": 5}))
    ack = config.channels[0].ack
    assert (ack.passthrough, ack.timeout_s) == ("specialist-ehr", 5.0)
    assert parse_config(_config({})).channels[0].ack.passthrough == ""


@pytest.mark.parametrize(("ack", "route_to", "problem"), [
    ({"mode": "relay"}, "specialist-ehr",
     "channels[0].ack.mode: expected commit or downstream, got 'relay'"),
    ({"mode": "downstream"}, "specialist-ehr",
     "channels[0].ack.destination: expected a non-empty string"),
    ({"destination": "specialist-ehr"}, "specialist-ehr",
     "channels[0].ack.destination: only with mode: downstream"),
    ({"mode": "downstream", "destination": "nowhere"}, "specialist-ehr",
     "channels[0].ack.destination: no destination named 'nowhere'"),
    ({"mode": "downstream", "destination": "archive"}, "archive",
     "channels[0].ack.destination: 'archive' is a file destination; only an mllp destination "
     "answers with an ACK"),
    ({"mode": "downstream", "destination": "specialist-ehr"}, "archive",
     "channels[0].ack.destination: no route from channel 'referrals' sends to 'specialist-ehr'"),
    ({"mode": "downstream", "destination": "specialist-ehr", "timeout_s": 0}, "specialist-ehr",
     "channels[0].ack.timeout_s: expected a number in 0.1-3600, got 0"),
])
def test_downstream_mode_problems(ack: dict[str, Any], route_to: str, problem: str) -> None:
    """Each misconfiguration of pass-through is reported with its YAML path."""
    with pytest.raises(ConfigError) as info:
        parse_config(_config(ack, route_to=route_to))
    assert info.value.problems == [problem]
