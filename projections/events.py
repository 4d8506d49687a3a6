"""Events as auditors read them: stable type names and JSON-safe data."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import attrs

_META = ("originator_id", "originator_version", "timestamp", "originator_topic")


def event_type(event: Any) -> str:
    """
    The event's stable type name, e.g. ``VmSnapshot.Requested``, ``Snapshot.Quiesced``
    (events both snapshot kinds share), ``Vm.OperationStarted``, ``Pool.Registered``.
    """
    return type(event).__qualname__.replace("SnapshotAggregate.", "Snapshot.")


_PLAIN = (str, int, float, type(None))


def json_safe(value: Any) -> Any:
    if isinstance(value, _PLAIN):  # most values: answer before the costlier checks
        return value
    if attrs.has(type(value)):
        return {f.name: json_safe(getattr(value, f.name)) for f in attrs.fields(type(value))}
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
    return {k: json_safe(v) for k, v in vars(event).items() if k not in _META}
