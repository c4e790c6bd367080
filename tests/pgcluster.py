"""A throw-away PostgreSQL cluster for the test suite.

The cluster lives in a fresh directory under ``/tmp`` and listens on a Unix
socket only (``listen_addresses=''``), so it never clashes with another
PostgreSQL on the machine or with a parallel test run.  Durability is switched
off (``fsync``, ``full_page_writes``, ``synchronous_commit``) because the data
is thrown away at the end of the session.

``initdb`` refuses to run as root; when the tests run as root (CI does) the
server binaries are run as Debian's ``postgres`` user through ``runuser``.

This module does not depend on pytest: the fixtures in ``conftest.py`` turn
:class:`PostgresUnavailable` into a skip (or a failure under
``REQUIRE_POSTGRES=1``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

#: Where Debian (and Ubuntu) install the server binaries, one directory per major version.
DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")

#: The OS user the server runs as when the tests run as root.
POSTGRES_OS_USER = "postgres"

#: The database superuser created by ``initdb -U``.
SUPERUSER = "postgres"

#: The server's port.  Only the name of the socket file depends on it (no TCP).
PORT = 5432

#: Seconds to wait for ``initdb`` and for ``pg_ctl`` to start or stop the server.
TIMEOUT = 120


class PostgresUnavailable(RuntimeError):
    """The machine cannot run a throw-away cluster (no binaries, no ``postgres`` user...)."""


class ClusterError(RuntimeError):
    """A server binary failed; the message carries its output and the server log."""


@dataclass(frozen=True)
class PgBinaries:
    """The two server programs the helper needs, taken from the same installation."""

    initdb: Path
    pg_ctl: Path

    @property
    def bindir(self) -> Path:
        """The directory holding ``initdb`` (and normally ``pg_ctl`` and ``postgres``)."""
        return self.initdb.parent


def _version_key(directory: Path) -> tuple[int, ...]:
    """Sort key for ``/usr/lib/postgresql/<version>``: ``"9.6"`` < ``"15"`` < ``"16"``."""
    parts = re.findall(r"\d+", directory.name)
    return tuple(int(part) for part in parts) if parts else (-1,)


def _executable(path: Path) -> bool:
    """True when *path* is an executable regular file (symlinks followed)."""
    return path.is_file() and os.access(path, os.X_OK)


def find_binaries(path: str | None = None) -> PgBinaries | None:
    """Locate ``initdb`` and ``pg_ctl``.

    ``initdb`` and ``pg_ctl`` on *path* (default: ``$PATH``) win; symlinks are
    resolved so both programs come from the same installation when possible.
    Otherwise the newest ``/usr/lib/postgresql/*/bin`` holding both is used.
    Returns ``None`` when neither place has them.
    """
    initdb_on_path = shutil.which("initdb", path=path)
    pg_ctl_on_path = shutil.which("pg_ctl", path=path)
    if initdb_on_path and pg_ctl_on_path:
        initdb = Path(initdb_on_path).resolve()
        sibling = initdb.parent / "pg_ctl"
        pg_ctl = sibling if _executable(sibling) else Path(pg_ctl_on_path).resolve()
        return PgBinaries(initdb=initdb, pg_ctl=pg_ctl)

    candidates = sorted(
        (d for d in DEBIAN_PG_ROOT.glob("*/bin") if d.is_dir()),
        key=lambda d: _version_key(d.parent),
        reverse=True,
    )
    for bindir in candidates:
        initdb, pg_ctl = bindir / "initdb", bindir / "pg_ctl"
        if _executable(initdb) and _executable(pg_ctl):
            return PgBinaries(initdb=initdb, pg_ctl=pg_ctl)
    return None


def _runuser() -> str | None:
    """Path of util-linux ``runuser`` (``/usr/sbin`` may be missing from a restricted PATH)."""
    found = shutil.which("runuser")
    if found:
        return found
    for candidate in ("/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"):
        if _executable(Path(candidate)):
            return candidate
    return None


