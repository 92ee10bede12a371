"""Encryption at rest: a codec that encrypts every blob a store seals with AES-256-GCM.

Personal data in locals and payloads is then unreadable in the database, its files
and its backups. Needs the ``cryptography`` package (``pip install
'durable[encryption]'``). Each blob is encrypted under the first key with a fresh
96-bit nonce and what it is bound to (the instance, the event) as associated data,
and names its key, so keys rotate as signing keys do: encrypt with a new one first
in the list, keep the old ones to read, ``durable resign`` to encrypt all anew.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from collections.abc import Sequence

from ..errors import StoreError

ENVIRONMENT = "DURABLE_ENCRYPTION_KEY"
_KEY_ID, _NONCE = 8, 12

EncryptionKeys = str | bytes | Sequence[str | bytes]


class AesGcmCodec:
    """Keys are 32 random bytes, given as URL-safe base64 text (``new_key()`` makes one) or
    as bytes; a list for rotation (the first encrypts)."""

    def __init__(self, keys: EncryptionKeys, source: str = "the codec's keys") -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            raise StoreError("encryption needs the cryptography package: pip install "
                             "'durable[encryption]'") from None
        items = [keys] if isinstance(keys, str | bytes) else list(keys)
        if not items:
            raise StoreError(f"{source} holds no key")
        self._ciphers = [(_key_id(key), AESGCM(key))
                         for key in (_key(item, position, source)
                                     for position, item in enumerate(items, 1))]
        self._by_id = dict(reversed(self._ciphers))  # the first wins

    @staticmethod
    def new_key() -> str:
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()

    def encode(self, data: bytes, bound: bytes) -> bytes:
        key_id, cipher = self._ciphers[0]
        nonce = secrets.token_bytes(_NONCE)
        return key_id + nonce + cipher.encrypt(nonce, data, bound)

    def decode(self, data: bytes, bound: bytes) -> bytes:
        cipher = self._by_id.get(data[:_KEY_ID])
        if cipher is None:
            raise StoreError("it was encrypted with a key that is not among the encryption keys")
        return cipher.decrypt(data[_KEY_ID:_KEY_ID + _NONCE], data[_KEY_ID + _NONCE:], bound)


def codec_from_environment() -> AesGcmCodec | None:
    """The codec ``$DURABLE_ENCRYPTION_KEY`` (comma-separated keys) asks for, if it is set."""
    configured = os.environ.get(ENVIRONMENT, "").strip()
    return AesGcmCodec(configured.split(","), ENVIRONMENT) if configured else None


def _key(given: str | bytes, position: int, source: str) -> bytes:
    if isinstance(given, str):
        try:
            key = base64.urlsafe_b64decode(given.strip().encode())
        except (binascii.Error, ValueError):
            key = b""
    else:
        key = bytes(given)
    if len(key) != 32:
        raise StoreError(f"key {position} of {source} is not 32 bytes (as URL-safe base64 "
                         f"text); make one with python -c 'from durable.stores.encryption "
                         "import AesGcmCodec; print(AesGcmCodec.new_key())'")
    return key


def _key_id(key: bytes) -> bytes:
    return hmac.digest(key, b"durable encryption key id", "sha256")[:_KEY_ID]
