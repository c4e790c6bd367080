"""`channels.yaml`, parsed into frozen, validated objects: the schema declared once in `schema`
and `settings` (pydantic models: keys, defaults, bounds), the value types in `fields`, the
engine's values in `model`, pydantic's errors in the operator's words in `problems`, the values
built in `build`, the checks across sections in `checks`, the file in `load`.

Every problem is collected with its YAML path (`channels[0].listen.port: expected 1-65535`),
after the file's path when there is a file (`channels.yaml: channels[0].listen.port: …`), and
reported at once; unknown keys are errors, with the closest allowed key suggested; a half-valid
configuration never starts.

Relative paths in a configuration file (the SQLite database, `log.file`, TLS files, file
destinations' folders) are relative to the file's folder, not to the working directory: they
are made absolute here, so the rest of the engine only sees absolute ones.
"""

from engine.config.load import load_config, parse_config
from engine.config.model import Channel, Config, ConfigError, Destination, Http, IPNetwork, Route
from engine.config.settings import (
    DEFAULT_DATABASE,
    DEFAULT_LOG_FILE,
    DEFAULT_VERSIONS,
    LENIENT,
    STRICT,
    SYNCHRONOUS,
    AckConfig,
    Database,
    Limits,
    Logging,
    Retention,
)

__all__ = [
    "DEFAULT_DATABASE", "DEFAULT_LOG_FILE", "DEFAULT_VERSIONS", "LENIENT", "STRICT", "SYNCHRONOUS",
    "AckConfig", "Channel", "Config", "ConfigError", "Database", "Destination", "Http",
    "IPNetwork", "Limits", "Logging", "Retention", "Route", "load_config", "parse_config",
]
