from .base import EventLog, InstanceInfo, InstanceStore, Lease, StateStore
from .disk import DiskStateStore
from .memory import InMemoryStateStore

__all__ = ["DiskStateStore", "EventLog", "InMemoryStateStore", "InstanceInfo", "InstanceStore",
           "Lease", "StateStore"]
