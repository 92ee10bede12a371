"""History: what happened to an instance, in order, for people (``durable history``).

The runtime records an entry as each thing happens; the next save carries the
entries (``state["history"]``) and the store writes them in the same transaction
as that save, so an entry is kept exactly when what it tells of is (no commit of
its own). An entry is ``[at, kind, data]``: seconds since the epoch, one of the
kinds below, and plain JSON data (values as bounded reprs, ``summary``). A store
keeps the most recent ``KEEP`` entries of an instance, and records itself what
clients do to it (suspended, resumed, terminated, retried).
"""

from __future__ import annotations

import time
from typing import Any

KEEP = 1000  # entries kept per instance, the most recent
TRIM_EVERY = 100  # a save trims the instance's history once every so many entries
LONGEST = 10_000  # characters of a traceback kept in an entry (its end)

CREATED = "created"
STEP_FAILED = "step attempt failed"
STEP_COMPLETED = "step completed"
EVENT_CONSUMED = "event consumed"
TIMER_SET = "timer set"
TIMER_FIRED = "timer fired"
PAUSED = "paused"
RESUMED = "resumed"
CANCELLED = "cancelled"
MIGRATED = "migrated"
FAILED = "failed"
FINISHED = "finished"
# Recorded by stores, for what clients do.
SUSPENDED = "suspended"
UNSUSPENDED = "resumed by a client"
TERMINATED = "terminated"
RETRIED = "retried"

Entry = list[Any]  # [at, kind, data]


def entry(kind: str, **data: Any) -> Entry:
    return [time.time(), kind, data]
