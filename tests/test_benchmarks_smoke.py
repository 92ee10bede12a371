"""The benchmark script runs end to end (tiny sizes) and reports every row. No timing checks:
timing belongs in benchmarks/, and these numbers mean nothing at this size."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "run.py"
ROWS = [
    "1a", "1b", "1c", "1d", "1e", "1f", "1g",
    "2a", "2b", "2c", "2d", "2e",
    "3a", "3b", "3c", "3d", "3e", "3f",
    "4a", "4b", "4c",
]


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