def _server_env() -> dict[str, str]:
    """The environment for the server programs, without libpq/server ``PG*`` variables.

    ``PGPORT``, ``PGDATA``, ``PGHOST``... from the caller's shell would change
    which port or directory the server uses.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


class PgCluster:
    """One throw-away cluster: ``initdb`` + ``pg_ctl start`` on :meth:`start`, removed on :meth:`stop`.

    Layout (``base`` is ``/tmp/pgtest-XXXXXXXX``, mode 0o711, owned by the caller)::

        base/data/          PGDATA
        base/sock/          Unix socket directory (-k)
        base/log/server.log pg_ctl -l log file

    ``data``, ``sock`` and ``log`` are chowned to the ``postgres`` user when running as root.
    """

    def __init__(self, binaries: PgBinaries) -> None:
        """Prepare (but do not create) a cluster using *binaries*."""
        self.binaries = binaries
        self.as_root = os.geteuid() == 0
        self._runuser: str | None = None
        self._owner: pwd.struct_passwd | None = None
        if self.as_root:
            self._runuser = _runuser()
            if self._runuser is None:
                raise PostgresUnavailable(
                    "running as root and `runuser` (util-linux) was not found; "
                    "initdb refuses to run as root"
                )
            try:
                self._owner = pwd.getpwnam(POSTGRES_OS_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root and there is no {POSTGRES_OS_USER!r} OS user to run "
                    "initdb/pg_ctl as (initdb refuses to run as root)"
                ) from None
        self.base_dir: Path | None = None
        self.running = False

    # -- paths ---------------------------------------------------------------

    def _base(self) -> Path:
        """The cluster's temporary directory; only valid after :meth:`start`."""
        if self.base_dir is None:
            raise RuntimeError("cluster not started")
        return self.base_dir

    @property
    def data_dir(self) -> Path:
        """PGDATA."""
        return self._base() / "data"

    @property
    def socket_dir(self) -> Path:
        """The directory holding the server's Unix socket (``.s.PGSQL.5432``)."""
        return self._base() / "sock"

    @property
    def log_file(self) -> Path:
        """The server log written by ``pg_ctl -l``."""
        return self._base() / "log" / "server.log"

    # -- running programs ----------------------------------------------------

    def _command(self, args: Sequence[str]) -> list[str]:
        """*args*, prefixed with ``runuser -u postgres --`` when running as root."""
        if self.as_root:
            assert self._runuser is not None
            return [self._runuser, "-u", POSTGRES_OS_USER, "--", *args]
        return list(args)

    def _run(self, args: Sequence[str], what: str) -> subprocess.CompletedProcess[str]:
        """Run a server program; raise :class:`ClusterError` with its output if it fails."""
        command = self._command(args)
        try:
            result = subprocess.run(
                command,
                cwd=self._base(),  # postgres must be able to enter the cwd
                env=_server_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(
                f"{what} timed out after {TIMEOUT}s: {shlex.join(command)}\n{self.read_log()}"
            ) from exc
        if result.returncode != 0:
            raise ClusterError(
                f"{what} failed (exit {result.returncode}): {shlex.join(command)}\n"
                f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}\n"
                f"--- server log ---\n{self.read_log()}"
            )
        return result

    def read_log(self) -> str:
        """The server log so far (empty when there is none yet)."""
        try:
            return self.log_file.read_text(errors="replace")
        except (OSError, RuntimeError):
            return ""

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Create the directories, run ``initdb`` and start the server (waits until ready)."""
        if self.running:
            return
        # /tmp rather than pytest's tmp_path: that one is 0o700 (postgres could not
        # enter it) and deep enough to hit the 107-byte limit on socket paths.
        self.base_dir = Path(tempfile.mkdtemp(prefix="pgtest-", dir="/tmp"))
        try:
            self.base_dir.chmod(0o711)  # traversable (not listable) by postgres
            for sub in (self.data_dir, self.socket_dir, self.log_file.parent):
                sub.mkdir(mode=0o700)
                if self._owner is not None:
                    os.chown(sub, self._owner.pw_uid, self._owner.pw_gid)

            self._run(
                [
                    str(self.binaries.initdb),
                    "-D",
                    str(self.data_dir),
                    "-A",
                    "trust",
                    "-U",
                    SUPERUSER,
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                "initdb",
            )
            server_options = " ".join(
                [
                    "-k",
                    shlex.quote(str(self.socket_dir)),
                    "-p",
                    str(PORT),
                    "-c",
                    "listen_addresses=''",
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "synchronous_commit=off",
                ]
            )
            self._run(
                [
                    str(self.binaries.pg_ctl),
                    "-w",
                    "-t",
                    str(TIMEOUT),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-o",
                    server_options,
                    "start",
                ],
                "pg_ctl start",
            )
            self.running = True
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (``pg_ctl -m immediate stop``) and remove the temporary directory."""
        if self.base_dir is None:
            return
        try:
            if self.running or (self.data_dir / "postmaster.pid").exists():
                try:
                    self._run(
                        [
                            str(self.binaries.pg_ctl),
                            "-w",
                            "-t",
                            str(TIMEOUT),
                            "-D",
                            str(self.data_dir),
                            "-m",
                            "immediate",
                            "stop",
                        ],
                        "pg_ctl stop",
                    )
                except ClusterError:
                    self._kill_postmaster()
        finally:
            self.running = False
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def _kill_postmaster(self) -> None:
        """Last resort after a failed ``pg_ctl stop``: SIGQUIT our own postmaster by its pid."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            first_line = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            os.kill(int(first_line), signal.SIGQUIT)  # SIGQUIT = immediate shutdown

    # -- databases -----------------------------------------------------------

    def connect_admin(self) -> psycopg.Connection[TupleRow]:
        """An autocommit psycopg connection to the ``postgres`` database over the socket."""
        return psycopg.connect(
            host=str(self.socket_dir),
            port=PORT,
            user=SUPERUSER,
            dbname="postgres",
            autocommit=True,
        )

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (default name ``t_<uuid hex>``) and return its name."""
        dbname = name or f"t_{uuid.uuid4().hex}"
        with self.connect_admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        return dbname

    def drop_database(self, name: str) -> None:
        """Drop database *name*, terminating any connections a test left open."""
        with self.connect_admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def url(self, dbname: str) -> str:
        """SQLAlchemy URL for *dbname*: ``postgresql+psycopg://postgres@/<db>?host=<socket dir>``."""
        return f"postgresql+psycopg://{SUPERUSER}@/{dbname}?host={self.socket_dir}"
