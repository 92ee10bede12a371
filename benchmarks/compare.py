"""durable against its peers, side by side in one run: writes RESULTS.md and the chart.

    python benchmarks/compare.py            # full run; benchmarks/RESULTS.md, assets/benchmarks.png
    python benchmarks/compare.py --quick    # tiny sizes, one repetition: checks that all runs

Every measurement is a child process (peer.py) running one system on fresh data; the
systems take turns within each repetition (interleaved), so a slow phase of the machine
hits all of them. Each system's module in peers/ says what it runs and at what durability.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import workers
from peers import BY_KEY, CLASSES, SEED_PATH, SYSTEMS, System

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
RESULTS = BENCHMARKS / "RESULTS.md"
CHART = REPO / "assets" / "benchmarks.png"
SEED_REQUIREMENT = "durable-python==0.1.1"
PEER_PACKAGES = ["dbos", "aws-durable-execution-sdk-python",
                 "aws-durable-execution-sdk-python-testing", "duravoke"]


@dataclass(frozen=True)
class Cell:
    """One scenario at one size: what the child runs, and how its value is shown."""

    scenario: str
    sizes: tuple[int, ...]
    title: str
    unit: str
    show: Callable[[Any], float]  # the child's value -> the number in the table
    lower_is_better: bool = True


@dataclass(frozen=True)
class Config:
    reps: int
    steps: tuple[int, ...] = (100, 1000)
    recover: tuple[int, ...] = (10, 100, 1000, 10000)
    round_trips: int = 50
    holding: tuple[int, ...] = (1000, 100000)
    holding_steps: int = 20
    concurrency: tuple[int, ...] = (1, 10, 100)
    instance_steps: int = 20
    budget: float = 60.0  # seconds of one system's cell after which no more repetitions run
    timeout: float = 600.0  # seconds one child may take


FULL = Config(reps=3, timeout=300.0)
QUICK = Config(reps=1, steps=(10,), recover=(10, 100), round_trips=5, holding=(1000,),
               holding_steps=5, concurrency=(1, 10), instance_steps=5, budget=30.0,
               timeout=120.0)


def cells(cfg: Config) -> list[Cell]:
    found = [Cell("steps", (n,), f"per step, N = {n:,}", "µs", lambda v, n=n: v / n * 1e6)
             for n in cfg.steps]
    found += [Cell("recover", (k,), f"recovery after K = {k:,}", "ms", lambda v: v * 1e3)
              for k in cfg.recover]
    found.append(Cell("roundtrips", (cfg.round_trips,), "event round trip", "ms",
                      lambda v: v * 1e3))
    found += [Cell("holding", (m, cfg.holding_steps), f"per step holding M = {m:,}", "µs",
                   lambda v: v * 1e6) for m in cfg.holding]
    found += [Cell("throughput", (c, cfg.instance_steps), f"{c} concurrent", "steps/s",
                   lambda v: v, lower_is_better=False) for c in cfg.concurrency]
    return found


@dataclass
class Outcome:
    """What one system gave for one cell: numbers from each repetition, or why none."""

    values: list[float] = field(default_factory=list)
    why: str | None = None
    seconds: float = 0.0  # wall time spent, for the budget


# --- child processes ------------------------------------------------------------------------------

def child(system: System, scenario: str, sizes: tuple[int, ...], directory: Path,
          database: str | None, timeout: float) -> tuple[Any, str | None]:
    """(value, None) or (None, why) from one peer.py run."""
    command = [sys.executable, str(BENCHMARKS / "peer.py"), system.key, scenario,
               *map(str, sizes), str(directory), *([database] if database else [])]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=directory)
    except subprocess.TimeoutExpired:
        return None, f"over budget: one run took more than {timeout:.0f} s"
    if scenario == "prepare" and done.returncode == 0 and not done.stdout.strip():
        return None, None  # it died where it was told to, as a crash would
    if done.returncode != 0 or not done.stdout.strip():
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        return None, f"failed: {lines[-1][:200]}"
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return answer.get("value"), answer.get("unsupported")


class Databases:
    """A fresh PostgreSQL database for each measurement that needs one (or why there is none)."""

    def __init__(self, pg: workers.Postgres) -> None:
        self.pg = pg

    @contextlib.contextmanager
    def fresh(self, system: System, template: str | None = None) -> Iterator[str | None]:
        if not system.needs_postgres or self.pg.admin_url is None:
            yield None
            return
        with workers.fresh_database(self.pg.admin_url, template) as url:
            yield url


def measure(system: System, cell: Cell, cfg: Config, work: Path, dbs: Databases,
            outcome: Outcome, prepared: dict[str, Any]) -> None:
    """One repetition of one cell for one system, added to ``outcome``."""
    if system.needs_postgres and dbs.pg.admin_url is None:
        outcome.why = f"no PostgreSQL: {dbs.pg.why}"
        return
    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(dir=work, prefix=f"{system.key}-{cell.scenario}-"))
    if cell.scenario == "recover":
        value, why = recover(system, cell, cfg, directory, dbs, prepared)
    else:
        with dbs.fresh(system) as database:
            value, why = child(system, cell.scenario, cell.sizes, directory, database,
                               cfg.timeout)
    shutil.rmtree(directory, ignore_errors=True)
    outcome.seconds += time.monotonic() - started
    if why is not None:
        outcome.why = why
    elif isinstance(value, list):
        outcome.values += [cell.show(v) for v in value]
    else:
        outcome.values.append(cell.show(value))


def recover(system: System, cell: Cell, cfg: Config, directory: Path, dbs: Databases,
            prepared: dict[str, Any]) -> tuple[Any, str | None]:
    """Prepare once (K steps, then the process dies), then recover a copy in a new process."""
    if "dir" not in prepared:
        prepared["dir"] = directory.parent / f"{directory.name}-prepared"
        prepared["dir"].mkdir()
        prepared["db"] = contextlib.ExitStack()
        prepared["url"] = prepared["db"].enter_context(dbs.fresh(system))
        _, prepared["why"] = child(system, "prepare", cell.sizes, prepared["dir"],
                                   prepared["url"], cfg.timeout)
    if prepared["why"] is not None:
        return None, prepared["why"]
    shutil.copytree(prepared["dir"], directory, dirs_exist_ok=True)
    with dbs.fresh(system, template=prepared["url"]) as database:
        return child(system, "recover", cell.sizes, directory, database, cfg.timeout)


def run_all(cfg: Config, systems: list[System], work: Path, dbs: Databases) -> dict:
    """Repetitions outermost, then cells, then systems: every system runs every cell once
    before any runs it again."""
    table: dict[tuple[str, str], Outcome] = {}
    prepared: dict[tuple[str, str], dict[str, Any]] = {}
    plan = cells(cfg)
    for rep in range(cfg.reps):
        for cell in plan:
            progress(f"repetition {rep + 1}/{cfg.reps}: {cell.scenario} {cell.title}")
            for system in systems:
                outcome = table.setdefault((system.key, cell.title), Outcome())
                if outcome.why is not None or (outcome.values and outcome.seconds > cfg.budget):
                    continue
                measure(system, cell, cfg, work, dbs, outcome,
                        prepared.setdefault((system.key, cell.title), {}))
    for state in prepared.values():
        if "db" in state:
            state["db"].close()
    return table


# --- the report -----------------------------------------------------------------------------------

def spread(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value >= 1 else f"{value:.2g}"


def shown(cell: Cell, outcome: Outcome) -> str:
    if outcome.why is not None and not outcome.values:
        return f"— ({outcome.why})"
    if cell.scenario == "roundtrips":
        return (f"p50 **{number(workers.percentile(outcome.values, 50))}**, "
                f"p99 {number(workers.percentile(outcome.values, 99))} (n={len(outcome.values)})")
    low, mid, high = spread(outcome.values)
    runs = f", {len(outcome.values)} runs" if len(outcome.values) > 1 else ", 1 run"
    return f"**{number(mid)}** ({number(low)} to {number(high)}{runs})"


def median_of(cell: Cell, outcome: Outcome | None) -> float | None:
    if outcome is None or not outcome.values:
        return None
    if cell.scenario == "roundtrips":
        return workers.percentile(outcome.values, 50)
    return statistics.median(outcome.values)


def better(cell: Cell, a: float, b: float) -> bool:
    return a < b if cell.lower_is_better else a > b


def best(cell: Cell, table: dict, keys: list[str]) -> tuple[str, float] | None:
    found = None
    for key in keys:
        value = median_of(cell, table.get((key, cell.title)))
        if value is not None and (found is None or better(cell, value, found[1])):
            found = key, value
    return found


def ratios(cfg: Config, systems: list[System], table: dict) -> list[str]:
    """Per cell and durability class: our best against the best peer of the same class
    (> 1x: ours is better), and our best over the class's floor."""
    lines = []
    for cell in cells(cfg):
        for durability, floor in CLASSES.items():
            group = [s for s in systems if s.durability == durability]
            mine = best(cell, table, [s.key for s in group if s.family == "durable"])
            theirs = best(cell, table, [s.key for s in group
                                        if s.family not in ("durable", "floor")])
            if mine is None:
                continue
            text = (f"{cell.title:<28} {durability:<8} {mine[0]:<22} {number(mine[1]):>8} "
                    f"{cell.unit:<8}")
            if theirs is None:
                text += "  no peer of this durability can do this"
            else:
                factor = theirs[1] / mine[1] if cell.lower_is_better else mine[1] / theirs[1]
                text += f"  {factor:7.1f}x  vs {theirs[0]} ({number(theirs[1])})"
            base = median_of(cell, table.get((floor, cell.title))) if floor else None
            if base:
                factor = mine[1] / base if cell.lower_is_better else base / mine[1]
                text += f"; {number(factor)}x the {floor} floor"
            lines.append(text)
    return lines


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for package in ["durable", *PEER_PACKAGES, "cloudpickle", "libcst", "psycopg", "matplotlib"]:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    seed = list(importlib.metadata.distributions(path=[str(SEED_PATH)]))
    found["durable-python"] = seed[0].version if seed else "not installed"
    return found


