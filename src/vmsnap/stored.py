"""
Stored events as the audit reads them (ADR 0021): only vmsnap's own event classes are
decoded (a stored topic is never imported by name), a row must be in the exact form the
product writes and reads (canonical types and case), and an event's data must carry the
fields of its class. Whatever fails is :class:`Unreadable`, a finding, never a crash.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Mapper, Notification

from vmsnap.adapters.decoding import fast_event
from vmsnap.domain.api_job import ApiJob
from vmsnap.domain.api_refusal import ApiRefusal
from vmsnap.domain.pool import Pool
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.vm import Vm
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.volume_snapshot import VolumeSnapshot

KNOWN = (Vm, Pool, SnapshotAggregate, VmSnapshot, VolumeSnapshot, ApiJob, ApiRefusal)


def _aggregates() -> tuple[type, ...]:
    """
    Every aggregate class of vmsnap's own domain package (its modules are imported by
    walking the package, never by a name read from a store), so a new aggregate's events
    are decoded without being listed here.
    """
    import vmsnap.domain as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    found: list[type] = []
    todo: list[type] = [Aggregate]
    while todo:
        subclasses: list[type] = type.__subclasses__(todo.pop())
        for sub in subclasses:
            todo.append(sub)
            if sub.__module__.startswith("vmsnap.domain.") and sub not in found:
                found.append(sub)
    return tuple(dict.fromkeys((*KNOWN, *found)))


AGGREGATES = _aggregates()
_HEX_ID = re.compile(r"[0-9a-f]{32}")


class Unreadable(Exception):
    """A stored event the audit cannot read as one of vmsnap's events."""


def _event_classes() -> dict[str, type]:
    # The classes each aggregate declares itself: the ones vmsnap stores (pinned by
    # tests/unit/test_event_topics.py), not the base classes or inherited copies.
    classes: dict[str, type] = {}
    for aggregate in AGGREGATES:
        inherited = {name for base in aggregate.__mro__[1:] for name in vars(base)}
        for name, value in vars(aggregate).items():
            if (
                isinstance(value, type)
                and issubclass(value, Aggregate.Event)
                and name not in inherited
                and name != "Event"
            ):
                classes[f"{value.__module__}:{value.__qualname__}"] = value
    return classes


#: Every topic the audit decodes, and its class.
EVENT_CLASSES = _event_classes()


def _required(cls: type) -> frozenset[str]:
    fields = getattr(cls, "__dataclass_fields__", {})
    return frozenset(
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f._field_type is dataclasses._FIELD  # type: ignore[attr-defined]
    )


REQUIRED = {topic: _required(cls) for topic, cls in EVENT_CLASSES.items()}


def noncanonical(row: Any, dialect: str) -> str | None:
    """
    Why the row (position, originator id, version, topic, state) is not in the exact
    form vmsnap writes, or None. The product reads an aggregate by its canonical id; a
    row stored otherwise is not what the product reads, even when it decodes.
    """
    _, oid, version, topic, state = row[:5]
    if (  # the form vmsnap writes on SQLite, answered at once (every event is checked)
        type(state) is bytes
        and type(version) is int
        and type(topic) is str
        and dialect == "sqlite"
        and type(oid) is str
        and _HEX_ID.fullmatch(oid)
    ):
        return None
    if dialect == "sqlite" and not (isinstance(oid, str) and _HEX_ID.fullmatch(oid)):
        return f"originator id {oid!r} is not stored as vmsnap stores ids (32 lower-case hex)"
    if dialect == "postgres" and not isinstance(oid, UUID):
        return f"originator id {oid!r} is not a UUID"
    if type(version) is not int:
        return f"version {version!r} is stored as {type(version).__name__}, not an integer"
    if not isinstance(topic, str):
        return f"topic is stored as {type(topic).__name__}, not text"
    if not isinstance(state, bytes | bytearray | memoryview):
        return f"data is stored as {type(state).__name__}, not bytes"
    return None


def decode(mapper: Mapper[UUID], row: Any) -> Any:
    """
    The domain event of one stored row (position, originator id, version, topic, state).

    Raises:
        Unreadable: unknown topic, undecodable bytes, or data that does not fit its type.
    """
    topic = str(row[3])
    if topic not in EVENT_CLASSES:
        raise Unreadable(f"its type {topic[:80]!r} is not one of vmsnap's events")
    event = fast_event(mapper, row) or _mapped(mapper, topic, row)
    missing = REQUIRED[topic] - event.__dict__.keys()
    if missing:
        raise Unreadable(
            f"its data lacks the fields {sorted(missing)} of its type "
            f"{EVENT_CLASSES[topic].__qualname__}"
        )
    return event


def _mapped(mapper: Mapper[UUID], topic: str, row: Any) -> Any:
    # The library's own path: any row, and the exact message of whatever fails.
    position, oid, version, _, state = row[:5]
    try:
        data = state.encode() if isinstance(state, str) else bytes(state)
        return mapper.to_domain_event(
            Notification(
                id=int(position),
                originator_id=oid if isinstance(oid, UUID) else UUID(str(oid)),
                originator_version=int(version),
                topic=topic,
                state=data,
            )
        )
    except Exception as e:  # any stored bytes may be damaged: a finding, not a crash
        raise Unreadable(f"it cannot be decoded ({type(e).__name__}: {e})") from None
