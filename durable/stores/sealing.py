"""Seals: what makes a blob read back from a store safe to unpickle.

Unpickling runs code, so whoever can write one row or file of a store could run
code in every process that reads it. Every blob a store writes (a state, an
event payload) is sealed: encoded by the store's codec if it has one
(encryption at rest), then signed with HMAC-SHA256 under the first of its
secret keys, bound to what it is (the state of this instance; a payload of
this event of this instance), so a blob cannot be moved to another place
either. A blob is unpickled only once its MAC verifies under one of the keys
(so keys rotate: sign with the new one first in the list, keep the old ones to
read). Layout::

    b"DUR1" | flags (1 byte: 1 = encoded) | key id (8 bytes) | MAC (32 bytes) | body

A pickle starts with ``b"\\x80"``, so an unsealed blob is told apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import pickle
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from ..errors import StoreError, UnverifiedDataError
from .encryption import codec_from_environment

MAGIC = b"DUR1"
_ENCODED = 1
_KEY_ID, _MAC = 8, 32
_HEAD = len(MAGIC) + 1 + _KEY_ID + _MAC
_BLOCK = 64  # bytes: SHA-256's block, HMAC's key size
ENVIRONMENT = "DURABLE_SECRET_KEY"
SHORTEST_KEY = 16  # characters (or bytes) of a secret key
MAKE_A_KEY = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"

SecretKeys = str | bytes | Sequence[str | bytes]


class Codec(Protocol):
    """Encodes a blob before it is signed (to encrypt it at rest) and decodes it after its
    signature verified. ``bound`` says what the blob is (use it as associated data)."""

    def encode(self, data: bytes, bound: bytes) -> bytes: ...

    def decode(self, data: bytes, bound: bytes) -> bytes: ...


class Keyring:
    """A store's secret keys (the first signs, any verifies), where they came from, and its
    codec. With no keys it does not sign (and reads only what is not signed)."""

    def __init__(self, keys: Sequence[bytes], source: str, codec: Codec | None = None) -> None:
        if codec is not None and not keys:
            raise StoreError("a codec needs a secret key too: what it encodes is then signed")
        self.keys = list(keys)
        self.source = source
        self.codec = codec
        self._macs = [(_key_id(key), Hmac(key)) for key in self.keys]
        self._by_id = dict(reversed(self._macs))  # the first wins

    @property
    def signs(self) -> bool:
        return bool(self.keys)

    def seal(self, data: bytes, bound: bytes) -> bytes:
        flags = 0
        if self.codec is not None:
            data, flags = self.codec.encode(data, bound), _ENCODED
        if not self.keys:
            return data
        key_id, started = self._macs[0]
        head = MAGIC + bytes((flags,)) + key_id
        return b"".join((head, started.digest(head, bound, data), data))

    def open(self, blob: bytes, bound: bytes, what: str) -> bytes | memoryview:
        """The data sealed in ``blob`` for ``bound`` (a view into it: a large payload is not
        copied); ``UnverifiedDataError`` (nothing unpickled) if its MAC does not verify, or it
        is not sealed and this store signs."""
        if not blob.startswith(MAGIC):
            if self.keys:
                raise UnverifiedDataError(what, "is not signed: it was altered, or written by a "
                                          f"store without a secret key ({self.source} signs)")
            return blob
        head, mac, data = blob[:_HEAD - _MAC], blob[_HEAD - _MAC:_HEAD], memoryview(blob)[_HEAD:]
        started = self._by_id.get(head[len(MAGIC) + 1:])
        if started is None or not hmac.compare_digest(mac, started.digest(head, bound, data)):
            raise UnverifiedDataError(what, "was altered, or written with another key: its "
                                      f"signature does not verify under {self._described()}")
        if head[len(MAGIC)] & _ENCODED:
            if self.codec is None:
                raise UnverifiedDataError(what, "is encoded (encrypted), and this store has no "
                                          "codec to decode it")
            try:
                data = self.codec.decode(data, bound)
            except Exception as error:
                raise UnverifiedDataError(what, f"cannot be decoded (decrypted): "
                                          f"{type(error).__name__}: {error}") from None
        return data

    def resealed(self, blob: bytes, bound: bytes, what: str, *, adopt_unsigned: bool,
                 left: list[str]) -> bytes | None:
        """``blob`` sealed with the first key (and the codec), or None if it is so already, or
        if it does not verify (then named in ``left``, with why). An unsealed blob is sealed
        only if ``adopt_unsigned``: taken on trust, as a person decided."""
        if not blob.startswith(MAGIC):
            if adopt_unsigned:
                return self.seal(blob, bound)
            left.append(f"{what} is not signed (resign --adopt-unsigned signs it)")
            return None
        try:
            data = self.open(blob, bound, what)
        except UnverifiedDataError as error:
            left.append(str(error))
            return None
        if (self.codec is None and not blob[len(MAGIC)] & _ENCODED
                and blob[len(MAGIC) + 1:_HEAD - _MAC] == self._macs[0][0]):
            return None  # (with a codec, always encoded anew: its keys may have rotated)
        return self.seal(data, bound)

    def _described(self) -> str:
        count = len(self.keys)
        if count == 0:
            return f"this store's keys: it has none ({self.source})"
        return f"{'the key' if count == 1 else f'any of the {count} keys'} of {self.source}"


class Hmac:
    """HMAC-SHA256 (RFC 2104) under one key, its inner and outer hashes started once: a blob
    then costs two copies of started hashes, about half of starting ``hmac.new`` per blob
    (it is the construction ``hmac.HMAC`` itself uses when OpenSSL's is not there)."""

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(hmac.trans_36))
        self._outer = hashlib.sha256(key.translate(hmac.trans_5C))

    def digest(self, *parts: bytes) -> bytes:
        inner = self._inner.copy()
        for part in parts:
            inner.update(part)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def _key_id(key: bytes) -> bytes:
    """Names a key in each blob it signs (so the right one is tried) without telling it."""
    return hmac.digest(key, b"durable key id", "sha256")[:_KEY_ID]