def write_results(cfg: Config, systems: list[System], probes: dict, table: dict,
                  env: dict[str, Any], fsync: list[float], elapsed: float) -> str:
    out = ["# Benchmark results", "",
           f"Written by `python benchmarks/compare.py` on "
           f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {elapsed / 60:.0f} min "
           f"({cfg.reps} repetitions, interleaved; fewer where one system's cell passed "
           f"{cfg.budget:.0f} s). Bold: the median; in brackets min to max. Absolute numbers "
           "move between machines and runs: compare within a table.", "",
           "## Machine", "",
           f"- {env['cpu']} ({env['cpus_usable']} usable CPUs), {env['platform']}",
           f"- Python {env['python']} ({env['implementation']}), SQLite {env['sqlite']}, "
           f"PostgreSQL {env['postgresql']}",
           f"- Disk under test: write 4 KiB + fsync, median {number(statistics.median(fsync) * 1e6)}"
           f" µs (min {number(min(fsync) * 1e6)}, max {number(max(fsync) * 1e6)}, "
           f"{len(fsync)} probes)",
           f"- Load average at the start: {', '.join(f'{x:.2f}' for x in env['load_average'])}",
           "", "## Versions", "", "| package | version |", "|---|---|"]
    out += [f"| {package} | {version} |" for package, version in versions().items()]
    out += ["", "## Systems", "",
            "Grouped by durability: rows are compared within a group (memory; fsync'd to disk "
            "before a step counts as done; written to disk without an fsync).", "",
            "| key | class | system | store | durability |", "|---|---|---|---|---|"]
    for system in systems:
        probe = probes[system.key]
        if isinstance(probe, str):
            out.append(f"| {system.key} | {system.durability} | {system.family} | — | {probe} |")
        else:
            out.append(f"| {system.key} | {system.durability} | {probe['label']} | "
                       f"{probe['store']} | {probe['durability']} |")
    for scenario, heading, explain in SECTIONS:
        group = [cell for cell in cells(cfg) if cell.scenario == scenario]
        out += ["", f"## {heading}", "", explain, "",
                "| system | " + " | ".join(f"{c.title} ({c.unit})" for c in group) + " |",
                "|---|" + "---|" * len(group)]
        for system in systems:
            row = [shown(cell, table[(system.key, cell.title)]) for cell in group]
            out.append(f"| {system.key} | " + " | ".join(row) + " |")
    out += ["", "## Ratios", "",
            "Per durability class: durable's best store against the best peer of the same "
            "class (> 1x: durable is better), and against the class's floor (plain Python; "
            "one fsync per step).", "",
            "```", *ratios(cfg, systems, table), "```", ""]
    return "\n".join(out)


