"""vmsnap's views in CloudStack's response shapes: lower-case keys, CloudStack states."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from vmsnap.domain.workflow import (
    ALLOCATED,
    EXPUNGING,
    FAILED,
    QUIESCING,
    READY,
    REMOVED,
    REVERTING,
    SNAPSHOTTING,
    UNQUIESCING,
)
from vmsnap.views import PoolView, VmSnapshotView, VolumeSnapshotView, VolumeView

#: vmsnap state -> CloudStack's VMSnapshot.State.
VM_SNAPSHOT_STATES = {
    ALLOCATED: "Creating",
    QUIESCING: "Creating",
    SNAPSHOTTING: "Creating",
    UNQUIESCING: "Creating",
    READY: "Ready",
    REVERTING: "Reverting",
    EXPUNGING: "Expunging",
    REMOVED: "Removed",
    FAILED: "Error",
}
#: vmsnap state -> CloudStack's Snapshot.State (volume snapshots).
VOLUME_SNAPSHOT_STATES = {
    ALLOCATED: "Creating",
    QUIESCING: "Creating",
    SNAPSHOTTING: "Creating",
    UNQUIESCING: "Creating",
    READY: "BackedUp",
    EXPUNGING: "Destroying",
    REMOVED: "Destroyed",
    FAILED: "Error",
}
#: The list key of each list command's response (CloudStack's own spelling).
LIST_KEYS = {
    "listvmsnapshot": "vmSnapshot",
    "listsnapshots": "snapshot",
    "liststoragepools": "storagepool",
    "listvolumes": "volume",
}


def cloudstack_date(iso: str) -> str:
    """
    An ISO timestamp in CloudStack's form, ``2026-11-26T00:49:38+0000``.
    """
    return datetime.fromisoformat(iso).strftime("%Y-%m-%dT%H:%M:%S%z")


def vm_snapshot(view: VmSnapshotView) -> dict[str, Any]:
    return {
        "id": view.id,
        "name": view.name,
        "displayname": view.name,
        "description": view.description,
        "state": VM_SNAPSHOT_STATES[view.state],
        "type": view.type,
        "current": view.current,
        "parent": view.parent_id,
        "virtualmachineid": view.vm_id,
        "virtualmachinename": view.vm_id,
        "hypervisor": view.hypervisor,
        "created": cloudstack_date(view.created),
        "quiescevm": view.quiesce_requested,
        # vmsnap's own fields: what the quiesce really gave, and why a create failed.
        "quiesced": view.quiesced,
        "consistency": view.consistency,
        "strategy": view.strategy,
        "errortext": view.error,
        "volumes": [{"volumeid": v.volume_id, "storageid": v.pool_id} for v in view.volumes],
    }


def volume_snapshot(view: VolumeSnapshotView) -> dict[str, Any]:
    return {
        "id": view.id,
        "volumeid": view.volume_id,
        "volumename": view.volume_id,
        "virtualmachineid": view.vm_id,
        "storageid": view.pool_id,
        "snapshottype": "MANUAL",
        "intervaltype": "MANUAL",
        "state": VOLUME_SNAPSHOT_STATES[view.state],
        "created": cloudstack_date(view.created),
        "quiescevm": view.quiesce_requested,
        "quiesced": view.quiesced,
        "errortext": view.error,
    }


def storage_pool(view: PoolView) -> dict[str, Any]:
    return {
        "id": view.id,
        "name": view.name,
        "type": view.driver,
        "provider": view.driver,
        "state": "Up",
        # CloudStack's caps is a map of strings: "VOLUME_SNAPSHOT_QUIESCEVM": "true".
        "caps": {k: "true" if v else "false" for k, v in view.caps.items()},
    }


def volume(view: VolumeView) -> dict[str, Any]:
    return {
        "id": view.id,
        "name": view.id,
        "type": view.type,
        "state": "Ready",
        "virtualmachineid": view.vm_id,
        "storageid": view.pool_id,
        "quiescevm": view.quiescevm,
        "supportsstoragesnapshot": view.supportsstoragesnapshot,
    }


def error(command: str | None, code: int, text: str) -> dict[str, Any]:
    """
    CloudStack's error body: ``{"<command>response": {"errorcode", "errortext", ...}}``.
    """
    name = f"{command}response" if command else "errorresponse"
    return {name: {"uuidList": [], "errorcode": code, "errortext": text}}
