"""Store URLs: one string picks and configures a store, for the client, the worker and the CLI."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from ..errors import StoreError, StoreURLError
from .base import StateStore
from .sealing import Codec, SecretKeys

DEFAULT_URL = "sqlite:///durable.db"  # a file in the working directory
SCHEMES = "memory://, file:///directory, sqlite:///file.db or postgresql://user@host/database"
LIMITS = ("max_state_bytes", "max_payload_bytes")  # query options every store takes
INSECURE = "insecure_unsigned"  # and a PostgreSQL store's
POSTGRES = ("postgresql", "postgres")


def open_store(url: str | None = None, *, create: bool = True,
               secret_key: SecretKeys | None = None, codec: Codec | None = None) -> StateStore:
    """The store a URL names; without one, ``$DURABLE_STORE``, else SQLite in ``./durable.db``.

    ``sqlite:///relative.db`` and ``sqlite:////absolute.db`` follow SQLAlchemy's
    convention; ``file:`` URLs name a directory for ``DiskStateStore``. With
    ``create=False`` a SQLite file or Disk directory must exist already (``StoreError``
    naming the path otherwise): what only reads a store never makes one where a path has
    a typo. PostgreSQL databases are never created, so it changes nothing there.

    Every store takes its size limits as query options (``?max_state_bytes=1000000``);
    a PostgreSQL URL also ``insecure_unsigned=true``, and passes its other options to libpq.
    Keys come from ``secret_key``, else as each store finds them (``sealing.keyring``).
    """
    url = url or os.environ.get("DURABLE_STORE") or DEFAULT_URL
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    rest, options = _options(url, scheme, rest)
    options.update(secret_key=secret_key, codec=codec)
    if scheme == "memory":
        from .memory import InMemoryStateStore
        return InMemoryStateStore(**options)
    if scheme == "file":
        from .disk import DiskStateStore
        return DiskStateStore(_path(url, urlsplit(f"file://{rest}").path, create, "directory"),
                              **options)
    if scheme == "sqlite":
        from .sqlite import SqliteStateStore
        return SqliteStateStore(_path(url, rest[1:] if rest.startswith("/") else rest, create,
                                      "file"), **options)
    if scheme in POSTGRES:
        from .postgres import PostgresStateStore
        return PostgresStateStore(f"{scheme}://{rest}", **options)
    raise StoreURLError(f"unknown store URL {redact(url)!r}: use {SCHEMES}")


def _options(url: str, scheme: str, rest: str) -> tuple[str, dict[str, Any]]:
    """``rest`` without the store's own options in its query, and those options. Other
    options are kept for PostgreSQL (libpq's own) and refused elsewhere."""
    if "?" not in rest:
        return rest, {}
    rest, _, query = rest.partition("?")
    options: dict[str, Any] = {}
    kept: list[tuple[str, str]] = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in LIMITS:
            if not value.isdigit() or int(value) <= 0:
                raise StoreURLError(f"{name} in store URL {redact(url)!r} must be a positive "
                                    f"whole number of bytes, not {value!r}")
            options[name] = int(value)
        elif scheme in POSTGRES and name == INSECURE:
            if value.lower() not in ("true", "false"):
                raise StoreURLError(f"{INSECURE} in store URL {redact(url)!r} must be true or "
                                    f"false, not {value!r}")
            options[name] = value.lower() == "true"
        elif scheme in POSTGRES:
            kept.append((name, value))
        else:
            raise StoreURLError(f"unknown option {name!r} in store URL {redact(url)!r}: this "
                                f"store takes {' and '.join(LIMITS)}")
    return (f"{rest}?{urlencode(kept)}" if kept else rest), options


def _path(url: str, path: str, create: bool, kind: str) -> str:
    """The local path a URL names; unless ``create``, one that exists."""
    if not path:
        raise StoreURLError(f"store URL {redact(url)!r} names no path: use {SCHEMES}")
    path = unquote(path)
    if not create and not os.path.exists(path):
        raise StoreError(f"no store at {redact(url)}: the {kind} {os.path.abspath(path)} does "
                         "not exist (a command that only reads never creates a store)")
    return path


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
