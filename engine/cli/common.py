"""What the commands share: exit codes, the configuration as the command line overrides it, and
the database (only `run` may create it).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from engine.config import Config, ConfigError, Database, load_config
from engine.timestamps import utc_now as utc_now  # the commands take it from here

EXIT_OK, EXIT_NOT_OK, EXIT_CONFIG = 0, 1, 2


def is_database_error(exc: Exception) -> bool:
    """Is it the database's (it cannot be reached, or the URL is wrong)?  Checked without
    importing the store, which `--help` and `send` never need: a database error can only come
    from a command that opened the database through `engine.store.database`."""
    database = sys.modules.get("engine.store.database")
    return database is not None and bool(database.is_database_error(exc))


def error_reason(exc: Exception) -> str:
    """The driver's own words (first line; never the URL, which may hold a password)."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


def config_of(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    if args.database:
        database = dataclasses.replace(config.database, url=args.database)
        config = dataclasses.replace(config, database=database)
    return config


def database_only(args: argparse.Namespace) -> tuple[Database, str]:
    """For read commands: the config's database (and log file), or --database alone."""
    if args.database and not Path(args.config).exists():
        return Database(args.database), ""
    config = config_of(args)
    return config.database, config.log.file


def open_db(database: Database, create: bool = False) -> Any:
    """The database, migrated.  Only `run` may `create` a SQLite file: the other commands read
    or change an engine's database, and a new empty one would hide a wrong path."""
    from engine.store.database import open_database

    if not create:
        _must_exist(database.url)
    try:
        return open_database(database.url, database.sqlite_synchronous)
    except OSError as exc:  # the SQLite file's folder cannot be made
        raise ConfigError([f"database: cannot open {exc.filename or database.url} "
                           f"({exc.strerror or type(exc).__name__})"]) from exc


def _must_exist(url: str) -> None:
    """A ConfigError when `url` names a SQLite file that is not there."""
    from engine.store.database import sqlite_file

    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise ConfigError([f"no database at {path} (is the engine configured with this file?)"])


def config_if_any(args: argparse.Namespace) -> Config | None:
    """The configuration, or None when only --database was given and there is no config file."""
    if args.database and not Path(args.config).exists():
        return None
    return config_of(args)
