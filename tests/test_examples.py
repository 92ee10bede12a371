"""Every example runs as the README says, and prints what it promises."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


# As on a fresh machine: no key configured (the embedded stores make their own).
_ENV = {name: value for name, value in os.environ.items() if name != "DURABLE_SECRET_KEY"}


def _run(name: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=_ENV)
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
    for made in ("durable.db", "durable.db.key"):  # its key beside it, both the owner's only
        assert stat.S_IMODE((tmp_path / made).stat().st_mode) == 0o600, made
    listing = subprocess.run([sys.executable, "-m", "durable", "list", "--status", "finished"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60, env=_ENV)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.count(" finished ") == 2


def test_payments_retries_the_charge_on_durable_timers(tmp_path: Path) -> None:
    assert _run("payments.py", tmp_path) == (
        "t+0s validated order-1001\n"
        "t+0s charge attempt 1: ConnectionError: payment gateway timed out\n"
        "t+1s charge attempt 2: ConnectionError: payment gateway timed out\n"
        "t+3s charge attempt 3: charged 42.50\n"
        "t+8s fulfilled order-1001\n"
        "{'status': 'completed', 'order_id': 'order-1001', 'transaction_id': "
        "'txn-order-1001-3', 'tracking_number': 'TRK-order-1001'}\n")
    assert list(tmp_path.iterdir()) == []  # its store lived in a temporary directory


def test_approval_waits_a_day_for_the_manager(tmp_path: Path) -> None:
    assert _run("approval.py", tmp_path) == (
        "PO-1: auto-approved\n"
        "PO-2: approval requested for 1500\n"
        "PO-2: waiting for 'approval_received'\n"
        "PO-2: order placed\n"
        "PO-2: approved by 'Maria'\n"
        "PO-3: approval requested for 2500\n"
        "PO-3: waiting for 'approval_received' until 2026-01-02 00:00 UTC\n"
        "PO-3: cancelled, no approval within 24 hours\n")


def test_fanout_prices_items_three_at_a_time_in_input_order(tmp_path: Path) -> None:
    assert _run("fanout.py", tmp_path) == (
        "priced 7 items, at most 3 at a time:\n"
        "  milk      1.15\n"
        "  eggs      3.60\n"
        "  bread     3.10\n"
        "  coffee    8.20\n"
        "  apples    2.40\n"
        "  pasta     1.80\n"
        "  cheese    6.75\n"
        "subtotal 27.00, tax 2.16, shipping 4.99\n"
        "total 34.15\n")


def test_flaky_email_sends_every_email_exactly_once_across_crashes(tmp_path: Path) -> None:
    def run(seed: str | None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "FLAKY_EMAIL_SEED"}
        if seed is not None:
            env["FLAKY_EMAIL_SEED"] = seed
        return subprocess.run([sys.executable, str(EXAMPLES / "flaky_email.py"), "emails.db"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)

    sent: list[int] = []
    crashes = finished = 0
    for attempt in range(60):
        done = run(f"flaky-{attempt}")  # seeded: the same crashes every time the test runs
        *lines, last = done.stdout.splitlines() or [""]
        ids = [int(line.removeprefix("Sent email to user_id: ")) for line in lines]
        assert lines == [f"Sent email to user_id: {i}" for i in ids], done.stdout
        assert ids == list(range(len(sent), len(sent) + len(ids))), done.stdout
        sent += ids
        if done.returncode == 0:
            assert last == "finished", done.stdout + done.stderr
            finished += 1
            break
        assert done.returncode == 1 and last == "crash", done.stdout + done.stderr
        crashes += 1
    assert sent == list(range(10)) and finished == 1 and crashes > 0
    assert (tmp_path / "emails.db").exists() and not (tmp_path / "flaky_email.db").exists()
    again = run(None)  # the instance has finished: nothing is sent, nothing printed
    assert (again.returncode, again.stdout) == (0, ""), again.stderr


def test_fix_and_retry_finishes_a_failed_instance_on_the_fixed_code(tmp_path: Path) -> None:
    assert _run("fix_and_retry.py", tmp_path) == (
        "order-7 failed: ZeroDivisionError: division by zero\n"
        "order-7 runs again from its last save\n"
        '"order-7: 2 items reserved once, charged 50.0"\n'
        "reservations made: 1\n")
