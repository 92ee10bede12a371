from .base import EventLog, StateStore
from .disk import DiskStateStore
from .memory import InMemoryStateStore

__all__ = ["DiskStateStore", "EventLog", "InMemoryStateStore", "StateStore"]
