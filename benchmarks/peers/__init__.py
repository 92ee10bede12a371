"""The systems the comparison runs: each a ``Peer`` (see base.py) in a module of its own.

Keys name a library and its store. Nothing here imports a system: the child process of a
measurement imports only its own (``load``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from .base import Peer

BENCHMARKS = Path(__file__).resolve().parent.parent
SEED_PATH = BENCHMARKS / ".peers" / "durable-python"  # durable-python 0.1.1, see compare.py


@dataclass(frozen=True)
class System:
    key: str
    module: str  # in this package
    cls: str
    family: str  # the row group: "floor", "durable", or the peer's name
    durability: str  # the class compared within: "memory", "fsync" or "no fsync"
    needs_postgres: bool = False
    path: Path | None = None  # put first on the child's sys.path


SYSTEMS = [
    System("plain", "floor", "PlainPython", "floor", "memory"),
    System("fsync", "floor", "FsyncFloor", "floor", "fsync"),
    System("durable-memory", "ours", "DurableMemory", "durable", "memory"),
    System("durable-disk", "ours", "DurableDisk", "durable", "fsync"),
    System("durable-sqlite", "ours", "DurableSqlite", "durable", "fsync"),
    System("durable-sqlite-normal", "ours", "DurableSqliteNormal", "durable", "no fsync"),
    System("durable-postgres", "ours", "DurablePostgres", "durable", "fsync", needs_postgres=True),
    System("dbos-sqlite", "dbos_peer", "DbosSqlite", "DBOS", "fsync"),
    System("dbos-postgres", "dbos_peer", "DbosPostgres", "DBOS", "fsync", needs_postgres=True),
    System("aws-memory", "aws_peer", "AwsMemory", "AWS Durable Execution", "memory"),
    System("aws-sqlite", "aws_peer", "AwsSqlite", "AWS Durable Execution", "no fsync"),
    System("duravoke-memory", "duravoke_peer", "DuravokeMemory", "duravoke", "memory"),
    System("duravoke-file", "duravoke_peer", "DuravokeFile", "duravoke", "no fsync"),
    System("durable-python-memory", "seed_peer", "SeedMemory", "durable-python 0.1.1", "memory",
           path=SEED_PATH),
    System("durable-python-disk", "seed_peer", "SeedDisk", "durable-python 0.1.1", "no fsync",
           path=SEED_PATH),
]
BY_KEY = {system.key: system for system in SYSTEMS}
CLASSES = {"memory": "plain", "fsync": "fsync", "no fsync": None}  # each class's floor


def load(system: System) -> type[Peer]:
    """The Peer class of ``system`` (imports its library: call it in the child only)."""
    return getattr(importlib.import_module(f"{__name__}.{system.module}"), system.cls)
