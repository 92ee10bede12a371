"""The benchmark scripts run end to end (tiny sizes) and report every row. No timing checks:
timing belongs in benchmarks/, and these numbers mean nothing at this size."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import postgres_server
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "run.py"
WORKERS_SCRIPT = ROOT / "benchmarks" / "workers.py"
ROWS = [
    "1a", "1b", "1c", "1d", "1e", "1f", "1g",
    "2a", "2b", "2c", "2d", "2e", "2f", "2g",
    "3a", "3b", "3c", "3d", "3e", "3f",
    "4a", "4b", "4c",
]
WORKERS_ROWS = [
    "1a", "1b", "1c",
    "2a", "2b", "2c", "2d", "2e", "2f", "2g", "2h", "2i", "2j", "2k", "2l", "2m",
    "3a", "3b", "3c", "3d",
    "4a", "4b", "4c", "4d",
]
POSTGRES_ROWS = ["3c", "3d", "4a", "4b", "4c", "4d"]


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


@pytest.mark.slow
def test_quick_run_reports_every_row(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    result = run_script("--quick", "--json", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    data = json.loads(out.read_text())
    assert data["mode"] == "quick"
    assert [row["id"] for row in data["rows"]] == ROWS
    for key in ("python", "platform", "cpu_count", "durable", "duravoke"):
        assert key in data["environment"]
    printed = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    for row in data["rows"]:
        assert row["id"] in printed
        assert isinstance(row["median"], float) and math.isfinite(row["median"]), row
    assert "Python " in result.stdout


@pytest.mark.slow
def test_profile_mode_lists_durable_functions(tmp_path: Path) -> None:
    result = run_script("--quick", "--profile", "calls", "--top", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "durable/runtime/" in result.stdout


@pytest.mark.slow
def test_workers_quick_run_reports_every_row(tmp_path: Path) -> None:
    """SQLite and PostgreSQL rows alike: the benchmark starts its own throwaway server, or uses
    the suite's when the suite is given one."""
    out = tmp_path / "workers.json"
    env = dict(os.environ)
    env.pop("DURABLE_BENCH_POSTGRES_URL", None)
    if os.environ.get(postgres_server.URL_VARIABLE):
        env["DURABLE_BENCH_POSTGRES_URL"] = os.environ[postgres_server.URL_VARIABLE]
    result = subprocess.run([sys.executable, str(WORKERS_SCRIPT), "--quick", "--json", str(out)],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr

    data = json.loads(out.read_text())
    assert data["mode"] == "quick"
    assert {"config", "environment", "fsync_floor", "rows", "seconds"} <= set(data)
    assert set(data["fsync_floor"]) == {"fsync_us", "sqlite_commit_us", "steps_per_second"}
    for key in ("python", "platform", "cpu", "load_average", "durable", "sqlite", "postgresql"):
        assert key in data["environment"]
    assert [row["id"] for row in data["rows"]] == WORKERS_ROWS
    printed = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    for row in data["rows"]:
        assert row["id"] in printed
        assert isinstance(row["median"], float) and math.isfinite(row["median"]), row
    assert result.stdout.startswith("Python ")
    assert "fsync floor" in result.stdout


def _load_workers(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """benchmarks/workers.py as a module, under a name of its own, gone after the test."""
    name = "workers_benchmark_under_test"
    spec = importlib.util.spec_from_file_location(name, WORKERS_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_rows(bench: ModuleType, why: str, directory: Path) -> list:
    rows = bench.round_trip_rows(("3c", "3d"), "PostgreSQL", None, why, target=True)
    return rows + asyncio.run(bench.bench_fleet(None, why, directory, bench.QUICK))


def test_workers_postgres_rows_say_why_without_a_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreachable server: the rows say so (password not shown) instead of crashing."""
    bench = _load_workers(monkeypatch)
    url = f"postgresql://bench:s3cret@127.0.0.1:{_closed_port()}/postgres"
    monkeypatch.setenv("DURABLE_BENCH_POSTGRES_URL", url)
    with bench.postgres() as pg:
        assert pg.admin_url is None
    rows = _postgres_rows(bench, pg.why, tmp_path)
    assert [row.id for row in rows] == POSTGRES_ROWS
    for row in rows:
        assert row.median is None and row.note.startswith("unavailable: "), row
        assert "s3cret" not in row.note
    assert bench.render(rows).count("unavailable: ") == len(POSTGRES_ROWS)


def test_workers_postgres_rows_say_why_without_binaries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _load_workers(monkeypatch)
    monkeypatch.delenv("DURABLE_BENCH_POSTGRES_URL", raising=False)
    monkeypatch.setattr(postgres_server, "find_bindir", lambda: None)
    with bench.postgres() as pg:
        assert pg.admin_url is None
    assert "no PostgreSQL server binaries" in pg.why
    assert all(row.note.startswith("unavailable: no PostgreSQL server binaries")
               for row in _postgres_rows(bench, pg.why, tmp_path))


def test_fanout_quick_run_reports_every_row(tmp_path: Path) -> None:
    out = tmp_path / "fanout.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fanout.py"), "--quick",
                           "--json", str(out)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    assert sorted(rows) == ["1a", "1b", "1c", "1d", "1e", "1f", "1g", "2a", "2b", "2c", "2d", "2e"]
    assert all(row["values"] and all(v > 0 for v in row["values"]) for row in rows.values())
    for key in rows:
        assert f"\n{key} " in done.stdout


def test_check_quick_run_reports_its_row(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "check.py"), "--quick"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("durable check of 500 waiting instances (SQLite): median ")