SECTIONS = [
    ("steps", "1. Per-step overhead",
     "One new instance of N trivial steps (each returns its argument), start to end, divided "
     "by N. durable's steps are awaited durable calls (a save after each); DBOS's "
     "`@DBOS.step`, AWS's `context.step`, duravoke's decorated calls. Compare rows of the same "
     "durability (see Systems)."),
    ("recover", "2. Recovery",
     "An instance completed K steps, then its process died. A fresh process: time from before "
     "the library starts (store opened, DBOS launched, runner built) until step K + 1 begins. "
     "Replay-based systems re-run their history here; durable loads one state."),
    ("roundtrips", "3. Event round trip",
     "A worker runs an instance that waits for an event; another process publishes it; time "
     "until the instance continues (wall clock, same machine). Pooled over repetitions."),
    ("holding", "4. State size",
     "Per-step cost while the program holds a list of M integers in a local variable. "
     "durable saves the whole state, list included, at every step; systems that record only "
     "step results do not pay for it."),
    ("throughput", "5. Throughput",
     "C instances of 20 trivial steps each, concurrently on one worker (one process): steps "
     "per second."),
]


def chart(cfg: Config, systems: list[System], table: dict, path: Path) -> None:
    """Recovery time against K, and per-step cost per system (log scales)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    recover_cells = [cell for cell in cells(cfg) if cell.scenario == "recover"]
    for system in systems:
        points = [(cell.sizes[0], median_of(cell, table[(system.key, cell.title)]))
                  for cell in recover_cells]
        points = [(k, v) for k, v in points if v is not None]
        if points:
            style = "-o" if system.family == "durable" else "--s"
            left.plot(*zip(*points, strict=True), style, label=system.key, linewidth=2)
    left.set(xscale="log", yscale="log", xlabel="completed steps K",
             ylabel="ms until step K + 1 runs (fresh process)",
             title="Recovery after a crash (lower is better)")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    step_cell = [cell for cell in cells(cfg) if cell.scenario == "steps"][-1]
    bars = [(system.key, median_of(step_cell, table[(system.key, step_cell.title)]), system)
            for system in systems]
    bars = [(key, value, system) for key, value, system in bars if value is not None]
    colors = {"durable": "tab:green", "floor": "tab:gray"}
    right.barh([key for key, _, _ in bars], [value for _, value, _ in bars],
               color=[colors.get(system.family, "tab:orange") for _, _, system in bars])
    right.set(xscale="log", xlabel="µs per step (log)",
              title=f"Cost of a trivial step, N = {step_cell.sizes[0]:,} (lower is better)")
    right.invert_yaxis()
    right.grid(True, axis="x", which="both", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


# --- setup ----------------------------------------------------------------------------------------

def install_seed() -> None:
    """durable-python 0.1.1 declares Python >= 3.12 but runs on 3.11, and installs a package
    named ``durable``: it goes to a folder of its own, put on its children's path only."""
    if any(importlib.metadata.distributions(path=[str(SEED_PATH)])):
        return
    progress(f"installing {SEED_REQUIREMENT} into {SEED_PATH.relative_to(REPO)} ...")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--ignore-requires-python", "--target", str(SEED_PATH),
                           SEED_REQUIREMENT], capture_output=True, text=True)
    if done.returncode != 0:
        progress(f"cannot install {SEED_REQUIREMENT}: {done.stderr.strip()[-300:]}")