def state_bound(instance_id: str) -> bytes:
    return b"state\x00" + instance_id.encode()


def payload_bound(instance_id: str, event: str) -> bytes:
    return b"payload\x00" + instance_id.encode() + b"\x00" + event.encode()


def shown_bound(instance_id: str) -> bytes:
    """What people are shown of an instance: its summary, its history."""
    return b"shown\x00" + instance_id.encode()


def state_named(instance_id: str) -> str:
    return f"the saved state of instance {instance_id!r}"


def payload_named(instance_id: str, event: str, event_id: str) -> str:
    return f"the payload of event {event!r} (id {event_id}) of instance {instance_id!r}"


def keyring(secret_key: SecretKeys | None, *, codec: Codec | None = None,
            key_file: Path | None = None, in_process: bool = False,
            insecure_unsigned: bool = False, store: str = "this store") -> Keyring:
    """A store's keyring, from (first found) ``secret_key``, ``$DURABLE_SECRET_KEY``, or the
    key file beside an embedded store (made, readable only by its owner, on first use). A
    store only this process sees (``in_process``) signs only with a key given (encoding
    needs one: it then makes one). Else ``insecure_unsigned=True`` is the only way to a
    store that does not sign."""
    if codec is None:
        codec = codec_from_environment()
    if secret_key is not None:
        return Keyring(_keys(secret_key, "secret_key"), "secret_key", codec)
    if configured := os.environ.get(ENVIRONMENT, "").strip():
        return Keyring(_keys(configured.split(","), ENVIRONMENT), ENVIRONMENT, codec)
    if key_file is not None:
        return Keyring([read_key_file(key_file)], f"the key file {key_file}", codec)
    if in_process and codec is None:  # a signature would protect nothing there
        return Keyring([], "no key: nothing outside this process can write this store")
    if in_process:
        return Keyring([secrets.token_bytes(32)], "a key this process made", codec)
    if insecure_unsigned:
        return Keyring([], "no key (insecure_unsigned)", codec)
    raise StoreError(f"{store} needs a secret key to sign what it saves: set {ENVIRONMENT} (make "
                     f"one with {MAKE_A_KEY}) or pass secret_key=; insecure_unsigned=True "
                     "saves without signing, so whoever can write the database can run code "
                     "in every process that reads it")


def _keys(given: SecretKeys, source: str) -> list[bytes]:
    items = [given] if isinstance(given, str | bytes) else list(given)
    keys = [item.strip().encode() if isinstance(item, str) else bytes(item) for item in items]
    if not keys:
        raise StoreError(f"{source} holds no key")
    for position, key in enumerate(keys, 1):
        if len(key) < SHORTEST_KEY:
            raise StoreError(f"key {position} of {source} is {len(key)} characters long; a "
                             f"secret key needs at least {SHORTEST_KEY} (make one with "
                             f"{MAKE_A_KEY})")
    return keys


def read_key_file(path: Path) -> bytes:
    """The key in ``path``, made first if there is none: written whole, readable only by its
    owner, and linked into place only if no other process made one meanwhile."""
    try:
        return _keys(path.read_text(), f"the key file {path}")[0]
    except FileNotFoundError:
        pass
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):  # another process made one first: theirs
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return _keys(path.read_text(), f"the key file {path}")[0]


class _PlainData(pickle.Unpickler):
    """Unpickles plain data only (tuples, lists, dicts, strings, bytes, numbers): every
    class or function a pickle names is refused, so nothing it holds can run."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} refused: only plain data is read here")


def load_plain_data(stream: IO[bytes]) -> Any:
    """The next pickle in ``stream``, if it is plain data (``UnpicklingError`` if not)."""
    return _PlainData(stream).load()
