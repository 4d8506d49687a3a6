"""
vmsnap: VM snapshots with quiesce across hypervisors and storage drivers, as an
event-sourced workflow.

    from vmsnap import Controller
    with Controller.from_config("vmsnap.toml") as vmsnap:
        snap = vmsnap.create_vm_snapshot("vm-1", quiesce=True)
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmsnap.controller import Controller
    from vmsnap.domain.exceptions import (
        ConfigError,
        DriverError,
        IllegalTransition,
        InvalidRequest,
        NotFound,
        OperationInProgress,
        StoreError,
        VmsnapError,
    )
    from vmsnap.views import (
        EventView,
        PoolView,
        VerifyReport,
        VmSnapshotView,
        VmView,
        VolumeSnapshotView,
        VolumeView,
    )

# Exports resolved on first use (ADR 0015): `import vmsnap` (and so every CLI command,
# `--help` included) must not pay for eventsourcing and the Controller's graph.
_EXPORTS = {
    "Controller": "vmsnap.controller",
    "ConfigError": "vmsnap.domain.exceptions",
    "DriverError": "vmsnap.domain.exceptions",
    "IllegalTransition": "vmsnap.domain.exceptions",
    "InvalidRequest": "vmsnap.domain.exceptions",
    "NotFound": "vmsnap.domain.exceptions",
    "OperationInProgress": "vmsnap.domain.exceptions",
    "StoreError": "vmsnap.domain.exceptions",
    "VmsnapError": "vmsnap.domain.exceptions",
    "EventView": "vmsnap.views",
    "PoolView": "vmsnap.views",
    "VerifyReport": "vmsnap.views",
    "VmSnapshotView": "vmsnap.views",
    "VmView": "vmsnap.views",
    "VolumeSnapshotView": "vmsnap.views",
    "VolumeView": "vmsnap.views",
}

__all__ = [
    "ConfigError",
    "Controller",
    "DriverError",
    "EventView",
    "IllegalTransition",
    "InvalidRequest",
    "NotFound",
    "OperationInProgress",
    "PoolView",
    "StoreError",
    "VerifyReport",
    "VmSnapshotView",
    "VmView",
    "VmsnapError",
    "VolumeSnapshotView",
    "VolumeView",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vmsnap' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
