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
    needs_postgres: bool = False
    in_memory: bool = False  # compared with plain Python; the others with the fsync floor
    path: Path | None = None  # put first on the child's sys.path


SYSTEMS = [
    System("plain", "floor", "PlainPython", "floor", in_memory=True),
    System("fsync", "floor", "FsyncFloor", "floor"),
    System("durable-memory", "ours", "DurableMemory", "durable", in_memory=True),
    System("durable-disk", "ours", "DurableDisk", "durable"),
    System("durable-sqlite", "ours", "DurableSqlite", "durable"),
    System("durable-sqlite-normal", "ours", "DurableSqliteNormal", "durable"),
    System("durable-postgres", "ours", "DurablePostgres", "durable", needs_postgres=True),
    System("dbos-sqlite", "dbos_peer", "DbosSqlite", "DBOS"),
    System("dbos-postgres", "dbos_peer", "DbosPostgres", "DBOS", needs_postgres=True),
    System("aws-memory", "aws_peer", "AwsMemory", "AWS Durable Execution", in_memory=True),
    System("aws-sqlite", "aws_peer", "AwsSqlite", "AWS Durable Execution"),
    System("duravoke-memory", "duravoke_peer", "DuravokeMemory", "duravoke", in_memory=True),
    System("duravoke-file", "duravoke_peer", "DuravokeFile", "duravoke"),
    System("durable-python-memory", "seed_peer", "SeedMemory", "durable-python 0.1.1",
           in_memory=True, path=SEED_PATH),
    System("durable-python-disk", "seed_peer", "SeedDisk", "durable-python 0.1.1", path=SEED_PATH),
]
BY_KEY = {system.key: system for system in SYSTEMS}


def load(system: System) -> type[Peer]:
    """The Peer class of ``system`` (imports its library: call it in the child only)."""
    return getattr(importlib.import_module(f"{__name__}.{system.module}"), system.cls)
