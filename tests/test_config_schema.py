"""The schema of channels.yaml: declared once, so every problem in a file comes back at once
with its path; its JSON Schema (docs/channels.schema.json, for editors) is current, takes the
configurations shipped and those the tests write, and refuses an unknown key; and loading a
configuration loads neither the ledger nor SQLAlchemy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from enginectl import write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import ConfigError, parse_config
from engine.config.schema import json_schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "docs" / "channels.schema.json"


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))


def _configs() -> list[tuple[str, Any]]:
    """Every configuration file shipped: channels.yaml and the YAML files in samples/ and tests/
    that have channels."""
    found = [(str(p.relative_to(ROOT)), yaml.safe_load(p.read_text()))
             for p in [ROOT / "channels.yaml", *sorted((ROOT / "samples").rglob("*.y*ml")),
                       *sorted((ROOT / "tests").rglob("*.y*ml"))]]
    return [(name, data) for name, data in found if isinstance(data, dict) and "channels" in data]


CONFIGS = _configs()


def test_the_committed_schema_is_current() -> None:
    """docs/channels.schema.json is what the models give (`make schema` rewrites it)."""
    assert SCHEMA.read_text() == json_schema(), "stale: run `make schema`"


@pytest.mark.parametrize(("name", "data"), CONFIGS, ids=[name for name, _ in CONFIGS])
def test_the_shipped_configurations_are_valid_for_the_schema(name: str, data: Any) -> None:
    """The shipped configuration files pass the JSON Schema, and load."""
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _validator().iter_errors(data)]
    assert errors == [], name
    parse_config(data)


def test_the_end_to_end_tests_configuration_is_valid_for_the_schema(tmp_path: Path) -> None:
    """The configuration the end-to-end tests start the engine with (enginectl.write_config),
    with destinations and routes added, passes the JSON Schema."""
    top = {"destinations": [{"name": "d", "type": "file", "directory": "out"}],
           "routes": [{"name": "r", "from": "referrals", "to": ["d"]}]}
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'e.db'}", top)
    assert list(_validator().iter_errors(yaml.safe_load(path.read_text()))) == []


def test_a_full_configuration_is_valid_for_the_schema() -> None:
    """Every section (destinations, routes, ledger, retention, http, workers) passes."""
    data = yaml.safe_load(
        "channels:\n"
        "  - name: a\n    listen: {host: 127.0.0.1, port: 2575, allow: [10.0.0.0/8]}\n"
        "    accept: [REF^I12, SIU^S12-S26]\n    versions: ['2.5.1']\n"
        "    ack: {application: HUB, mode: downstream, destination: spec, timeout_s: 5}\n"
        "    limits: {max_frame_bytes: 2048, frame_timeout_s: 1.5}\n"
        "    framing: {tolerate_missing_cr: false, mllp_release: 2}\n"
        "    ledger: {closing_codes: [X], specialties: {NEURO: NEUR}, link_fields: [ZRF.1]}\n"
        "    validation: strict\n"
        "database: {url: 'sqlite:///x.db', sqlite_synchronous: normal}\n"
        "log: {level: debug}\n"
        "destinations:\n"
        "  - {name: spec, type: mllp, host: h, port: 6661, retry: {max_attempts: 3},"
        " order: {per_key: PID.3.1}}\n"
        "  - {name: arch, type: file, directory: out, order: strict}\n"
        "routes:\n  - {name: r, from: a, when: {type: [REF^I12]}, to: [spec, arch]}\n"
        "  - {name: e, 'on': [referral.closed], to: [arch]}\n"
        "workers: 2\nledger: {deadlines_days: {S: 0.5}}\nretention: {message_bodies_days: 30}\n"
        "http: {listen: {port: 0}}\n")
    assert list(_validator().iter_errors(data)) == []
    assert parse_config(data).channels[0].ack.passthrough == "spec"


@pytest.mark.parametrize(("where", "key"), [((), "colour"), (("channels", 0), "acept"),
                                            (("channels", 0, "listen"), "ssl"),
                                            (("channels", 0, "limits"), "max_frames")])
def test_the_schema_refuses_an_unknown_key(where: tuple[Any, ...], key: str) -> None:
    """An editor flags a misspelt key at any level, as the loader does."""
    data = yaml.safe_load((ROOT / "channels.yaml").read_text())
    target = data
    for part in where:
        target = target[part]
    target[key] = 1
    errors = list(_validator().iter_errors(data))
    assert [e.validator for e in errors] == ["additionalProperties"]
    assert repr(key) in errors[0].message and list(errors[0].absolute_path) == list(where)


def test_several_problems_come_back_at_once_with_their_paths() -> None:
    """Problems in several sections and entries are all reported, each with its YAML path,
    section by section: channels, then log, destinations, database, workers, routes, ledger,
    retention, http."""
    with pytest.raises(ConfigError) as info:
        parse_config({
            "channels": [{"name": "a", "listen": {"port": 2575}, "accept": ["REF^I12"]},
                         {"name": "b", "listen": {"port": "x"}, "accept": ["REF"],
                          "limits": {"max_connections": 0}}],
            "log": {"level": "loud"},
            "destinations": [{"name": "d", "type": "mllp", "host": "h", "port": 0}],
            "database": {"group_commit_max": 0},
            "workers": 0,
            "routes": [{"name": "r", "from": "nope", "to": ["d", "gone"]}],
            "ledger": {"default_window_days": 0},
            "retention": {"message_bodies_days": -1},
            "http": {"listen": {"port": 2575}}})
    assert info.value.problems == [
        "channels[1].listen.port: expected an integer in 0-65535, got 'x'",
        "channels[1].accept[0]: expected TYPE^TRIGGER, TYPE^* or TYPE^S12-S26, got 'REF'",
        "channels[1].limits.max_connections: expected an integer in 1-100000, got 0",
        "log.level: expected debug, info, warning or error",
        "destinations[0].port: expected an integer in 1-65535, got 0",
        "database.group_commit_max: expected an integer in 1-100000, got 0",
        "workers: expected an integer in 1-64, got 0",
        "routes[0].from: no channel named 'nope'",
        "routes[0].to[1]: no destination named 'gone'",
        "ledger.default_window_days: expected an integer in 1-36500, got 0",
        "retention.message_bodies_days: expected a number of days above 0 and at most 36500, "
        "got -1",
        "http.listen.port: already used by channels[0]",
    ]


def test_loading_a_configuration_loads_neither_the_ledger_nor_sqlalchemy() -> None:
    """`load_config` needs only the ledger's pure settings and event names: not its rules or
    queries, not the store, not SQLAlchemy."""
    code = ("import sys; from engine.config import load_config; load_config('channels.yaml'); "
            "print(' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True)
    loaded = out.stdout.split()
    assert not [m for m in loaded if m.startswith(("sqlalchemy", "engine.store", "alembic"))]
    assert [m for m in loaded if m.startswith("engine.ledger")] == [
        "engine.ledger", "engine.ledger.lifecycle", "engine.ledger.settings"]


_SCALARS = st.none() | st.booleans() | st.integers(-3, 70000) | st.floats(allow_nan=False) | \
    st.sampled_from(["", " ", "x", "REF^I12", "2.5", "PID.3", "strict", "mllp", "file", "a"])
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["name", "port", "listen", "accept", "host", "to", "from", "on", "x",
                     "per_key", "cert", "S"]), inner, max_size=3), max_leaves=8)
_SHIPPED = yaml.safe_load((ROOT / "channels.yaml").read_text())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(section=st.sampled_from(["channels", "database", "log", "destinations", "routes", "workers",
                                "ledger", "retention", "http", "colour"]),
       key=st.sampled_from(["", "listen", "ack", "limits", "framing", "ledger", "accept", "allow"]),
       value=_VALUES)
def test_any_value_anywhere_is_a_config_error_never_a_crash(section: str, key: str,
                                                            value: Any) -> None:
    """Whatever a section, or a key of the shipped channel, holds, loading either succeeds or
    raises ConfigError with every problem on a line starting with a path."""
    data = json.loads(json.dumps(_SHIPPED))
    if key and section == "channels":
        data["channels"][0][key] = value
    else:
        data[section] = value
    try:
        parse_config(data)
    except ConfigError as exc:
        assert exc.problems and all(re.match(r"^[\w(][^:]*: \S", p) for p in exc.problems), \
            exc.problems
