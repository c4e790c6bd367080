"""Delivery order: `order: strict | {per_key: PATH}` in channels.yaml, and the lanes a worker keeps
(`engine.routes.ordering.Holds`), without sockets or a database."""

from __future__ import annotations

from typing import Any

import pytest

from engine.config import ConfigError, parse_config
from engine.routes.ordering import WHOLE, Holds

CHANNEL = {"name": "referrals", "listen": {"port": 0}, "accept": ["REF^I12"]}


def _destination(**fields: Any) -> dict[str, Any]:
    return {"name": "down", "type": "mllp", "host": "127.0.0.1", "port": 6661, **fields}


def _order_problems(order: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({"channels": [CHANNEL], "destinations": [_destination(order=order)]})
    return info.value.problems


# --- configuration ----------------------------------------------------------------------------


def test_order_defaults_to_strict_and_accepts_per_key_paths() -> None:
    """No `order`, or `order: strict`, is strict (empty key path); `{per_key: PATH}` keeps the
    path, for MLLP and file destinations alike."""
    config = parse_config({"channels": [CHANNEL], "destinations": [
        _destination(name="a"), _destination(name="b", order="strict"),
        _destination(name="c", order={"per_key": "PID.3.1"}),
        _destination(name="d", order={"per_key": " PID.3[2].1 "}),
        {"name": "e", "type": "file", "directory": "out", "order": {"per_key": "PV1.19"}}]})
    assert [d.order_key for d in config.destinations] == ["", "", "PID.3.1", "PID.3[2].1",
                                                          "PV1.19"]


@pytest.mark.parametrize(("order", "problem"), [
    ("per_key", "destinations[0].order: expected strict or {per_key: HL7 path}, got 'per_key'"),
    ("STRICT", "destinations[0].order: expected strict or {per_key: HL7 path}, got 'STRICT'"),
    (["PID.3.1"], "destinations[0].order: expected strict or {per_key: HL7 path}, got a list"),
    ({}, "destinations[0].order.per_key: required: the HL7 path of the key, e.g. PID.3.1"),
    ({"per_key": "PID.0.1"}, "destinations[0].order.per_key: HL7 indexes are 1-based, got "
                             "'PID.0.1'"),
    ({"per_key": "pid3"}, "destinations[0].order.per_key: not an HL7 path: 'pid3' (expected "
                          "e.g. PID.3[2].1)"),
    ({"per_key": "PID"}, "destinations[0].order.per_key: expected a path to a field, got a "
                         "whole segment 'PID'"),
    ({"per_key": 3}, "destinations[0].order.per_key: expected an HL7 path such as PID.3.1, got "
                     "a number"),
])
def test_order_problems_name_their_yaml_path(order: Any, problem: str) -> None:
    """Every malformed `order` is one precise problem at its YAML path."""
    assert _order_problems(order) == [problem]


def test_order_unknown_key_is_reported() -> None:
    """A key beside `per_key` is an unknown key, reported with the keys allowed."""
    assert _order_problems({"per_key": "PID.3.1", "by": "x"}) == [
        "destinations[0].order.by: unknown key (expected one of: per_key)"]


# --- lanes ------------------------------------------------------------------------------------


def test_strict_has_one_lane_that_a_failure_holds() -> None:
    """Every row of a strict destination is in the one lane; a failure holds it until its
    retry time, and the first failure (only) reports the start of a blocked episode."""
    holds = Holds(per_key=False)
    assert holds.lane("100001") is WHOLE and holds.lane("") is WHOLE
    assert holds.failed(WHOLE, retry_at=10.0) is True
    assert not holds.ready(WHOLE, now=9.9) and holds.ready(WHOLE, now=10.0)
    assert holds.failed(WHOLE, retry_at=20.0) is False  # still the same episode
    assert holds.waiting_keys(now=0.0) == []  # nothing to leave out of the query
    assert holds.delivered(WHOLE) == [WHOLE]
    assert holds.delivered(WHOLE) == []  # recovered once


def test_per_key_failure_holds_only_its_key() -> None:
    """A failing key waits its own backoff; other keys stay ready; its delivery recovers it."""
    holds = Holds(per_key=True)
    holds.failed(holds.lane("A"), retry_at=5.0)
    assert not holds.ready("A", now=1.0) and holds.ready("B", now=1.0)
    assert holds.waiting_keys(now=1.0) == ["A"] and holds.waiting_keys(now=5.0) == []
    assert holds.delivered("B") == []
    assert holds.delivered("A") == ["A"]
    assert holds.ready("A", now=1.0)


def test_an_unreachable_destination_holds_every_key_and_recovers_once() -> None:
    """A destination-wide wait holds every key; the next delivery of any key ends it."""
    holds = Holds(per_key=True)
    assert holds.failed(WHOLE, retry_at=5.0) is True
    assert not holds.ready("A", now=1.0) and not holds.ready("B", now=1.0)
    assert holds.delivered("B") == [WHOLE]
    assert holds.ready("A", now=1.0)


def test_a_dead_letter_moves_its_key_on_but_it_recovers_only_by_a_delivery() -> None:
    """After a dead letter the key's next row may go at once; the key counts as failing (no new
    `key_blocked`) until one of its rows is delivered."""
    holds = Holds(per_key=True)
    holds.failed("A", retry_at=5.0)
    holds.moved_on("A")
    assert holds.ready("A", now=1.0)
    assert holds.failed("A", retry_at=6.0) is False
    assert holds.delivered("A") == ["A"]


def test_retry_forgets_every_wait() -> None:
    """`hl7-engine retry` makes every held key and the destination ready now."""
    holds = Holds(per_key=True)
    holds.failed("A", retry_at=50.0)
    holds.failed(WHOLE, retry_at=50.0)
    holds.forget_waits()
    assert holds.ready("A", now=0.0)


def test_prune_forgets_keys_with_no_queued_row() -> None:
    """Failing keys with nothing queued and no wait are forgotten, so memory stays bounded;
    keys still queued or waiting are kept."""
    holds = Holds(per_key=True)
    for key in ("A", "B", "C"):
        holds.failed(key, retry_at=9.0)
    holds.moved_on("A")
    holds.moved_on("B")
    holds.prune(["B"])
    assert holds.failing == {"B", "C"}
