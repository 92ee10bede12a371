"""How an ended instance's outcome is kept and given back: its result, or its error raised."""

from __future__ import annotations

from typing import Any

from .. import serialization
from ..errors import FailedInstanceError, InstanceTerminated
from . import envelope

ENDED = (envelope.COMPLETED, envelope.FAILED, envelope.TERMINATED)


def saveable_error(error: BaseException) -> bytes:
    try:
        blob = serialization.dumps(error)
        serialization.loads(blob)
        return blob
    except Exception:
        return serialization.dumps(FailedInstanceError(type(error).__qualname__, str(error)))


def outcome(state: dict[str, Any], instance_id: str) -> Any:
    """An ended instance's result, or its error raised: for a runtime and for a client."""
    status = state["status"]
    if status == envelope.COMPLETED:
        return serialization.loads(state["result"])
    if status == envelope.FAILED:
        raise stored_error(state)
    if status == envelope.TERMINATED:
        raise InstanceTerminated(instance_id, state.get("reason"))
    raise ValueError(f"instance {instance_id!r} has not ended (it is {status})")


def stored_error(state: dict[str, Any]) -> BaseException:
    error = serialization.loads(state["result"])
    if state.get("error_traceback") and isinstance(error, BaseException):
        error.add_note("Traceback of the run that failed:\n" + state["error_traceback"].rstrip())
    return error


