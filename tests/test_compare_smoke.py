"""benchmarks/compare.py runs every system end to end (tiny sizes) and reports each cell.

No timing checks (timing belongs in benchmarks/, and these sizes mean nothing): every peer
is installed and runs, every cell has numbers or says why the system cannot do it, and no
cell failed. A peer that stopped working fails here instead of quietly dropping out.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import postgres_server
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "compare.py"
sys.path.insert(0, str(ROOT / "benchmarks"))
from peers import SYSTEMS  # noqa: E402

sys.path.remove(str(ROOT / "benchmarks"))

# What a system cannot do, by design: (key, scenario) -> a phrase of the reason it gives.
CANNOT = {
    ("plain", "recover"): "keeps nothing",
    ("plain", "roundtrips"): "no events",
    ("fsync", "recover"): "not of recovery",
    ("fsync", "roundtrips"): "not of events",
    ("durable-memory", "recover"): "nothing survives",
    ("durable-memory", "roundtrips"): "another process",
    ("durable-disk", "roundtrips"): "no worker",
    ("duravoke-memory", "recover"): "nothing survives",
    ("duravoke-memory", "roundtrips"): "no events",
    ("duravoke-file", "roundtrips"): "no events",
    **{(f"durable-python-{store}", scenario): "not checkpointed one by one"
       for store in ("memory", "disk") for scenario in ("steps", "holding", "throughput")},
    ("durable-python-memory", "recover"): "nothing survives",
    ("durable-python-memory", "roundtrips"): "no other process",
    ("durable-python-disk", "recover"): "does not resume",
    ("durable-python-disk", "roundtrips"): "no other process",
    ("aws-memory", "recover"): "nothing survives",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("compare")
    env = dict(os.environ)
    env.pop("DURABLE_BENCH_POSTGRES_URL", None)
    if os.environ.get(postgres_server.URL_VARIABLE):
        env["DURABLE_BENCH_POSTGRES_URL"] = os.environ[postgres_server.URL_VARIABLE]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--results", str(out / "RESULTS.md"),
         "--chart", str(out / "chart.png"), "--json", str(out / "all.json")],
        capture_output=True, text=True, timeout=1200, cwd=out, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads((out / "all.json").read_text())
    data["stdout"] = done.stdout
    data["markdown"] = (out / "RESULTS.md").read_text()
    data["png"] = (out / "chart.png").read_bytes()
    return data


@pytest.mark.slow
def test_every_system_is_installed_and_says_what_it_runs(report: dict) -> None:
    assert set(report["systems"]) == {system.key for system in SYSTEMS}
    for key, probe in report["systems"].items():
        assert isinstance(probe, dict), f"{key} cannot run: {probe}"
        assert probe["label"] and probe["store"] and probe["durability"], key
    for package in ("dbos", "aws-durable-execution-sdk-python-testing", "duravoke",
                    "durable-python"):
        assert report["versions"][package] != "not installed", package


@pytest.mark.slow
def test_every_cell_has_numbers_or_a_reason_and_none_failed(report: dict) -> None:
    for cell in report["cells"]:
        for system in SYSTEMS:
            outcome = report["results"][f"{system.key}|{cell['title']}"]
            reason = CANNOT.get((system.key, cell["scenario"]))
            where = (system.key, cell["title"], outcome)
            if reason is None:
                assert outcome["why"] is None and outcome["values"], where
                assert all(math.isfinite(v) and v > 0 for v in outcome["values"]), where
            else:
                assert not outcome["values"] and reason in outcome["why"], where


@pytest.mark.slow
def test_the_run_prints_the_fsync_floor_and_the_ratios_and_draws_the_chart(report: dict) -> None:
    assert report["stdout"].startswith("fsync latency of the disk under test: median ")
    assert len(report["fsync"]) == 200
    assert "x  vs dbos-sqlite" in report["stdout"] or "x  vs aws-" in report["stdout"]
    assert "the plain floor" in report["stdout"] and "the fsync floor" in report["stdout"]
    for heading in ("## Machine", "## Versions", "## Systems", "## 1. Per-step overhead",
                    "## 2. Recovery", "## 3. Event round trip", "## 4. State size",
                    "## 5. Throughput", "## Ratios"):
        assert heading in report["markdown"]
    assert report["png"].startswith(b"\x89PNG\r\n\x1a\n") and len(report["png"]) > 20_000
