#!/usr/bin/env python
"""This checkout against another, side by side: durable's persistence benchmarks, interleaved.

    git worktree add /tmp/baseline <commit>            # the code to compare against
    python benchmarks/before_after.py /tmp/baseline    # 2 repetitions, about 25 minutes
    python benchmarks/before_after.py /tmp/baseline --quick     # tiny sizes, to see it runs

Each repetition runs this checkout's scripts twice, with each checkout's ``durable`` first on
the path in turn (one way of measuring for both sides): ``workers.py`` (steps per second on SQLite, event round trips on SQLite and
PostgreSQL, worker processes sharing PostgreSQL) and ``compare.py --quick --reps 3`` for
durable's database stores. It prints each row's median over the runs, before and after: a
round trip's percentiles over every round trip of every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STORES = ["durable-sqlite", "durable-sqlite-normal", "durable-postgres"]  # compare.py keys
HIGHER_IS_BETTER = {"steps/s", "x"}

Values = dict[str, dict[str, list[float]]]  # row -> "before"/"after" -> numbers


def run(checkout: Path, script: str, args: list[str]) -> None:
    """This checkout's ``script``, measuring the ``durable`` of ``checkout``."""
    subprocess.run([sys.executable, str(HERE / script), *args], cwd=checkout,
                   env={**os.environ, "PYTHONPATH": str(checkout)}, check=True,
                   stdout=subprocess.DEVNULL)


def workers_rows(path: Path, side: str, values: Values, units: dict[str, str]) -> None:
    for row in json.loads(path.read_text())["rows"]:
        if row["median"] is None:
            continue
        label = f"{row['id']} {row['label'].strip()}"
        pooled = "round trip" in label and "p50" in label
        values[label][side] += row["values"] if pooled else [row["median"]]
        units[label] = "ms p50" if pooled else row["unit"]


def compare_rows(path: Path, side: str, values: Values, units: dict[str, str]) -> None:
    found = json.loads(path.read_text())
    unit_of = {cell["title"]: cell["unit"] for cell in found["cells"]}
    for key, result in found["results"].items():
        system, title = key.split("|", 1)
        label = f"compare: {title}, {system}"
        values[label][side] += result["values"] or []
        units[label] = unit_of[title] + (" p50" if "round trip" in title else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", type=Path, help="a checkout of the code to compare against")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    values: Values = defaultdict(lambda: defaultdict(list))
    units: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for rep in range(reps):
            for side, checkout in (("before", args.baseline.resolve()), ("after", REPO)):
                print(f"repetition {rep + 1}/{reps}: {side} ({checkout})", flush=True)
                out = Path(scratch) / f"{side}-{rep}"
                run(checkout, "workers.py", [*(["--quick"] if args.quick else []),
                                             "--json", f"{out}-workers.json"])
                workers_rows(Path(f"{out}-workers.json"), side, values, units)
                run(checkout, "compare.py", [
                    "--quick", "--reps", "1" if args.quick else "3", "--only", *STORES,
                    "--results", f"{out}.md", "--chart", f"{out}.png", "--json", f"{out}.json"])
                compare_rows(Path(f"{out}.json"), side, values, units)
    if args.json:
        args.json.write_text(json.dumps({"units": units, "values": values}, indent=1))
    width = max(map(len, values))
    print(f"\n{'':{width}}  {'before':>12}  {'after':>12}  after/before")
    for label, sides in values.items():
        if not sides["before"] or not sides["after"]:
            continue
        before, after = statistics.median(sides["before"]), statistics.median(sides["after"])
        better = (after >= before) == (units[label].split(" ")[0] in HIGHER_IS_BETTER)
        print(f"{label:{width}}  {before:12.4g}  {after:12.4g}  {after / before:5.2f}x "
              f"{units[label]}{'' if better else '  (worse)'}")


if __name__ == "__main__":
    main()
