"""CallStack: the frames of one instance, and their saved form, kept up to date incrementally.

The saved stack is a list of *segments*, each a pickle of consecutive
frames. A save re-pickles only frames that ran since the last one; frames
below keep their segment. Frames that share a mutable object (a list passed
down to a callee) must be pickled together, or the object would come back
as two copies: when a new segment shares an object with an older one, the
two are merged and pickled again as one.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import serialization
from .frame import FunctionCall
from .handling import active_errors
from .migration import Restoring


@dataclass
class _Segment:
    start: int
    stop: int
    pickled: serialization.Pickled


class CallStack:
    def __init__(self, frames: list[FunctionCall] | None = None) -> None:
        self.frames: list[FunctionCall] = frames or []
        self._segments: list[_Segment] = []
        self._pickler: serialization.StatePickler | None = None  # made on the first save
        # Frames at or above this index may have changed since the last snapshot. Blocks only
        # ever run in the top frame, so it is marked as soon as a snapshot is taken.
        self.dirty_from = 0

    @classmethod
    def from_blobs(cls, blobs: list[bytes], restoring: Restoring) -> CallStack:
        stack = cls()
        for blob in blobs:
            states, pickled = serialization.load(blob)
            start = len(stack.frames)
            stack.frames.extend(FunctionCall.restore(state, restoring) for state in states)
            stack._segments.append(_Segment(start, len(stack.frames), pickled))
        for caller, callee in zip(stack.frames, stack.frames[1:], strict=False):
            callee.inherited = active_errors(caller, caller.function.blocks[caller.pc].handling)
        stack.dirty_from = len(stack.frames) - 1  # the top frame runs next
        return stack

    def push(self, frame: FunctionCall) -> None:
        self.frames.append(frame)
        self.dirty_from = min(self.dirty_from, len(self.frames) - 1)

    def pop(self) -> FunctionCall:
        """Remove the top frame; the one below is handed its outcome, so it changes too."""
        frame = self.frames.pop()
        self.dirty_from = min(self.dirty_from, len(self.frames) - 1)
        return frame

    def snapshot(self) -> list[bytes]:
        """The saved form of every frame; raises if a frame cannot be pickled."""
        segments = [s for s in self._segments if s.stop <= self.dirty_from]
        index = segments[-1].stop if segments else 0
        while index < len(self.frames):
            stop = index + 1
            segment = self._pickle(index, stop, segments)
            shared = self._first_sharing(segment, segments)
            while shared is not None:
                segments = segments[:shared]
                segment = self._pickle(segments[-1].stop if segments else 0, stop, segments)
                shared = self._first_sharing(segment, segments)
            segments.append(segment)
            index = stop
        self._segments = segments
        self.dirty_from = len(self.frames) - 1  # the top frame runs next
        return [s.pickled.blob for s in segments]

    def _pickle(self, start: int, stop: int, older: list[_Segment]) -> _Segment:
        for segment in older:  # they will be compared with this one: keep their memo
            segment.pickled.freeze()
        states = [frame.saved_state() for frame in self.frames[start:stop]]
        if self._pickler is None:
            self._pickler = serialization.StatePickler()
        return _Segment(start, stop, self._pickler.dump(states))

    @staticmethod
    def _first_sharing(segment: _Segment, older: list[_Segment]) -> int | None:
        for position, other in enumerate(older):
            if segment.pickled.shares_with(other.pickled):
                return position
        return None
