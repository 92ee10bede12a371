"""Store URLs: one string picks and configures a store, for the client, the worker and the CLI."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

from ..errors import StoreError
from .base import StateStore

DEFAULT_URL = "sqlite:///durable.db"  # a file in the working directory
SCHEMES = "memory://, file:///directory, sqlite:///file.db or postgresql://user@host/database"


def open_store(url: str | None = None) -> StateStore:
    """The store a URL names; without one, ``$DURABLE_STORE``, else SQLite in ``./durable.db``.

    ``sqlite:///relative.db`` and ``sqlite:////absolute.db`` follow SQLAlchemy's
    convention; ``file:`` URLs name a directory for ``DiskStateStore``.
    """
    url = url or os.environ.get("DURABLE_STORE") or DEFAULT_URL
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme == "memory":
        from .memory import InMemoryStateStore
        return InMemoryStateStore()
    if scheme == "file":
        from .disk import DiskStateStore
        return DiskStateStore(_path(url, urlsplit(url).path))
    if scheme == "sqlite":
        from .sqlite import SqliteStateStore
        return SqliteStateStore(_path(url, rest[1:] if rest.startswith("/") else rest))
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStateStore
        return PostgresStateStore(url)
    raise StoreError(f"unknown store URL {redact(url)!r}: use {SCHEMES}")


def _path(url: str, path: str) -> str:
    if not path:
        raise StoreError(f"store URL {redact(url)!r} names no path: use {SCHEMES}")
    return unquote(path)


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
