"""Immutable read-side views returned by the Controller; ``to_dict()`` is the JSON form."""

from __future__ import annotations

from typing import Any

import attrs

from vmsnap.projections.events import json_safe


def _to_dict(obj: Any) -> dict[str, Any]:
    result: dict[str, Any] = json_safe(obj)
    return result


@attrs.frozen
class VolumeInSnapshot:
    volume_id: str
    pool_id: str


@attrs.frozen
class HookView:
    """
    One hook run of a snapshot (issue 19): ``status`` is owed | running | ok | failed |
    timed-out | unended (never ended, run again); ``output``: its first 4 KiB of output.
    """

    hook: str
    run: tuple[str, ...] = attrs.field(converter=tuple)
    where: str = "guest"
    status: str = "owed"
    exit_code: int | None = None
    duration_ms: int | None = None
    output: str = ""
    error: str | None = None


def _hook_views(hooks: Any) -> tuple[HookView, ...]:
    return tuple(h if isinstance(h, HookView) else HookView(**h) for h in hooks)


@attrs.frozen
class VmSnapshotView:
    """
    A VM snapshot as the contract's JSON shape describes it.
    """

    id: str
    vm_id: str
    name: str
    description: str | None
    type: str
    state: str
    quiesce_requested: bool
    quiesced: bool
    consistency: str
    strategy: str
    error: str | None
    volumes: tuple[VolumeInSnapshot, ...]
    parent_id: str | None
    current: bool
    hypervisor: str
    created: str
    updated: str
    #: How long the guest stayed frozen: the freeze's answer to the thaw's (None: never).
    frozen_ms: float | None = None
    #: The hooks run around the freeze, in order (issue 19).
    hooks: tuple[HookView, ...] = attrs.field(default=(), converter=_hook_views)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


@attrs.frozen
class VolumeSnapshotView:
    id: str
    volume_id: str
    pool_id: str
    vm_id: str
    state: str
    quiesce_requested: bool
    quiesced: bool
    error: str | None
    created: str
    #: How long the guest stayed frozen: the freeze's answer to the thaw's (None: never).
    frozen_ms: float | None = None
    hooks: tuple[HookView, ...] = attrs.field(default=(), converter=_hook_views)
    #: filesystem | crash | application (issue 19: shown for volume snapshots too).
    consistency: str = "crash"

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


@attrs.frozen
class PoolView:
    id: str
    name: str
    driver: str
    caps: dict[str, bool]

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


@attrs.frozen
class VolumeView:
    id: str
    vm_id: str
    pool_id: str
    type: str
    quiescevm: bool
    supportsstoragesnapshot: bool

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


@attrs.frozen
class VmView:
    """
    A VM as the log knows it: the operation in flight, and whether it is believed frozen.
    """

    id: str
    hypervisor: str
    power_state: str
    in_flight: str | None
    operation: str | None
    current: str | None
    frozen: bool
    frozen_by: str | None
    frozen_since: str | None
    alert: str | None
    in_flight_since: str | None = None  # when the operation in flight was claimed

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


@attrs.frozen
class EventView:
    """
    One stored event, as ``audit timeline`` and ``audit export`` show it.
    """

    position: int
    originator_id: str
    version: int
    type: str
    timestamp: str
    data: dict[str, Any]
    #: The decoded domain event, for readers in this process (not part of the JSON form).
    event: object = attrs.field(default=None, eq=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        # data is JSON-safe already (projections.events.event_data): no second walk.
        return {
            "position": self.position,
            "originator_id": self.originator_id,
            "version": self.version,
            "type": self.type,
            "timestamp": self.timestamp,
            "data": self.data,
        }


@attrs.frozen
class VerifyReport:
    """
    What ``audit verify`` found; ``chain_head`` is the last seal (position, hex hash):
    keep it elsewhere to prove later that the log was not rewritten up to there.
    """

    ok: bool
    events: int
    problems: tuple[str, ...]
    chain_head: tuple[int, str] | None = None
    #: The events past the last seal, not sealed yet: (count, first, last position).
    unsealed: tuple[int, int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        head, tail = self.chain_head, self.unsealed
        return {
            "ok": self.ok,
            "events": self.events,
            "problems": list(self.problems),
            "chain_head": None if head is None else {"position": head[0], "hash": head[1]},
            "unsealed": (
                None if tail is None else {"events": tail[0], "first": tail[1], "last": tail[2]}
            ),
        }


@attrs.frozen
class UnrecoveredVm:
    """A VM whose operation ``recover`` could not finish now, and why."""

    vm_id: str
    snapshot_id: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


@attrs.frozen
class RecoverReport:
    """What ``recover`` finished or compensated, and the VMs it could not."""

    recovered: tuple[Any, ...]  # VmSnapshotView | VolumeSnapshotView
    unrecovered: tuple[UnrecoveredVm, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "recovered": [s.to_dict() for s in self.recovered],
            "unrecovered": [u.to_dict() for u in self.unrecovered],
        }
