"""SqliteStateStore: the embedded default. One file, many processes on one machine.

What is SQLite's own here: the dialect, connecting (WAL journal, ``synchronous=FULL``
by default: a save that returned is on disk, and readers never block the
writer), and noticing other processes' changes: the writer's connection polls
``PRAGMA data_version`` (cheap: no disk read; it ignores the connection's own
commits) between writes, once someone waits. Processes take turns writing
through SQLite's own lock (``BEGIN IMMEDIATE`` with a busy timeout);
everything else is ``SqlStore``'s.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import StoreError
from .base import DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_STATE_BYTES
from .sealing import Codec, SecretKeys, keyring
from .sql import Dialect, SqlStore

_OLDEST = (3, 35)  # RETURNING, MATERIALIZED


class SqliteDialect(Dialect):
    def member(self, value: str, names: str) -> str:
        return f"{value} IN (SELECT value FROM json_each({names}))"

    def list_value(self, items: Sequence[Any]) -> str:
        return json.dumps(list(items))


SQLITE = SqliteDialect(
    blob="BLOB", real="REAL", int64="INTEGER", boolean="INTEGER", false="0", names="TEXT",
    event_key="INTEGER PRIMARY KEY AUTOINCREMENT",
    unique_ids="", events_by_instance="",  # SQLite's index rows hold keys of any length
    history_by_instance="CREATE INDEX durable_history_by_instance"
                        " ON durable_history (instance_id, id)",
    now="durable_now()",  # this machine's clock: every process of the store runs on it
    begin="BEGIN IMMEDIATE", lock_rows="", lock_row="",  # a write transaction holds the file
    schema_lock=None, announce=None, errors=(sqlite3.Error,), many_writers=False)


def _now() -> float:
    """The store's clock (``durable_now()`` in its statements): this machine's."""
    return time.time()


class SqliteStateStore(SqlStore):
    dialect = SQLITE

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL",
                 busy_timeout: float = 30.0, poll_interval: float = 0.01, readers: int = 4,
                 secret_key: SecretKeys | None = None, codec: Codec | None = None,
                 max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        """Without a key given or in ``$DURABLE_SECRET_KEY``, it signs with the key in the file
        beside the database (``<path>.key``), made on first use."""
        if sqlite3.sqlite_version_info < _OLDEST:
            raise StoreError(f"the SQLite store needs SQLite {'.'.join(map(str, _OLDEST))} or "
                             f"newer; this Python has {sqlite3.sqlite_version}")
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.poll_interval = poll_interval  # the longest between two looks at data_version
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = keyring(secret_key, codec=codec,
                       key_file=self.path.with_name(f"{self.path.name}.key"))
        super().__init__(f"SQLite database {str(self.path)!r}", readers=readers, keys=keys,
                         max_state_bytes=max_state_bytes, max_payload_bytes=max_payload_bytes)
        # A new database is readable by its owner only; SQLite gives its WAL and shared-memory
        # files the same mode.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        # The file (in WAL mode) and its schema are made before any other connection opens it;
        # that connection then serves the first reader.
        self._readers.adopt(self._open())
        self._seen: tuple[sqlite3.Connection, int] | None = None  # data_version, where read

    def __repr__(self) -> str:
        return f"SqliteStateStore({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                     check_same_thread=False)
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute(f"PRAGMA synchronous = {self.synchronous}")
            connection.create_function("durable_now", 0, _now)
        except BaseException:
            connection.close()
            raise
        return connection

    def _start_watching(self) -> None:
        self._writer.watch(self._noticed, self.poll_interval)

    def _noticed(self, connection: sqlite3.Connection) -> bool:
        """In the writer's thread: has another process committed since the last look?"""
        version = connection.execute("PRAGMA data_version").fetchone()[0]
        seen, self._seen = self._seen, (connection, version)
        if seen is None:
            return False  # the first look
        if seen != (connection, version):  # a change, or a new connection: it may have missed one
            self._wake()
            return True
        return False
