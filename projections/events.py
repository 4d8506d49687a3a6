"""Events as auditors read them: stable type names and JSON-safe data."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import attrs

_META = frozenset(("originator_id", "originator_version", "timestamp", "originator_topic"))


def event_type(event: Any) -> str:
    """
    The event's stable type name, e.g. ``VmSnapshot.Requested``, ``Snapshot.Quiesced``
    (events both snapshot kinds share), ``Vm.OperationStarted``, ``Pool.Registered``.
    """
    kind = type(event)
    name = _TYPE_NAMES.get(kind)
    if name is None:
        name = _TYPE_NAMES[kind] = kind.__qualname__.replace("SnapshotAggregate.", "Snapshot.")
    return name


_TYPE_NAMES: dict[type, str] = {}


_PLAIN = (str, int, float, type(None))
#: Exact types json_safe returns as they are, answered by one set look-up (an export
#: walks every value of every event; profiled).
_AS_IS = frozenset({str, int, float, bool, type(None)})
_FIELDS: dict[type, tuple[str, ...]] = {}  # attrs class -> its field names, in order


def json_safe(value: Any) -> Any:
    kind = type(value)
    if kind in _AS_IS:
        return value
    if kind is dict:
        return {str(k): json_safe(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [json_safe(v) for v in value]
    names = _FIELDS.get(kind)
    if names is not None:
        return {name: json_safe(getattr(value, name)) for name in names}
    return _json_safe(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, _PLAIN):  # subclasses of the plain types
        return value
    if attrs.has(type(value)):
        names = _FIELDS[type(value)] = tuple(f.name for f in attrs.fields(type(value)))
        return {name: json_safe(getattr(value, name)) for name in names}
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def event_data(event: Any) -> dict[str, Any]:
    """
    The event's own fields (everything but its id, version and timestamp), JSON-safe.
    """
    return {
        k: v if type(v) in _AS_IS else json_safe(v)  # most values: no call (profiled)
        for k, v in vars(event).items()
        if k not in _META
    }
