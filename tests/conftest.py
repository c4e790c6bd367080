"""Shared pytest fixtures.

Database fixtures (see ``tests/pgcluster.py``):

* ``sqlite_url`` -- ``sqlite:///<tmp_path>/engine.db``, a fresh file per test.
* ``pg_server`` -- one throw-away PostgreSQL cluster per session, started lazily.
* ``pg_url`` -- a fresh, empty PostgreSQL database per test:
  ``postgresql+psycopg://postgres@/t_<hex>?host=/tmp/pgtest-.../sock``.
* ``db_url`` -- parametrized over ``sqlite`` and ``postgres`` (marked ``postgres``).
* ``browser`` -- a headless Chromium (``tests/browser.py``); a failed browser test prints
  where its screenshots are.

Without the server binaries the PostgreSQL fixtures skip, unless
``REQUIRE_POSTGRES=1`` is set (CI), in which case they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from pgcluster import PgCluster, PostgresUnavailable, find_binaries

pytest_plugins = ["browser"]  # the `browser` fixture (a headless Chromium)

#: Fixtures that start the PostgreSQL cluster; tests using them get the ``postgres`` mark.
_PG_FIXTURES = frozenset({"pg_server", "pg_url"})


def _postgres_required() -> bool:
    """True when ``REQUIRE_POSTGRES=1``: a missing PostgreSQL must fail, not skip."""
    return os.environ.get("REQUIRE_POSTGRES", "") == "1"


def _unavailable(reason: str) -> NoReturn:
    """Skip the test because PostgreSQL cannot run, or fail under ``REQUIRE_POSTGRES=1``."""
    if _postgres_required():
        pytest.fail(
            f"REQUIRE_POSTGRES=1 but {reason}. Install PostgreSQL "
            "(Debian: apt-get install postgresql) or put initdb/pg_ctl on PATH.",
            pytrace=False,
        )
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a PostgreSQL fixture with ``postgres`` (for ``-m``)."""
    for item in items:
        if _PG_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(name="pg_server", scope="session")
def pg_server_fixture() -> Iterator[PgCluster]:
    """A throw-away PostgreSQL cluster, started on first use and removed at session end."""
    binaries = find_binaries()
    if binaries is None:
        _unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
    try:
        cluster = PgCluster(binaries)
    except PostgresUnavailable as exc:
        _unavailable(str(exc))
    cluster.start()  # a failing start is an error, never a skip
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(name="pg_url")
def pg_url_fixture(pg_server: PgCluster) -> Iterator[str]:
    """A fresh, empty database on ``pg_server``; yields its SQLAlchemy URL, drops it after."""
    dbname = pg_server.create_database()
    try:
        yield pg_server.url(dbname)
    finally:
        pg_server.drop_database(dbname)


@pytest.fixture(name="sqlite_url")
def sqlite_url_fixture(tmp_path: Path) -> str:
    """SQLAlchemy URL of a fresh SQLite file: ``sqlite:///<tmp_path>/engine.db``."""
    return f"sqlite:///{tmp_path / 'engine.db'}"


@pytest.fixture(
    name="db_url",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ],
)
def db_url_fixture(request: pytest.FixtureRequest) -> str:
    """The URL of a fresh database, once on SQLite and once on PostgreSQL."""
    fixture = {"sqlite": "sqlite_url", "postgres": "pg_url"}[request.param]
    url = request.getfixturevalue(fixture)
    assert isinstance(url, str)
    return url


@pytest.fixture(name="reactor", scope="session")
def reactor_fixture() -> Iterator[Any]:
    """The global Twisted reactor, running in a daemon thread for the whole session: MLLP
    delivery workers run on it, and a test drives them from its own thread (`run_pass`)."""
    import threading

    from twisted.internet import reactor

    r: Any = reactor
    if not r.running:
        threading.Thread(target=r.run, kwargs={"installSignalHandlers": False},
                         daemon=True, name="reactor").start()
    yield r


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed browser test (tests/browser.py) says where its screenshots are."""
    report = yield
    shots = getattr(item, "screenshots", None)
    if shots is not None and report.failed:
        line = f"screenshots of {item.nodeid}: {shots}"
        report.sections.append(("browser screenshots", line))
        print(f"\n{line}")
    return report
