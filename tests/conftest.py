"""Suite-wide rule: nothing is skipped. A skipped or expected-to-fail test fails the run."""

from __future__ import annotations

import os

import pytest

# The key stores sign with in tests (a PostgreSQL store needs one); processes the tests start
# inherit it. Tests of the other ways to a key remove it.
os.environ.setdefault("DURABLE_SECRET_KEY", "a key the tests share (never a real one)")

pytest_plugins = ["postgres_server"]  # a throwaway PostgreSQL server: the postgres_dsn fixture


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = terminalreporter.stats.get("skipped", []) + terminalreporter.stats.get("xfailed", [])
    if skipped:
        terminalreporter.section("required tests did not run", red=True)
        for report in skipped:
            terminalreporter.line(f"{report.nodeid}: {report.longrepr}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    stats = reporter.stats if reporter is not None else {}
    if (stats.get("skipped") or stats.get("xfailed")) and exitstatus == 0:
        session.exitstatus = 1


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A store that workers and clients share, on each database: SQLite in a file of its own,
    PostgreSQL in a fresh database (``postgres_dsn``)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'durable.db'}"
    return request.getfixturevalue("postgres_dsn")


@pytest.fixture
async def store(store_url: str):
    """The store at ``store_url``, closed after the test. A test file may define its own."""
    from durable.stores import open_store

    opened = open_store(store_url)
    yield opened
    await opened.close()


@pytest.fixture
async def opened():
    """Opens stores by URL (``opened(url)``) and closes them at the end, passed or failed.
    Ask for it after the fixture that makes the database, so it closes them first."""
    from durable.stores import open_store

    stores = []

    def open_url(url: str):
        stores.append(open_store(url))
        return stores[-1]
    yield open_url
    for store in stores:
        await store.close()


@pytest.fixture(params=["memory", "disk", "sqlite", "postgres"])
async def any_store(request: pytest.FixtureRequest, tmp_path):
    """A store of each kind durable has, opened by URL, closed after the test."""
    from durable.stores import open_store

    if request.param == "postgres":
        opened = open_store(request.getfixturevalue("postgres_dsn"))
    else:
        opened = open_store({"memory": "memory://", "disk": f"file://{tmp_path}/states",
                             "sqlite": f"sqlite:///{tmp_path}/app.db"}[request.param])
    yield opened
    if hasattr(opened, "close"):
        await opened.close()
