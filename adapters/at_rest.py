"""
Stored events at rest: eventsourcing's AES cipher and zlib compressor, switched on by the
config's ``[store]`` and keyed from the environment, never from the config file.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
from collections.abc import Mapping
from typing import Any

from vmsnap.domain.exceptions import ConfigError, StoreError

CIPHER_KEY_ENV = "VMSNAP_CIPHER_KEY"
CIPHER_TOPICS = {"aes": "eventsourcing.cryptography:AESCipher"}  # AES-GCM (cryptography)
COMPRESSOR_TOPIC = "eventsourcing.compressor:ZlibCompressor"


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
