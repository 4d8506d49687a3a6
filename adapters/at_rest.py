"""
Stored events at rest: eventsourcing's AES cipher and zlib compressor, switched on by the
config's ``[store]`` and keyed from the environment, never from the config file.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import os
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper, StoredEvent

from vmsnap.domain.exceptions import ConfigError, StoreError

CIPHER_KEY_ENV = "VMSNAP_CIPHER_KEY"
CIPHER_TOPICS = {"aes": "eventsourcing.cryptography:AESCipher"}  # AES-GCM (cryptography)
COMPRESSOR_TOPIC = "eventsourcing.compressor:ZlibCompressor"
MAPPER_TOPIC = "vmsnap.adapters.at_rest:BoundMapper"
BOUND = b"\x00vmsnap-aead1\x00"  # marks a ciphertext bound to its event (ADR 0021)
NONCE = 12


def binding(originator_id: Any, version: int, topic: str) -> bytes:
    """
    The associated data of an event's ciphertext: its aggregate, version and type. A
    ciphertext moved to another event no longer authenticates.
    """
    oid = originator_id.hex if isinstance(originator_id, UUID) else UUID(str(originator_id)).hex
    return f"{oid}:{int(version)}:{topic}".encode()


class BoundMapper(Mapper[UUID]):
    """
    eventsourcing's mapper, except that with an AES cipher each event's ciphertext is
    AES-GCM with the event's :func:`binding` as associated data: swapping two encrypted
    payloads (or moving one to another event) makes both unreadable. Ciphertexts written
    before this (not marked :data:`BOUND`) are still read as they were.
    """

    def __init__(self, transcoder: Any, compressor: Any = None, cipher: Any = None) -> None:
        super().__init__(transcoder, compressor, cipher)
        self._plain: Mapper[UUID] = Mapper(transcoder, compressor, None)
        key = getattr(cipher, "key", None)
        self._aead = None
        if key is not None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aead = AESGCM(key)

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        if self._aead is None:
            return super().to_stored_event(domain_event)
        plain = self._plain.to_stored_event(domain_event)
        nonce = os.urandom(NONCE)
        aad = binding(plain.originator_id, plain.originator_version, plain.topic)
        sealed = BOUND + nonce + self._aead.encrypt(nonce, plain.state, aad)
        return StoredEvent(plain.originator_id, plain.originator_version, plain.topic, sealed)

    def to_domain_event(self, stored_event: Any) -> Any:
        state = stored_event.state
        if self._aead is None or not state.startswith(BOUND):
            return super().to_domain_event(stored_event)
        body = state[len(BOUND) :]
        aad = binding(
            stored_event.originator_id, stored_event.originator_version, stored_event.topic
        )
        plain = self._aead.decrypt(body[:NONCE], body[NONCE:], aad)
        return self._plain.to_domain_event(
            StoredEvent(
                stored_event.originator_id,
                stored_event.originator_version,
                stored_event.topic,
                plain,
            )
        )


def at_rest_env(cipher: str | None, compress: bool, environ: Mapping[str, str]) -> dict[str, str]:
    """
    The eventsourcing settings for ``[store] cipher`` and ``compress``.

    Raises:
        ConfigError: the cipher's key is missing or malformed, or its package is absent.
    """
    env: dict[str, str] = {}
    if compress:
        env["COMPRESSOR_TOPIC"] = COMPRESSOR_TOPIC
    if cipher is None:
        return env
    key = environ.get(CIPHER_KEY_ENV, "").strip()
    if not key:
        raise ConfigError(
            f'[store] cipher = "{cipher}" needs its key in ${CIPHER_KEY_ENV} '
            "(base64 of 16, 24 or 32 random bytes)"
        )
    try:
        size = len(base64.b64decode(key, validate=True))
    except (binascii.Error, ValueError):
        size = -1
    if size not in (16, 24, 32):
        raise ConfigError(f"${CIPHER_KEY_ENV} must be base64 of 16, 24 or 32 bytes")
    if importlib.util.find_spec("cryptography") is None:
        raise ConfigError(f"[store] cipher = \"{cipher}\" needs pip install 'vmsnap[crypto]'")
    env["CIPHER_TOPIC"] = CIPHER_TOPICS[cipher]
    env["CIPHER_KEY"] = key
    env["MAPPER_TOPIC"] = MAPPER_TOPIC
    return env


def check_readable(log: Any) -> None:
    """
    Read back the first stored event, so that a wrong key, or a store written with other
    ``cipher``/``compress`` settings, is a clear refusal before anything runs.

    Raises:
        StoreError: the stored events cannot be decoded with these settings.
    """
    page = log.notification_log.select(start=1, limit=1)
    if not page:
        return
    try:
        log.mapper.to_domain_event(page[0])
    except Exception:
        raise StoreError(
            "cannot read the store's events: wrong $VMSNAP_CIPHER_KEY, or the store was "
            "written with other [store] cipher/compress settings"
        ) from None
