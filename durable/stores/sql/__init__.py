"""The SQL stores' shared core: one schema, one set of statements, one writer, one store."""

from .dialect import Dialect
from .store import SqlStore

__all__ = ["Dialect", "SqlStore"]
