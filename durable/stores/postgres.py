"""PostgresStateStore: instances and events in PostgreSQL, shared by workers on many machines.

What is PostgreSQL's own here: the dialect (leases, timers and timestamps on
the database's clock, so workers whose clocks disagree still agree on them;
claims that lock what they pick and skip rows others hold; a deadlock's
victim runs again), connecting with psycopg (names with NUL characters,
which PostgreSQL text cannot hold, are stored escaped), and waking other
processes: work is announced with ``NOTIFY durable_work`` in the
transaction that makes it (or right after, for a write of one statement),
and a thread of each store ``LISTEN``s for it. Everything else is
``SqlStore``'s.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import select
import socket
import threading
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.string import StrDumperUnknown, TextBinaryLoader, TextLoader

from ..errors import StoreError, StoreURLError
from .base import DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_STATE_BYTES
from .sealing import Codec, SecretKeys, keyring
from .sql import Dialect, SqlStore
from .sql.connections import close_quietly
from .sql.dialect import pyformat

CHANNEL = "durable_work"
_MIGRATION_LOCK = 0x64757261626C65  # "durable": the advisory lock migrations hold
_ROLLED_BACK = "40"  # the SQLSTATE class of deadlocks and serialization failures
_RELISTEN_SECONDS = 1.0  # between attempts to listen again after the connection was lost

logger = logging.getLogger("durable.store")


class PostgresDialect(Dialect):
    def render(self, sql: str) -> str:
        return pyformat(sql)

    def execute_together(self, connection: Any, statements: list[str]) -> None:
        if statements:
            connection.execute("; ".join(statements))

    def read_blobs(self, connection: Any, sql: str, params: Any) -> Any:
        return connection.execute(sql, params, binary=True)

    def member(self, value: str, names: str) -> str:
        return f"{value} = ANY({names})"

    def list_value(self, items: Sequence[Any]) -> list[Any]:
        return list(items)

    def rolled_back(self, error: BaseException) -> bool:
        return (isinstance(error, psycopg.Error)
                and (error.sqlstate or "").startswith(_ROLLED_BACK))


POSTGRES = PostgresDialect(
    blob="bytea", real="double precision", int64="bigint", boolean="boolean", false="false",
    names="text[]", event_key="bigserial PRIMARY KEY",
    # A btree index row holds about 2,700 bytes, less than the longest valid id: ids are kept
    # unique, and found, by a hash index (an exclusion constraint: ON CONFLICT DO NOTHING
    # takes it as its arbiter).
    unique_ids="ALTER TABLE durable_instances DROP CONSTRAINT durable_instances_pkey,"
               " ADD CONSTRAINT durable_instances_unique_id EXCLUDE USING hash (id WITH =)",
    events_by_instance="DROP INDEX durable_events_by_instance; CREATE INDEX"
                       " durable_events_by_instance ON durable_events USING hash (instance_id)",
    history_by_instance="CREATE INDEX durable_history_by_instance"
                        " ON durable_history USING hash (instance_id)",
    now="extract(epoch FROM statement_timestamp())::float8",
    begin="BEGIN", lock_rows=" FOR UPDATE SKIP LOCKED", lock_row=" FOR UPDATE",
    schema_lock=f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})",
    announce=f"pg_notify('{CHANNEL}', '')", errors=(psycopg.Error,), many_writers=True,
    server_clock=True)


class PostgresStateStore(SqlStore):
    """Instances, their leases and their events in one PostgreSQL database."""

    dialect = POSTGRES

    def __init__(self, dsn: str, *, readers: int = 8, connect_timeout: float = 5.0,
                 secret_key: SecretKeys | None = None, codec: Codec | None = None,
                 insecure_unsigned: bool = False,
                 max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        """A key is needed (given, or in ``$DURABLE_SECRET_KEY``): there is no file beside a
        server's database to keep one in. ``insecure_unsigned=True`` saves without signing."""
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.Error as error:
            raise StoreURLError(f"invalid PostgreSQL connection string: "
                             f"{_hide_fragments(str(error), dsn)}") from None
        self.dsn = dsn  # as given (with any password): repr() and errors never show it
        self._password = str(params.get("password") or "")
        self._repr = f"PostgresStateStore({_safe_url(params)!r})"
        self.conninfo = dsn if "connect_timeout" in params else make_conninfo(
            dsn, connect_timeout=max(1, round(connect_timeout)))
        self._listener: _Listener | None = None
        where = _describe(params)
        keys = keyring(secret_key, codec=codec, insecure_unsigned=insecure_unsigned,
                       store=f"the PostgreSQL store ({where})")
        super().__init__(where, readers=readers, keys=keys, max_state_bytes=max_state_bytes,
                         max_payload_bytes=max_payload_bytes)

    def __repr__(self) -> str:
        return self._repr

    def _connect(self) -> psycopg.Connection[Any]:
        connection = psycopg.Connection.connect(self.conninfo, autocommit=True)
        connection.adapters.register_dumper(str, _NulSafeDumper)
        connection.adapters.register_loader("text", _NulSafeLoader)
        connection.adapters.register_loader("text", _NulSafeBinaryLoader)  # rows read in binary
        return connection

    def _clean(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    def _start_watching(self) -> None:
        """Listen before the first look, so nothing that changes after it goes unnoticed."""
        listener = _Listener(self)
        listener.start()
        self._listener = listener

    def _stop_watching(self) -> None:
        if self._listener is not None:
            self._listener.stop()


class _Listener:
    """A thread that LISTENs for work any process announces and wakes this process's waiters.

    When its connection is lost it listens again, and wakes the waiters then:
    what it missed meanwhile may be work."""

    def __init__(self, store: PostgresStateStore) -> None:
        self.store = store

    def start(self) -> None:
        """Listen now (raising a StoreError if the database cannot be reached), then go on in
        a thread of its own."""
        connection = self._listen()
        self._stop, self._stopper = socket.socketpair()  # a byte on it stops the thread
        self._thread = threading.Thread(target=self._run, args=(connection,), daemon=True,
                                        name=f"durable listener {self.store.where}")
        self._thread.start()

    def stop(self) -> None:
        self._stopper.send(b"x")
        self._thread.join()
        self._stop.close()
        self._stopper.close()

    def _listen(self) -> psycopg.Connection[Any]:
        connection = self.store._open()
        try:
            connection.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as error:
            connection.close()
            raise self.store._failure(error) from None
        return connection

    def _run(self, connection: psycopg.Connection[Any] | None) -> None:
        failing = False  # the last attempt to listen again failed: wait before the next
        try:
            while True:
                try:
                    if connection is None:
                        connection = self._listen()
                        failing = False
                        self.store._wake()
                    readable, _, _ = select.select([connection.fileno(), self._stop], [], [])
                    if self._stop in readable:
                        return
                    if _received(connection):
                        self.store._wake()
                except (psycopg.Error, StoreError, OSError) as error:
                    failure = error if isinstance(error, StoreError) else self.store._failure(error)
                    logger.warning("listening for work again after: %s", failure)
                    if connection is not None:
                        close_quietly(connection)
                        connection = None
                    if failing and select.select([self._stop], [], [], _RELISTEN_SECONDS)[0]:
                        return
                    failing = True
        finally:
            if connection is not None:
                close_quietly(connection)


def _received(connection: psycopg.Connection[Any]) -> bool:
    """Read what the server sent (the socket is readable): True if it held a notification."""
    pgconn = connection.pgconn
    pgconn.consume_input()
    received = False
    while pgconn.notifies() is not None:
        received = True
    return received


class _NulSafeDumper(StrDumperUnknown):
    """PostgreSQL text cannot hold NUL: names with one (or starting with the mark) are stored
    marked, with NUL and the mark escaped; every other name is stored as it is."""

    def dump(self, obj: str) -> Any:
        return super().dump(_text(obj))


class _NulSafeLoader(TextLoader):
    def load(self, data: Any) -> Any:
        return _untext(super().load(data))


class _NulSafeBinaryLoader(TextBinaryLoader):
    def load(self, data: Any) -> Any:
        return _untext(super().load(data))


_MARK = "\x01"
_ESCAPED = re.compile("\x01(.)", re.DOTALL)


def _text(name: str) -> str:
    if "\x00" not in name and not name.startswith(_MARK):
        return name
    return _MARK + name.replace(_MARK, _MARK + "\x02").replace("\x00", _MARK + _MARK)


def _untext(stored: Any) -> Any:
    if not isinstance(stored, str) or not stored.startswith(_MARK):
        return stored
    return _ESCAPED.sub(lambda match: "\x00" if match[1] == _MARK else _MARK, stored[1:])


def _describe(params: dict[str, Any]) -> str:
    """'PostgreSQL database 'x' at host:port', from the connection parameters and libpq's defaults."""
    host = str(params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST")
               or "localhost")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    database = (params.get("dbname") or os.environ.get("PGDATABASE") or params.get("user")
                or os.environ.get("PGUSER") or _login())
    return f"PostgreSQL database {database!r} at {host}:{port}"


def _safe_url(params: dict[str, Any]) -> str:
    user = params.get("user")
    host = params.get("host") or params.get("hostaddr") or ""
    port = params.get("port")
    netloc = (f"{user}@" if user else "") + str(host) + (f":{port}" if port else "")
    return f"postgresql://{netloc}/{params.get('dbname') or ''}"


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "?"


def _hide_fragments(message: str, dsn: str) -> str:
    """psycopg quotes the part of a bad connection string it stumbled on; it may hold a password."""
    message = message.strip()
    if message.startswith("invalid connection option"):
        return message  # the quoted part is an option's name
    def hide(match: re.Match[str]) -> str:
        return '"…"' if len(match[1]) > 1 and match[1] in dsn else match[0]
    return re.sub(r'"([^"]*)"', hide, message)
