"""DiskStateStore: one file per instance, written atomically, events kept beside it.

A save writes a temporary file, fsyncs it, renames it over the old one and
fsyncs the directory: a crash at any moment leaves either the old state or
the new one, never a mix. Each published event is its own file (written the
same way), so a publish from another process never races a save. A publish
reads only the status at the head of the state file: events go only to an
instance that exists and has not ended.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import pickle
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO
from urllib.parse import quote, unquote

from .. import history
from ..errors import UnverifiedDataError
from ..ids import check_instance_id
from .base import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MAX_STATE_BYTES,
    EventLog,
    HistoryEntry,
    State,
    StateStore,
    consumed,
    event_status,
    receivable,
    same_start,
    start_digest,
)
from .blobs import Blobs, Resigned
from .sealing import (
    Codec,
    SecretKeys,
    keyring,
    load_plain_data,
    payload_bound,
    payload_named,
    state_bound,
    state_named,
)


class DiskStateStore(Blobs, StateStore, EventLog):
    """Without a key given or in ``$DURABLE_SECRET_KEY``, it signs with the key in the file
    beside its directory (``<directory>.key``), made on first use."""

    def __init__(self, path: str | os.PathLike[str], *, secret_key: SecretKeys | None = None,
                 codec: Codec | None = None, max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self.path = Path(path)
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._set_blobs(max_state_bytes, max_payload_bytes, keyring(
            secret_key, codec=codec, key_file=self.path.with_name(f"{self.path.name}.key")))

    def __repr__(self) -> str:
        return f"DiskStateStore({str(self.path)!r})"

    async def load(self, instance_id: str) -> State | None:
        return await asyncio.to_thread(self._load, instance_id)

    async def save(self, instance_id: str, state: State) -> None:
        await asyncio.to_thread(self._save, instance_id, state)

    async def create(self, instance_id: str, state: State) -> bool:
        """Save ``state`` unless the instance exists, as ``InstanceStore.create`` does (True if
        this call created it; an existing instance started otherwise raises
        ``InstanceExistsError``). Atomic across processes: the file is linked into place only
        if none is there."""
        return await asyncio.to_thread(self._create, instance_id, state)

    def append_event(self, instance_id: str, event: str, payload: bytes | None = None) -> str:
        check_instance_id(instance_id)
        header = self._read_header(instance_id)
        receivable(instance_id, None if header is None else header[0], event, repr(self))
        data = pickle.dumps((event, self._payload_blob(instance_id, event, payload)))
        directory = self._events_dir(instance_id)
        directory.mkdir(mode=0o700, exist_ok=True)
        # Ordered by a number above every pending event's, so a clock that stands still or
        # steps back cannot reorder them; the random part keeps concurrent publishers apart.
        newest = max((int(name.split("-")[0]) for name in _event_files(directory)), default=0)
        event_id = f"{max(time.time_ns(), newest + 1):020d}-{uuid.uuid4().hex}"
        _atomic_write(directory / event_id, data)
        return event_id

    async def events(self, instance_id: str) -> list[tuple[str, str]]:
        return await asyncio.to_thread(self._events, instance_id)

    async def payload(self, instance_id: str, event_id: str) -> bytes | None:
        event, blob = await asyncio.to_thread(self._published, instance_id, event_id)
        return self._payload_of(instance_id, event, event_id, blob)

    # Blocking parts, run in a worker thread.
    def _load(self, instance_id: str) -> State | None:
        state = self._read_state(instance_id)
        self._discard(instance_id, consumed(state))
        return state

    def _read_state(self, instance_id: str) -> State | None:
        try:
            data = self._state_file(instance_id).read_bytes()
        except FileNotFoundError:
            return None
        stream = io.BytesIO(data)
        if _is_header(_plain_or_none(stream)):  # two pickles: the header, then the state
            return self._state_of(instance_id, data[stream.tell():])
        return self._state_of(instance_id, data)  # written before headers (never signed)

    def _read_header(self, instance_id: str) -> tuple[str, str, str | None] | None:
        """``(status, program, start digest)`` of the instance (its status as a client sees
        it), None if there is none: read from the head of its file, without unpickling the
        state (which may need modules this process lacks)."""
        try:
            with open(self._state_file(instance_id), "rb") as file:
                first = _plain_or_none(file)
        except FileNotFoundError:
            return None
        if _is_header(first):
            return first[1:4]
        # Written before headers: the state itself, read only if it is plain data.
        program = first.get("program", "") if isinstance(first, dict) else ""
        return event_status(first) or "", program, None

    def _save(self, instance_id: str, state: State) -> None:
        check_instance_id(instance_id)
        blob = self._state_blob(instance_id, state)
        found = self._read_header(instance_id)
        _atomic_write(self._state_file(instance_id),
                      _header(instance_id, state, found and found[2]), blob)
        self._discard(instance_id, consumed(state))
        self._add_entries(instance_id, state)

    def _create(self, instance_id: str, state: State) -> bool:
        check_instance_id(instance_id)
        blob = self._state_blob(instance_id, state)
        try:
            _atomic_write(self._state_file(instance_id),
                          _header(instance_id, state, start_digest(state)),
                          blob, replace=False)
        except FileExistsError:
            found = self._read_header(instance_id)
            assert found is not None  # states are never deleted
            same_start(instance_id, found[1], found[2], state)
            return False
        self._add_entries(instance_id, state)
        return True

    def _add_entries(self, instance_id: str, state: State) -> None:
        """Appended to the instance's history file once its state is written (a crash
        between the two loses these entries, never the state); trimmed to the last ``KEEP``
        now and then, by writing it anew."""
        entries, trim = self._entries(instance_id, state)
        if not entries:
            return
        path = self._history_file(instance_id)
        lines = [json.dumps(stored) + "\n" for stored in entries]
        if trim and path.exists():
            kept = path.read_text().splitlines(keepends=True)[-(history.KEEP - len(lines)):]
            _atomic_write(path, "".join(kept + lines).encode())
            return
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as file:
            file.writelines(lines)

    async def history(self, instance_id: str, after: int = 0,
                      limit: int = history.KEEP) -> list[HistoryEntry]:
        """As ``InstanceStore.history``."""
        try:
            text = await asyncio.to_thread(self._history_file(instance_id).read_text)
        except FileNotFoundError:
            return []
        kept = [tuple(json.loads(line)) for line in text.splitlines() if line]
        return [self._open_entry(instance_id, e) for e in kept if e[0] > after][:limit]

    def _events(self, instance_id: str) -> list[tuple[str, str]]:
        directory = self._events_dir(instance_id)
        done = consumed(self._read_state(instance_id))
        found = []
        for name in sorted(_event_files(directory)):
            if name in done:
                continue
            try:
                event, _payload = self._published(instance_id, name)
                found.append((name, event))
            except FileNotFoundError:  # consumed and deleted meanwhile
                continue
        return found

    def _published(self, instance_id: str, event_id: str) -> tuple[str, bytes | None]:
        """``(event, sealed payload)`` of a published event, read as plain data only."""
        with open(self._events_dir(instance_id) / event_id, "rb") as file:
            try:
                event, blob = load_plain_data(file)
            except (pickle.UnpicklingError, ValueError, TypeError, EOFError) as error:
                raise UnverifiedDataError(
                    f"the event file {event_id} of instance {instance_id!r}",
                    f"is not an event this store wrote ({error})") from None
        return event, blob

    async def resign(self, *, adopt_unsigned: bool = False) -> Resigned:
        """As ``SqlStore.resign``; a state saved while it runs is left as saved (its file is
        read again just before it is replaced), but run it while no instance runs."""
        return await asyncio.to_thread(self._resign, adopt_unsigned)

    def _resign(self, adopt_unsigned: bool) -> Resigned:
        left: list[str] = []
        resealed = self._resealer(adopt_unsigned, left)
        changed = 0
        for path in sorted(self.path.glob("*.state")):
            data = path.read_bytes()
            stream = io.BytesIO(data)
            header = _plain_or_none(stream)
            instance_id = _instance_of(path, header)
            if instance_id is None:
                left.append(f"the state file {path.name} does not say which instance it holds "
                            "(saved before signing under a hashed name): save it again")
                continue
            start = stream.tell() if _is_header(header) else 0
            new = resealed(data[start:], state_bound(instance_id), state_named(instance_id))
            if new is not None and path.read_bytes() == data:
                _atomic_write(path, data[:start], new)
                changed += 1
            changed += self._reseal_events(instance_id, resealed, left)
        return Resigned(changed, left)

    def _reseal_events(self, instance_id: str, resealed: Callable[[bytes, bytes, str],
                                                                  bytes | None],
                       left: list[str]) -> int:
        changed = 0
        for event_id in _event_files(self._events_dir(instance_id)):
            try:
                event, blob = self._published(instance_id, event_id)
            except UnverifiedDataError as error:
                left.append(str(error))
                continue
            except FileNotFoundError:  # consumed meanwhile
                continue
            if blob is None:
                continue
            new = resealed(blob, payload_bound(instance_id, event),
                           payload_named(instance_id, event, event_id))
            if new is not None:
                _atomic_write(self._events_dir(instance_id) / event_id, pickle.dumps((event, new)))
                changed += 1
        return changed

    def _discard(self, instance_id: str, event_ids: set[str]) -> None:
        directory = self._events_dir(instance_id)
        for event_id in event_ids:
            (directory / event_id).unlink(missing_ok=True)

    def _state_file(self, instance_id: str) -> Path:
        return self.path / f"{_file_name(instance_id)}.state"

    def _history_file(self, instance_id: str) -> Path:
        return self.path / f"{_file_name(instance_id)}.history"

    def _events_dir(self, instance_id: str) -> Path:
        return self.path / f"{_file_name(instance_id)}.events"


# A state file is two pickles: a header, then the sealed state. The header has what a publish
# and a create need to know without unpickling the state: the status, the program, the digest
# of the start that created the instance (kept by every later save); and the instance's id
# (what the state's seal is bound to). Headers before signing had no id.
_HEADER = "durable state"


def _header(instance_id: str, state: State, digest: str | None) -> bytes:
    header = (_HEADER, event_status(state), state.get("program", ""), digest, instance_id)
    return pickle.dumps(header, pickle.HIGHEST_PROTOCOL)


def _is_header(first: object) -> bool:
    return isinstance(first, tuple) and len(first) in (4, 5) and first[0] == _HEADER


def _instance_of(path: Path, header: object) -> str | None:
    """The id of the instance a state file holds: in its header, else in a readable name."""
    if isinstance(header, tuple) and _is_header(header) and len(header) == 5:
        return str(header[4])
    if path.name.startswith("i-"):
        return unquote(path.name[2:-len(".state")])
    return None


def _plain_or_none(stream: IO[bytes]) -> object:
    """The first pickle of a state file if it is plain data (a header is), else None."""
    try:
        return load_plain_data(stream)
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError, IndexError, KeyError):
        return None


def _event_files(directory: Path) -> list[str]:
    try:
        return [name for name in os.listdir(directory) if not name.startswith(".")]
    except FileNotFoundError:
        return []


def _file_name(instance_id: str) -> str:
    """A file name only this id maps to: readable when it can be, hashed when too long or odd."""
    name = quote(instance_id, safe="")
    if len(name) > 120 or name.startswith("."):
        return "h-" + hashlib.sha256(instance_id.encode()).hexdigest()
    return "i-" + name


def _atomic_write(path: Path, *chunks: bytes, replace: bool = True) -> None:
    """Write ``path`` whole or not at all; without ``replace``, ``FileExistsError`` if it
    exists (linked into place: the check and the write are one step)."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600),
                       "wb") as file:
            for data in chunks:
                file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
            temporary.unlink()
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
