"""The settings whose YAML shape is the shape the engine uses: `Limits`, `AckConfig`, `Database`,
`Logging` and `Retention`, each a frozen pydantic dataclass that is at once part of the schema
(its keys, defaults and bounds, written here once) and the value the engine reads.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, model_validator
from pydantic.dataclasses import dataclass

from engine.config.fields import Bounded, Days, OneOf, Text, lower, upper

DEFAULT_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1",
                    "2.8.2")
DEFAULT_DATABASE = "sqlite:///var/engine.db"
DEFAULT_LOG_FILE = "var/log/engine.log"
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
LENIENT, STRICT = "lenient", "strict"  # `channels[].validation`

STRICT_KEYS = ConfigDict(extra="forbid")  # an unknown key is a problem


class Section:
    """A mapping section: `key:` with nothing after it takes every default."""

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        return {} if value is None else value


@dataclass(frozen=True, slots=True, config=STRICT_KEYS)
class Limits(Section):
    """`channels[].limits`: what one channel's listener allows."""

    max_frame_bytes: Annotated[int, Bounded(1024, 1 << 30)] = 10 * 1024 * 1024
    idle_timeout_s: Annotated[float, Bounded(0, 86400 * 7, integer=False)] = 600.0  # 0: never
    max_connections: Annotated[int, Bounded(1, 100000)] = 100
    max_queued_frames: Annotated[int, Bounded(1, 100000)] = 64
    # a frame must be complete this long after its 0x0B (0: off)
    frame_timeout_s: Annotated[float, Bounded(0, 86400, integer=False)] = 30.0
    # from one peer address (0: only max_connections)
    max_connections_per_address: Annotated[int, Bounded(0, 100000)] = 0


@dataclass(frozen=True, slots=True, config=STRICT_KEYS)
class AckConfig(Section):
    """MSH-3/4 of our ACKs (empty: echo the inbound MSH-5/6), and when the ACK is sent:
    `commit` (the default: once stored) or `downstream` (pass-through: the answer of
    `destination` to the routed copy, relayed, or AE 207 after `timeout_s`)."""

    application: Text = ""
    facility: Text = ""
    mode: Annotated[str, OneOf(("commit", "downstream"),
                               "expected commit or downstream, got {got}", lower)] = "commit"
    destination: Text = ""
    timeout_s: Annotated[float, Bounded(0.1, 3600, integer=False)] = 30.0

    @property
    def passthrough(self) -> str:
        """The destination whose answer is relayed, or "" in commit mode."""
        return self.destination if self.mode == "downstream" else ""


def _synchronous(value: Any) -> Any:
    return "OFF" if value is False else upper(value)  # YAML reads an unquoted OFF as false


@dataclass(frozen=True, slots=True, config=STRICT_KEYS)
class Database(Section):
    """`database:` (or `database: URL`): where messages and the ledger are stored."""

    url: Text = DEFAULT_DATABASE
    sqlite_synchronous: Annotated[str, OneOf(SYNCHRONOUS, "expected one of OFF, NORMAL, FULL, "
                                                          "EXTRA", _synchronous)] = "FULL"
    group_commit_max: Annotated[int, Bounded(1, 100000)] = 1000
    commit_delay_ms: Annotated[float, Bounded(0, 1000, integer=False)] = 1.0


@dataclass(frozen=True, slots=True, config=STRICT_KEYS)
class Logging(Section):
    """`log:`: the JSON log file and the level."""

    file: Text = DEFAULT_LOG_FILE
    level: Annotated[str, OneOf(("debug", "info", "warning", "error"),
                                "expected debug, info, warning or error", lower)] = "info"


@dataclass(frozen=True, slots=True, config=STRICT_KEYS)
class Retention(Section):
    """`retention:`: how long message bodies are kept (None: for ever)."""

    message_bodies_days: Annotated[float, Days(36500)] | None = None
