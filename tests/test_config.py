"""`channels.yaml` parsing: the shipped file, defaults, and every problem at once.

Each problem is one string starting with its YAML path; a configuration with any problem raises one
`ConfigError` listing them all, in document order.  `hl7-engine check-config` prints them on stderr.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.config import (
    DEFAULT_VERSIONS,
    AckConfig,
    Channel,
    Config,
    ConfigError,
    Database,
    Limits,
    Logging,
    load_config,
    parse_config,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "channels.yaml"

KEYS_TOP = "channels, database, destinations, http, ledger, log, retention, routes, workers"
KEYS_CHANNEL = ("accept, ack, framing, ledger, limits, listen, name, processing_ids, validation, "
                "versions")
KEYS_LIMITS = ("frame_timeout_s, idle_timeout_s, max_connections, max_connections_per_address, "
               "max_frame_bytes, max_queued_frames")
ACCEPT_FORMS = "expected TYPE^TRIGGER, TYPE^* or TYPE^S12-S26"
RANGE_FORM = "a trigger range is like S12-S26 (same letter, ascending)"

REFERRAL_TYPES = frozenset(
    [("REF", f"I{n}") for n in range(12, 16)]
    + [("RRI", f"I{n}") for n in range(12, 16)]
    + [("ORM", "O01"), ("OMG", "O19"), ("OSU", "O51")]
    + [("SIU", f"S{n}") for n in range(12, 27)]
)


def problems(data: Any) -> list[str]:
    """The problems `parse_config` reports for `data` (fails the test if it parses)."""
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def load_problems(path: Path, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)
    return info.value.problems


def channel(**overrides: Any) -> dict[str, Any]:
    """A minimal valid channel mapping, with `overrides` replacing or adding keys."""
    raw: dict[str, Any] = {"name": "a", "listen": {"port": 2575}, "accept": ["REF^I12"]}
    raw.update(overrides)
    return raw


def one(**overrides: Any) -> dict[str, Any]:
    """A whole document holding one channel built by `channel(**overrides)`."""
    return {"channels": [channel(**overrides)]}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.fixture(name="shipped")
def shipped_fixture() -> Config:
    """The configuration shipped at the project root."""
    return load_config(SHIPPED)


# --- the shipped file -----------------------------------------------------------------------


def test_shipped_file_has_the_referrals_channel(shipped: Config) -> None:
    """channels.yaml holds one channel, `referrals`, on 0.0.0.0:2575, ACKing as REFTRACK/HUB."""
    assert [ch.name for ch in shipped.channels] == ["referrals"]
    ch = shipped.channels[0]
    assert (ch.host, ch.port) == ("0.0.0.0", 2575)
    assert ch.ack == AckConfig(application="REFTRACK", facility="HUB")
    assert shipped.source == str(SHIPPED)


def test_shipped_file_accepts_exactly_the_26_referral_types(shipped: Config) -> None:
    """REF/RRI I12-I15, ORM^O01, OMG^O19, OSU^O51 and SIU S12-S26: 26 (type, trigger) pairs."""
    accept = shipped.channels[0].accept
    assert len(REFERRAL_TYPES) == 26
    assert accept == REFERRAL_TYPES
    assert shipped.channels[0].accepts("SIU", "S26")
    assert not shipped.channels[0].accepts("SIU", "S27")
    assert not shipped.channels[0].accepts("ADT", "A01")


def test_shipped_file_limits_versions_and_logging(shipped: Config) -> None:
    """The shipped limits, versions, processing id, framing, database and log settings; its
    relative paths are taken from its own folder."""
    ch = shipped.channels[0]
    assert ch.limits == Limits(max_frame_bytes=10485760, idle_timeout_s=600.0,
                               max_connections=100, max_queued_frames=64)
    assert ch.versions == DEFAULT_VERSIONS
    assert ch.processing_ids == ("P",)
    assert ch.tolerate_missing_cr is True
    assert shipped.database == Database(url=f"sqlite:///{ROOT / 'var' / 'engine.db'}")
    assert shipped.log == Logging(file=str(ROOT / "var" / "log" / "engine.log"), level="info")


# --- defaults and accepted forms ------------------------------------------------------------


def test_minimal_channel_gets_defaults() -> None:
    """Only name, listen.port and accept given: every other setting takes its default."""
    config = parse_config({"channels": [channel()]})
    assert config.channels == (Channel(name="a", host="0.0.0.0", port=2575,
                                       accept=frozenset({("REF", "I12")})),)
    ch = config.channels[0]
    assert ch.versions == DEFAULT_VERSIONS
    assert ch.processing_ids == ("P",)
    assert ch.ack == AckConfig("", "")
    assert ch.limits == Limits(10 * 1024 * 1024, 600.0, 100, 64)
    assert ch.tolerate_missing_cr is True
    assert config.database == Database("sqlite:///var/engine.db", "FULL", 1000)
    assert config.log == Logging("var/log/engine.log", "info")
    assert config.source == ""


def test_config_objects_are_frozen() -> None:
    """Parsed configuration cannot be changed after the fact."""
    config = parse_config(one())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.channels[0].port = 1  # type: ignore[misc]


def test_every_setting_read() -> None:
    """Every channel key given explicitly ends up in the Channel, byte for byte."""
    config = parse_config(one(
        name="lab", listen={"host": "127.0.0.1", "port": 0},
        accept=["ORU^R01", "adt^a01-a03", "MDM^*"], versions=["2.5.1"], processing_ids=["P", "T"],
        ack={"application": "APP", "facility": "FAC"},
        limits={"max_frame_bytes": 1024, "idle_timeout_s": 0.5, "max_connections": 1,
                "max_queued_frames": 1},
        framing={"tolerate_missing_cr": False},
    ))
    assert config.channels[0] == Channel(
        name="lab", host="127.0.0.1", port=0,
        accept=frozenset({("ORU", "R01"), ("ADT", "A01"), ("ADT", "A02"), ("ADT", "A03"),
                          ("MDM", "*")}),
        versions=("2.5.1",), processing_ids=("P", "T"), ack=AckConfig("APP", "FAC"),
        limits=Limits(1024, 0.5, 1, 1), tolerate_missing_cr=False,
    )
    assert config.channels[0].accepts("MDM", "T02")


def test_database_as_string() -> None:
    """`database: URL` is the URL with the default synchronous mode and batch size."""
    config = parse_config({**one(), "database": "postgresql+psycopg://hub@db/engine"})
    assert config.database == Database("postgresql+psycopg://hub@db/engine", "FULL", 1000)


def test_database_as_mapping() -> None:
    """`database: {url, sqlite_synchronous, group_commit_max}`; the mode is case-insensitive."""
    config = parse_config({**one(), "database": {
        "url": "sqlite:///x.db", "sqlite_synchronous": "normal", "group_commit_max": 50}})
    assert config.database == Database("sqlite:///x.db", "NORMAL", 50)


def test_database_mapping_defaults() -> None:
    """A database mapping with only some keys fills the rest with defaults."""
    config = parse_config({**one(), "database": {"sqlite_synchronous": "OFF"}})
    assert config.database == Database("sqlite:///var/engine.db", "OFF", 1000)


def test_log_settings() -> None:
    """log.level is case-insensitive; log.file is kept as written."""
    config = parse_config({**one(), "log": {"level": "DEBUG", "file": "/tmp/e.log"}})
    assert config.log == Logging("/tmp/e.log", "debug")


def test_port_zero_allowed_and_not_a_duplicate() -> None:
    """Port 0 (pick a free port) is valid, and two channels on port 0 do not clash."""
    config = parse_config({"channels": [channel(listen={"port": 0}),
                                        channel(name="b", listen={"port": 0})]})
    assert [ch.port for ch in config.channels] == [0, 0]


# --- problems, each with its YAML path ------------------------------------------------------


def test_unknown_keys_at_every_level() -> None:
    """Unknown keys at top, channel, listen, ack, limits, framing, log and database levels: the
    allowed keys are listed, or the one an unknown key most resembles is suggested."""
    assert problems({
        "colour": 1,
        "channels": [channel(extra=1, listen={"port": 2575, "ssl": True}, ack={"app": "X"},
                             limits={"max_frames": 3}, framing={"lenient": True})],
        "log": {"lvl": 1},
        "database": {"uri": "x"},
    }) == [
        f"colour: unknown key (expected one of: {KEYS_TOP})",
        f"channels[0].extra: unknown key (expected one of: {KEYS_CHANNEL})",
        "channels[0].listen.ssl: unknown key (expected one of: allow, host, port, tls)",
        "channels[0].ack.app: unknown key (expected one of: application, destination, facility, "
            "mode, timeout_s)",
        "channels[0].limits.max_frames: unknown key; did you mean 'max_frame_bytes'?",
        "channels[0].framing.lenient: unknown key (expected one of: mllp_release, "
        "tolerate_missing_cr)",
        "log.lvl: unknown key; did you mean 'level'?",
        "database.uri: unknown key; did you mean 'url'?",
    ]


def test_wrong_types_all_reported() -> None:
    """Wrong types in one channel are each reported once, with the value that was found, in the
    order of the schema."""
    assert problems({"channels": [{
        "name": [], "listen": "x", "accept": "REF^I12", "versions": "2.5", "processing_ids": [],
        "ack": {"facility": ""},
        "limits": {"max_frame_bytes": 1.5, "idle_timeout_s": "10", "max_connections": True,
                   "max_queued_frames": 0},
        "framing": {"tolerate_missing_cr": "yes"},
    }]}) == [
        "channels[0].name: expected a non-empty string",
        "channels[0].listen: expected a mapping, got a string",
        "channels[0].accept: expected a non-empty list",
        "channels[0].versions: expected a non-empty list",
        "channels[0].processing_ids: expected a non-empty list",
        "channels[0].ack.facility: expected a non-empty string",
        "channels[0].limits.max_frame_bytes: expected an integer in 1024-1073741824, got 1.5",
        "channels[0].limits.idle_timeout_s: expected a number in 0-604800, got '10'",
        "channels[0].limits.max_connections: expected an integer in 1-100000, got True",
        "channels[0].limits.max_queued_frames: expected an integer in 1-100000, got 0",
        "channels[0].framing.tolerate_missing_cr: expected true or false, got 'yes'",
    ]


def test_port_out_of_range_or_not_an_integer() -> None:
    """listen.port must be an integer 0-65535 and is required once listen is given."""
    assert problems({"channels": [
        channel(listen={"port": 65536}),
        channel(name="b", listen={"port": -1}),
        channel(name="c", listen={"port": "2575"}),
        channel(name="d", listen={"host": "127.0.0.1"}),
    ]}) == [
        "channels[0].listen.port: expected an integer in 0-65535, got 65536",
        "channels[1].listen.port: expected an integer in 0-65535, got -1",
        "channels[2].listen.port: expected an integer in 0-65535, got '2575'",
        "channels[3].listen.port: required, expected 1-65535 (0 picks a free port)",
    ]


def test_bad_accept_entries_and_trigger_ranges() -> None:
    """Each malformed accept entry or trigger range is reported at its list index."""
    assert problems(one(accept=["REF", "REF^I1", "R^I12", "REF^I12-S14", "SIU^S26-S12",
                                "REF^I1A-I15", "REF^I12,I13", 12])) == [
        f"channels[0].accept[0]: {ACCEPT_FORMS}, got 'REF'",
        f"channels[0].accept[1]: {ACCEPT_FORMS}, got 'REF^I1'",
        f"channels[0].accept[2]: {ACCEPT_FORMS}, got 'R^I12'",
        f"channels[0].accept[3]: {RANGE_FORM}, got 'I12-S14'",
        f"channels[0].accept[4]: {RANGE_FORM}, got 'S26-S12'",
        f"channels[0].accept[5]: {RANGE_FORM}, got 'I1A-I15'",
        f"channels[0].accept[6]: {ACCEPT_FORMS}, got 'REF^I12,I13'",
        f"channels[0].accept[7]: {ACCEPT_FORMS}, got '12'",
    ]


def test_trigger_range_expands_inclusively() -> None:
    """`SIU^S12-S26` is S12..S26 inclusive (15 triggers); `REF^I12-I12` is just I12."""
    config = parse_config(one(accept=["SIU^S12-S26", "REF^I12-I12"]))
    assert config.channels[0].accept == frozenset(
        [("SIU", f"S{n}") for n in range(12, 27)] + [("REF", "I12")])


def test_missing_listen_and_accept() -> None:
    """A channel without listen or accept names both as required; an empty accept is reported."""
    assert problems({"channels": [{"name": "a"}, channel(name="b", accept=[])]}) == [
        "channels[0].listen: required (listen: {host: 0.0.0.0, port: 2575})",
        "channels[0].accept: required: the message types this channel takes, e.g. [REF^I12]",
        "channels[1].accept: expected a non-empty list",
    ]


def test_bad_versions() -> None:
    """Each version that is not `2.x` or `2.x.y` is reported at its index."""
    assert problems(one(versions=["2.5.1", "3.0", "2.5.1.1", "v2.5", "2"])) == [
        "channels[0].versions[1]: expected an HL7 v2 version like 2.5.1, got '3.0'",
        "channels[0].versions[2]: expected an HL7 v2 version like 2.5.1, got '2.5.1.1'",
        "channels[0].versions[3]: expected an HL7 v2 version like 2.5.1, got 'v2.5'",
        "channels[0].versions[4]: expected an HL7 v2 version like 2.5.1, got '2'",
    ]


def test_duplicate_channel_names_and_ports() -> None:
    """A second use of a name, or of a host and port, points back at the first channel."""
    assert problems({"channels": [
        channel(), channel(listen={"port": 2576}), channel(name="b"),
    ]}) == [
        "channels[1].name: duplicate of channels[0].name",
        "channels[2].listen.port: already used by channels[0]",
    ]


def test_duplicate_paths_count_entries_that_are_not_channels() -> None:
    """Entries that are not mappings keep their index: duplicates name the real list positions."""
    assert problems({"channels": [None, "x", [1], channel(), channel()]}) == [
        "channels[0]: expected a mapping, got nothing",
        "channels[1]: expected a mapping, got a string",
        "channels[2]: expected a mapping, got a list",
        "channels[4].name: duplicate of channels[3].name",
        "channels[4].listen.port: already used by channels[3]",
    ]


def test_empty_channel_entry_is_a_problem() -> None:
    """`channels: [~]` (a dash with nothing after it) is reported, not silently skipped."""
    assert problems({"channels": [None]}) == ["channels[0]: expected a mapping, got nothing"]


def test_bad_database_settings() -> None:
    """An unknown sqlite_synchronous mode and an out-of-range group_commit_max are reported."""
    assert problems({**one(), "database": {"sqlite_synchronous": "fast",
                                           "group_commit_max": 0}}) == [
        "database.sqlite_synchronous: expected one of OFF, NORMAL, FULL, EXTRA",
        "database.group_commit_max: expected an integer in 1-100000, got 0",
    ]


@pytest.mark.parametrize(("value", "expected"), [
    ([], "database: expected a mapping, got a list"),
    ("", "database: expected a non-empty string"),
    (5, "database: expected a mapping, got a number"),
])
def test_database_of_wrong_shape(value: Any, expected: str) -> None:
    """`database` must be a URL string or a mapping."""
    assert problems({**one(), "database": value}) == [expected]


def test_bad_log_settings() -> None:
    """An unknown log level and an empty log file are reported."""
    assert problems({**one(), "log": {"level": "verbose", "file": ""}}) == [
        "log.file: expected a non-empty string",
        "log.level: expected debug, info, warning or error",
    ]


@pytest.mark.parametrize(("data", "expected"), [
    ([channel()], "(top level): expected a mapping, got a list"),
    ("channels", "(top level): expected a mapping, got a string"),
    (None, "channels: expected a non-empty list of channels"),
    ({"channels": []}, "channels: expected a non-empty list of channels"),
    ({"channels": {"a": channel()}}, "channels: expected a non-empty list of channels"),
], ids=["list", "string", "empty-document", "no-channels", "channels-mapping"])
def test_document_not_a_mapping_of_channels(data: Any, expected: str) -> None:
    """The document must be a mapping with a non-empty `channels` list."""
    assert problems(data) == [expected]


def test_sections_not_mappings() -> None:
    """listen, ack and limits given as scalars or lists are each reported at their path."""
    assert problems(one(listen=None, ack="x", limits=[1])) == [
        "channels[0].listen.port: required, expected 1-65535 (0 picks a free port)",
        "channels[0].ack: expected a mapping, got a string",
        "channels[0].limits: expected a mapping, got a list",
    ]


def test_every_problem_in_one_error() -> None:
    """Problems in several channels and sections come back together, in document order."""
    assert problems({
        "channels": [channel(listen={"port": 99999}), channel(accept=["X"], versions=["9"])],
        "log": {"level": "loud"},
        "database": {"sqlite_synchronous": "maybe"},
    }) == [
        "channels[0].listen.port: expected an integer in 0-65535, got 99999",
        f"channels[1].accept[0]: {ACCEPT_FORMS}, got 'X'",
        "channels[1].versions[0]: expected an HL7 v2 version like 2.5.1, got '9'",
        "channels[1].name: duplicate of channels[0].name",
        "log.level: expected debug, info, warning or error",
        "database.sqlite_synchronous: expected one of OFF, NORMAL, FULL, EXTRA",
    ]


# --- reading the file -----------------------------------------------------------------------


def test_invalid_yaml_reported_with_line_and_column(tmp_path: Path) -> None:
    """A YAML syntax error names the file and the line and column where the parser stopped."""
    path = tmp_path / "channels.yaml"
    path.write_text("channels:\n  - name: a\n   listen: x\n")
    assert load_problems(path) == [f"{path}: not valid YAML at line 3, column 4 "
                                   "(expected <block end>, but found '<block mapping start>')"]


def test_unclosed_flow_mapping_reported_where_parser_stopped(tmp_path: Path) -> None:
    """An unclosed `{` is reported at the token where PyYAML gave up (the next key's colon)."""
    path = tmp_path / "channels.yaml"
    path.write_text("channels:\n  - name: a\n    listen: {port: 2575\n    accept: [REF^I12]\n")
    assert load_problems(path) == [f"{path}: not valid YAML at line 4, column 11 "
                                   "(expected ',' or '}', but got ':')"]


def test_missing_file(tmp_path: Path) -> None:
    """A file that does not exist is one problem naming it, not a traceback."""
    path = tmp_path / "nope.yaml"
    assert load_problems(path) == [f"{path}: cannot read (No such file or directory)"]


def test_directory_instead_of_file(tmp_path: Path) -> None:
    """A directory given as the config is reported as unreadable."""
    assert load_problems(tmp_path) == [f"{tmp_path}: cannot read (Is a directory)"]


def test_permission_denied_via_reader(tmp_path: Path) -> None:
    """An OSError from the reader becomes one problem with its strerror."""
    path = tmp_path / "channels.yaml"

    def denied(_p: Path) -> str:
        raise PermissionError(13, "Permission denied", str(_p))

    assert load_problems(path, reader=denied) == [f"{path}: cannot read (Permission denied)"]


def test_file_not_utf8(tmp_path: Path) -> None:
    """A file that is not UTF-8 is reported as unreadable, with the first bad byte offset."""
    path = tmp_path / "channels.yaml"
    good = b"channels:\n  - name: caf"
    path.write_bytes(good + b"\xe9\n")
    assert load_problems(path) == [f"{path}: cannot read (not UTF-8 at byte {len(good)})"]


def test_load_config_validates_content(tmp_path: Path) -> None:
    """A readable YAML file still goes through every check, and `source` names the file."""
    path = tmp_path / "channels.yaml"
    path.write_text("channels:\n  - name: a\n    listen: {port: 2575}\n    accept: [REF^I12]\n")
    assert load_config(path).source == str(path)
    path.write_text("channels:\n  - name: a\n    listen: {port: 2575}\n")
    assert load_problems(path) == [
        f"{path}: channels[0].accept: required: the message types this channel takes, "
        "e.g. [REF^I12]"]


# --- hl7-engine check-config ----------------------------------------------------------------


@pytest.mark.slow
def test_cli_check_config_prints_every_problem(tmp_path: Path) -> None:
    """`check-config` on a bad file prints each problem on its own stderr line, after the
    file's path, and exits 2."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        "colour: blue\n"
        "channels:\n"
        "  - name: a\n"
        "    listen: {port: 70000}\n"
        "    accept: [REF^I12, SIU^S26-S12]\n"
        "  - name: a\n"
        "    listen: {port: 2576}\n"
        "    accept: [REF^I12]\n"
        "    versions: ['3.0']\n"
        "log: {level: loud}\n"
    )
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"{path}: {line}" for line in (
        f"colour: unknown key (expected one of: {KEYS_TOP})",
        "channels[0].listen.port: expected an integer in 0-65535, got 70000",
        f"channels[0].accept[1]: {RANGE_FORM}, got 'S26-S12'",
        "channels[1].versions[0]: expected an HL7 v2 version like 2.5.1, got '3.0'",
        "channels[1].name: duplicate of channels[0].name",
        "log.level: expected debug, info, warning or error",
    )]


@pytest.mark.slow
def test_cli_check_config_unreadable_file_exits_2(tmp_path: Path) -> None:
    """`check-config` on a non-UTF-8 file prints one problem and exits 2 (no traceback)."""
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00")
    result = run_cli("check-config", "--config", str(path))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"{path}: cannot read (not UTF-8 at byte 0)\n"


@pytest.mark.slow
def test_cli_check_config_shipped_file_ok() -> None:
    """`check-config` on the shipped channels.yaml prints a summary ending in OK and exits 0."""
    result = run_cli("check-config", "--config", "channels.yaml")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        "channel referrals: listens on 0.0.0.0:2575, accepts 26 message types, versions "
        "2.3, 2.3.1, 2.4, 2.5, 2.5.1, 2.6, 2.7, 2.7.1, 2.8, 2.8.1, 2.8.2, validation lenient\n"
        "ledger: window 180 days when RF1-8 is empty, deadlines to be scheduled S 1, A 2, R 14 "
        "days, swept every 60 minutes; message bodies kept for ever\n"
        f"channels.yaml: OK (1 channel(s), database sqlite:///{ROOT / 'var' / 'engine.db'})\n"
    )


def test_unquoted_off_is_sqlite_synchronous_off() -> None:
    """YAML reads `sqlite_synchronous: OFF` as false; the engine takes it as OFF."""
    config = parse_config(yaml.safe_load(
        "database: {url: 'sqlite:///x.db', sqlite_synchronous: OFF}\n"
        "channels: [{name: a, listen: {port: 0}, accept: [REF^I12]}]\n"))
    assert config.database.sqlite_synchronous == "OFF"


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    """A key given twice in one mapping is reported with its line, not silently overridden."""
    path = tmp_path / "dup.yaml"
    path.write_text("channels:\n  - name: a\n    name: b\n    listen: {port: 1}\n"
                    "    accept: [REF^I12]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}: duplicate key 'name' at line 3, column 5"]


def test_wildcard_host_clashes_with_any_host_on_its_port() -> None:
    """0.0.0.0:2575 and 127.0.0.1:2575 cannot both listen."""
    assert problems({"channels": [
        channel(name="a", listen={"host": "0.0.0.0", "port": 2575}),
        channel(name="b", listen={"host": "127.0.0.1", "port": 2575})]}) == [
        "channels[1].listen.port: already used by channels[0]"]


def test_ledger_rules_per_channel() -> None:
    """`ledger.order_specialties` maps OBR-4 codes; `closing_codes` add to LOINC 11488-4;
    `specialties` maps any specialty code, case ignored."""
    config = parse_config({"channels": [channel(ledger={
        "order_specialties": {"CONSULT-NEUR": "NEUR"}, "closing_codes": ["X-NOTE"],
        "specialties": {"neurocons": "NEUR", "NEURO": "NEUR"}})]})
    rules = config.channels[0].rules
    assert rules.order_specialties == {"CONSULT-NEUR": "NEUR"}
    assert rules.closing_codes == frozenset({"11488-4", "X-NOTE"})
    assert (rules.specialty("NeuroCons"), rules.specialty("neuro"), rules.specialty("x")) == (
        "NEUR", "NEUR", "")
    assert problems({"channels": [channel(ledger={"order_specialties": ["x"], "x": 1,
                                                  "specialties": {"A": ""}})]}) == [
        "channels[0].ledger.x: unknown key (expected one of: close_on_results, closing_codes, "
        "link_fields, order_specialties, referred_to, specialties)",
        "channels[0].ledger.order_specialties: expected a mapping of OBR-4 code: specialty",
        "channels[0].ledger.specialties.A: expected a non-empty string"]
    assert problems({"channels": [channel(ledger={"referred_to": "OBR"})]}) == [
        "channels[0].ledger.referred_to: expected a path to a field, got a whole segment 'OBR'"]
    assert parse_config({"channels": [channel(ledger={"referred_to": "PRT.5"})]}
                        ).channels[0].rules.referred_to == "PRT.5"
    assert parse_config({"channels": [channel(ledger={"link_fields": ["SCH.4", "ZRF.2"]})]}
                        ).channels[0].rules.link_fields == ("SCH.4", "ZRF.2")
    assert problems({"channels": [channel(ledger={"link_fields": ["SCH.26", "SCH", "ZRF.123456"]})]}) == [
        "channels[0].ledger.link_fields[0]: SCH-26 is always tried first; list other fields",
        "channels[0].ledger.link_fields[1]: expected a path to a field, got a whole segment 'SCH'",
        "channels[0].ledger.link_fields[2]: expected a segment and field like SCH.4, got "
        "'ZRF.123456'"]


@pytest.mark.slow
def test_cli_check_config_summarizes_destinations_routes_and_processes(tmp_path: Path) -> None:
    """With routes, `check-config` prints a line per destination and per route, the process
    layout (two by default: the main one delivers), and the ledger's time rules and retention."""
    path = tmp_path / "routed.yaml"
    path.write_text(
        "channels:\n"
        "  - {name: a, listen: {port: 2575}, accept: [REF^I12]}\n"
        "destinations:\n"
        "  - {name: spec, type: mllp, host: spec.example.org, port: 6661, ack_timeout_s: 5,\n"
        "     retry: {initial_s: 2, max_s: 60, max_attempts: 4}, order: {per_key: PID.3.1}}\n"
        "  - {name: arch, type: file, directory: out}\n"
        "routes:\n"
        "  - name: refs\n"
        "    from: a\n"
        "    when: {type: [REF^I12], sender: PCPEHR, fields: {PV1.2: O}}\n"
        "    transform: [{set: {MSH.5: SPEC}}]\n"
        "    to: [spec, arch]\n"
        "  - {name: loop, on: [referral.scheduled, referral.closed], to: [arch]}\n"
        "ledger: {default_window_days: 90, deadlines_days: {S: 0.25, P: 3},"
        " sweep_interval_minutes: 15}\n"
        "retention: {message_bodies_days: 365}\n"
    )
    result = run_cli("check-config", "--config", str(path))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[1:] == [
        "destination spec: mllp to spec.example.org:6661, ACK within 5 s, order per_key PID.3.1,"
        " retry 2-60 s, dead letter after 4 attempts",
        f"destination arch: file into {tmp_path / 'out'}, order strict, retry every 0.5 s, "
        "dead letter after 20"
        " attempts",
        "route refs: from a when type REF^I12; sender PCPEHR; PV1.2 = 'O', 1 transform step(s)"
        " to spec, arch",
        "route loop: on referral.scheduled, referral.closed to arch",
        "processes: 2 (the main one accepts and delivers, 1 ingests)",
        "ledger: window 90 days when RF1-8 is empty, deadlines to be scheduled S 0.25, A 2, "
        "R 14, P 3 days, swept every 15 minutes; message bodies purged after 365 days",
        f"{path}: OK (1 channel(s), database sqlite:///{tmp_path / 'var' / 'engine.db'})",
    ]


def test_listen_allow_takes_addresses_and_networks() -> None:
    """`listen.allow` entries are IP addresses or networks; a bad one is named by its path."""
    ch = parse_config({"channels": [{"name": "c", "listen": {
        "port": 2575, "allow": ["10.0.0.0/8", "192.168.1.20", "fd00::/8"]},
        "accept": ["REF^I12"]}]}).channels[0]
    assert [str(n) for n in ch.allow] == ["10.0.0.0/8", "192.168.1.20/32", "fd00::/8"]
    with pytest.raises(ConfigError) as info:
        parse_config({"channels": [{"name": "c", "listen": {"port": 2575, "allow": [
            "10.0.0.0/8", "clinic-lan"]}, "accept": ["REF^I12"]}]})
    assert info.value.problems == [
        "channels[0].listen.allow[1]: expected an IP address or network like 10.0.0.0/8, got "
        "'clinic-lan'"]


def test_tls_settings_are_read_and_checked_at_load(tmp_path: Path) -> None:
    """`listen.tls` and a destination's `tls` name PEM files that are read when the
    configuration loads: a missing or mismatched file is a problem with its YAML path."""
    from certs import make_pki

    pki = make_pki(tmp_path)
    good = parse_config({
        "channels": [{"name": "c", "listen": {"port": 2575, "tls": {
            "cert": str(pki.server_cert), "key": str(pki.server_key),
            "client_ca": str(pki.ca)}}, "accept": ["REF^I12"]}],
        "destinations": [{"name": "d", "type": "mllp", "host": "127.0.0.1", "port": 6661,
                          "tls": {"ca": str(pki.ca), "cert": str(pki.client_cert),
                                  "key": str(pki.client_key)}}]})
    assert good.channels[0].tls is not None and good.channels[0].tls.client_ca == str(pki.ca)
    assert good.destinations[0].tls is not None and good.destinations[0].tls.ca == str(pki.ca)
    assert problems({
        "channels": [{"name": "c", "listen": {"port": 2575, "tls": {
            "cert": str(pki.server_cert), "key": str(pki.client_key)}}, "accept": ["REF^I12"]},
            {"name": "e", "listen": {"port": 2576, "tls": {"cert": str(tmp_path / "no.pem")}},
             "accept": ["REF^I12"]}],
        "destinations": [
            {"name": "d", "type": "mllp", "host": "h", "port": 1, "tls": {"cert": "x"}},
            {"name": "f", "type": "file", "directory": "out", "tls": {}}]}) == [
        f"channels[0].listen.tls: {pki.client_key} does not match the certificate in "
        f"{pki.server_cert}",
        "channels[1].listen.tls.key: required: a PEM file",
        "destinations[0].tls: cert and key go together (a client certificate and its key)",
        "destinations[1].tls: only for mllp destinations",
    ]


# --- the ledger's time rules and retention (top level) --------------------------------------


def test_ledger_time_rules_default_and_override() -> None:
    """Deadlines given replace those defaults (case of the code ignored); the others stay."""
    default = parse_config({"channels": [channel()]})
    assert default.ledger.default_window_days == 180
    assert default.ledger.deadlines == {"S": 1, "A": 2, "R": 14}
    assert default.ledger.sweep_interval_minutes == 60
    assert default.retention.message_bodies_days is None
    config = parse_config({"channels": [channel()],
                           "ledger": {"default_window_days": 90,
                                      "deadlines_days": {"s": 0.25, "P": 3},
                                      "sweep_interval_minutes": 10080},
                           "retention": {"message_bodies_days": 30}})
    assert config.ledger.default_window_days == 90
    assert config.ledger.deadlines == {"S": 0.25, "A": 2, "R": 14, "P": 3}
    assert config.ledger.sweep_interval_minutes == 10080
    assert config.retention.message_bodies_days == 30


def test_ledger_and_retention_problems_name_their_path() -> None:
    assert problems({
        "channels": [channel()],
        "ledger": {"default_window_days": 0, "deadlines_days": {"S": -1, "A": "soon", "B C": 1},
                   "grace": 1},
        "retention": {"message_bodies_days": 0},
    }) == [
        "ledger.grace: unknown key (expected one of: deadlines_days, default_window_days, "
        "sweep_interval_minutes)",
        "ledger.default_window_days: expected an integer in 1-36500, got 0",
        "ledger.deadlines_days.S: expected a number of days above 0 and at most 3650, got -1",
        "ledger.deadlines_days.A: expected a number of days above 0 and at most 3650, "
        "got 'soon'",
        "ledger.deadlines_days.B C: expected a priority code (RF1-2.1 / ORC-7), e.g. S, A or R",
        "retention.message_bodies_days: expected a number of days above 0 and at most 36500, "
        "got 0",
    ]
    assert problems({"channels": [channel()], "ledger": {"deadlines_days": [1]},
                     "retention": "90d"}) == [
        "ledger.deadlines_days: expected a mapping of priority: days, e.g. {S: 1}",
        "retention: expected a mapping, got a string",
    ]


@pytest.mark.parametrize("minutes", [0, 10081, 1.5, "hourly", True])
def test_sweep_interval_out_of_range_names_its_path(minutes: Any) -> None:
    """`ledger.sweep_interval_minutes` is a whole number of minutes from 1 to 10080 (a week);
    anything else is a problem at its YAML path."""
    assert problems({"channels": [channel()], "ledger": {"sweep_interval_minutes": minutes}}) == [
        f"ledger.sweep_interval_minutes: expected an integer in 1-10080, got {minutes!r}"]
    assert parse_config({"channels": [channel()], "ledger": {"sweep_interval_minutes": 1}}
                        ).ledger.sweep_interval_minutes == 1
