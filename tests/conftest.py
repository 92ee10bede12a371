"""Suite-wide rule: nothing is skipped. A skipped or expected-to-fail test fails the run."""

from __future__ import annotations

import pytest

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
