"""
vmsnap: VM snapshots with quiesce across hypervisors and storage drivers, as an
event-sourced workflow.

    from vmsnap import Controller
    with Controller.from_config("vmsnap.toml") as vmsnap:
        snap = vmsnap.create_vm_snapshot("vm-1", quiesce=True)
"""

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
