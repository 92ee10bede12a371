"""Torn writes: a process SIGKILLed in the middle of saving leaves the previous state loadable.

A child saves large states (a few MB, so a kill often lands inside a write)
in a loop, noting each save that returned; the parent kills it at random
moments. After every kill the store must load a whole state (its content
matches its checksum), never older than the last save that returned.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from durable import DiskStateStore, SqliteStateStore

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 8

CHILD = textwrap.dedent("""
    import asyncio, hashlib, os, sys
    from durable import DiskStateStore, SqliteStateStore

    kind, where, first, confirmed = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    store = DiskStateStore(where) if kind == "disk" else SqliteStateStore(where)

    async def main():
        for n in range(first, first + 10_000):
            blob = hashlib.sha256(str(n).encode()).digest() * (4_000_000 // 32 + n % 7)
            await store.save("i", {"n": n, "blob": blob, "digest": hashlib.sha256(blob).hexdigest(),
                                   "status": "running", "consumed_events": []})
            with open(confirmed, "w") as file:
                file.write(str(n))
            if n == first:
                print("saving", flush=True)

    asyncio.run(main())
""")


def open_store(kind: str, where: Path) -> DiskStateStore | SqliteStateStore:
    return DiskStateStore(where) if kind == "disk" else SqliteStateStore(where)


@pytest.mark.parametrize("kind", ["disk", "sqlite"])
def test_sigkill_mid_save_leaves_a_whole_state(kind: str, tmp_path: Path) -> None:
    where = tmp_path / ("store" if kind == "disk" else "durable.db")
    confirmed = tmp_path / "confirmed"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    rng = random.Random(f"torn/{kind}")
    next_n, kills = 1, 0
    for _ in range(ROUNDS):
        child = subprocess.Popen([sys.executable, "-c", CHILD, kind, str(where), str(next_n), str(confirmed)],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout.readline() == "saving\n", child.stderr.read()
        time.sleep(rng.uniform(0.0, 0.3))
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL, child.stderr.read()
        kills += 1
        saved = asyncio.run(_load(kind, where))
        assert saved is not None
        assert hashlib.sha256(saved["blob"]).hexdigest() == saved["digest"]  # whole, not torn
        assert saved["n"] >= int(confirmed.read_text() or 0)  # no save that returned was lost
        next_n = saved["n"] + 1
    assert kills == ROUNDS and next_n > ROUNDS  # every round saved at least once before its kill


async def _load(kind: str, where: Path) -> dict | None:
    store = open_store(kind, where)
    try:
        return await store.load("i")
    finally:
        if isinstance(store, SqliteStateStore):
            await store.close()
