"""Every example runs as the README says, and prints what it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(name: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_quickstart_prints_what_the_readme_shows(tmp_path: Path) -> None:
    assert _run("quickstart.py", tmp_path) == (
        "waiting for permission to greet\npaused for event allow\nhello Ada\n")


def test_orders_runs_on_the_default_sqlite_store(tmp_path: Path) -> None:
    for _ in range(2):  # a second run finds the first run's instance in the store and adds one
        out = _run("orders.py", tmp_path)
        order = re.match(r"(order-\w+): reserved book, pen\n", out)
        assert order, out
        name = order.group(1)
        assert out == (f"{name}: reserved book, pen\n{name}: waiting for 'paid'\n"
                       f"{name}: shipped\n{name}: 2 items in parcel-{name}\n")
    assert (tmp_path / "durable.db").exists()
    listing = subprocess.run([sys.executable, "-m", "durable", "list", "--status", "finished"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.count(" finished ") == 2
