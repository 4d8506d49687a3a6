"""
Stored events decoded without the per-event costs that do not apply to the rows vmsnap
writes (ADR 0025): the mapper's result, built the way the mapper builds it.

``Mapper.to_domain_event`` wants a ``Notification`` (a frozen dataclass: a Python call
per field) and looks up, for every event, how to convert its id, through ``issubclass``
against a runtime-checkable Protocol. For a row in the form vmsnap writes (plain JSON
bytes, a canonical id, class version 1) :func:`fast_event` builds the same event from
the same transcoder; for anything else (a cipher, a compressor, damage) it answers None
and the caller takes the mapper's own path, with the mapper's own errors.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    JSONTranscoder,
    Mapper,
    find_id_convertor,
    pass_through_convertor,
)
from eventsourcing.utils import resolve_topic

_UUIDS: dict[str, UUID] = {}  # an aggregate's events follow one another: ids repeat
_DIRECT: dict[str, type | None] = {}  # topic -> its class, None: the mapper's path


def _uuid(text: str) -> UUID:
    uid = _UUIDS.get(text)
    if uid is None:
        if len(_UUIDS) >= 4096:
            _UUIDS.clear()  # bounded: memory stays flat however long the log
        uid = _UUIDS[text] = UUID(text)
    return uid


def direct_class(topic: str) -> type | None:
    """
    The class of ``topic`` when the mapper would pass a UUID id through as it is and
    upcast nothing; None otherwise (or when the topic does not resolve).
    """
    try:
        return _DIRECT[topic]
    except KeyError:
        pass
    found: type | None = None
    try:
        cls = resolve_topic(topic)
        if (
            isinstance(cls, type)
            and getattr(cls, "class_version", 1) == 1
            and find_id_convertor(cls, UUID) is pass_through_convertor
        ):
            found = cls
    except Exception:  # not a topic of ours: the mapper's path reports it
        found = None
    _DIRECT[topic] = found
    return found


def _json(transcoder: Any, state: bytes) -> Any:
    """
    ``transcoder.decode(state)``. A document with no whitespace around it (as the
    transcoder writes them) goes straight to the decoder's scanner, past the Python
    layers that strip that whitespace; any other goes through ``decode`` itself.
    """
    decoder = getattr(transcoder, "decoder", None)
    if type(transcoder) is JSONTranscoder and isinstance(decoder, json.JSONDecoder):
        text = state.decode("utf8")
        try:
            value, end = decoder.scan_once(text, 0)  # type: ignore[attr-defined]
        except StopIteration:
            value, end = None, -1  # not a document from its first character
        if end == len(text):
            return value
    return transcoder.decode(state)


def fast_event(mapper: Mapper[UUID], row: Any) -> Any:
    """
    The domain event of ``row`` (position, originator id, version, topic, state), as
    ``mapper.to_domain_event`` would build it; None: take the mapper's path.
    """
    _, oid, version, topic, state = row[:5]
    if (
        mapper.cipher is not None
        or mapper.compressor is not None
        or type(state) is not bytes
        or type(version) is not int
        or type(topic) is not str
    ):
        return None
    cls = direct_class(topic)
    if cls is None:
        return None
    try:
        uid = oid if type(oid) is UUID else _uuid(oid)
        event_state = _json(mapper.transcoder, state)
    except Exception:  # damaged: the mapper's path says how
        return None
    if type(event_state) is not dict or "class_version" in event_state:
        return None
    event_state["originator_id"] = uid
    event_state["originator_version"] = version
    event: Any = object.__new__(cls)
    object.__setattr__(event, "__dict__", event_state)
    return event


_TEXTS: dict[Any, str] = {}


def id_text(stored: Any, uid: UUID) -> str:
    """
    ``str(uid)``, remembered by the id as stored (``uid`` was decoded from ``stored``):
    an aggregate's events follow one another, and a UUID formats in Python.
    """
    text = _TEXTS.get(stored)
    if text is None:
        if len(_TEXTS) >= 4096:
            _TEXTS.clear()  # bounded: memory stays flat however long the log
        text = _TEXTS[stored] = str(uid)
    return text
