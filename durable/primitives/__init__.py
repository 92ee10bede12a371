"""Durable primitives: each is a suspension point whose progress is saved with the frame."""

from .base import Primitive
from .control import ChildHandle, call_child, set_status, start_child
from .events import wait_for_event
from .fanout import SKIPPED, first, gather, map
from .steps import RetryPolicy, step
from .timers import sleep, sleep_until

__all__ = [
           "SKIPPED",
           "ChildHandle",
           "Primitive",
           "RetryPolicy",
           "call_child",
           "first",
           "gather",
           "map",
           "set_status",
           "sleep",
           "sleep_until",
           "start_child",
           "step",
           "wait_for_event",
]