def probe(system: System, work: Path) -> dict[str, str] | str:
    """What the system says of itself, or why it cannot run here (e.g. not installed)."""
    value, why = child(system, "probe", (), work, None, 120)
    return value if value is not None else (why or "unknown")


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    parser.add_argument("--reps", type=int, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument("--only", nargs="*", choices=list(BY_KEY), help="these systems only")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--chart", type=Path, default=CHART)
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    if args.reps:
        cfg = Config(**{**cfg.__dict__, "reps": args.reps})
    install_seed()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="durable-compare-", dir=os.environ.get("TMPDIR")) \
            as scratch, workers.postgres() as pg:
        work = Path(scratch)
        fsync = workers.fsync_latencies(work, 200)
        print(f"fsync latency of the disk under test: median "
              f"{statistics.median(fsync) * 1e6:.0f} µs, min {min(fsync) * 1e6:.0f}, "
              f"max {max(fsync) * 1e6:.0f} ({len(fsync)} probes)", flush=True)
        chosen = [BY_KEY[key] for key in args.only] if args.only else SYSTEMS
        systems = sorted(chosen, key=lambda s: list(CLASSES).index(s.durability))
        probes = {system.key: probe(system, work) for system in systems}
        for key, what in probes.items():
            if isinstance(what, str):
                progress(f"{key}: {what}")
        runnable = [s for s in systems if not isinstance(probes[s.key], str)]
        table = run_all(cfg, runnable, work, Databases(pg))
        for system in systems:
            if system not in runnable:
                for cell in cells(cfg):
                    table[(system.key, cell.title)] = Outcome(why=probes[system.key])
        env = workers.environment(pg, work)
        text = write_results(cfg, systems, probes, table, env, fsync, time.monotonic() - started)
    args.results.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({
            "systems": probes, "fsync": fsync, "versions": versions(),
            "cells": [{"scenario": c.scenario, "title": c.title, "unit": c.unit}
                      for c in cells(cfg)],
            "results": {f"{key}|{title}": outcome.__dict__
                        for (key, title), outcome in table.items()}}, indent=1))
    chart(cfg, systems, table, args.chart)
    print("\n".join(ratios(cfg, systems, table)))
    progress(f"wrote {args.results} and {args.chart}")


if __name__ == "__main__":
    main()
