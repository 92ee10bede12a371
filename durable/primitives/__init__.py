"""Durable primitives: each is a suspension point whose progress is saved with the frame."""

from .base import Primitive
from .events import wait_for_event
from .fanout import SKIPPED, first, gather, map
from .steps import RetryPolicy, step
from .timers import sleep, sleep_until

__all__ = ["SKIPPED", "Primitive", "RetryPolicy", "first", "gather", "map", "sleep", "sleep_until",
           "step", "wait_for_event"]
