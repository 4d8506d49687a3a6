"""vmsnap's views in CloudStack's response shapes: lower-case keys, CloudStack states."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import uuid5

from vmsnap.domain.vm import NAMESPACE
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
from vmsnap.views import PoolView, VmSnapshotView, VmView, VolumeSnapshotView, VolumeView

#: vmsnap has one zone and one domain; their ids are fixed.
ZONE_ID = str(uuid5(NAMESPACE, "zone:vmsnap"))
ZONE_NAME = "vmsnap"
DOMAIN_ID = str(uuid5(NAMESPACE, "domain:ROOT"))
DOMAIN_NAME = "ROOT"
#: CloudStack's CSExceptionErrorCode of each answer's error code (``cserrorcode``).
CS_ERROR_CODES = {401: 9999, 431: 4350, 432: 9999, 413: 9999, 530: 4250, 503: 9999}
CS_CONCURRENT = 4300  # ConcurrentOperationException

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
    "listvirtualmachines": "virtualmachine",
    "listzones": "zone",
    "listasyncjobs": "asyncjobs",
    "listapis": "api",
}


def owned(account: str | None) -> dict[str, Any]:
    """The account and domain fields of a resource of ``account``."""
    return {"account": account or "admin", "domainid": DOMAIN_ID, "domain": DOMAIN_NAME}


def listed(command: str, count: int, items: list[dict[str, Any]]) -> dict[str, Any]:
    """A list answer; an empty list is ``{}``, as CloudStack answers it."""
    if count == 0:
        return {}
    return {"count": count, LIST_KEYS[command]: items}


def cloudstack_date(iso: str) -> str:
    """
    An ISO timestamp in CloudStack's form, ``2026-11-26T00:49:38+0000``.
    """
    return datetime.fromisoformat(iso).strftime("%Y-%m-%dT%H:%M:%S%z")


def vm_snapshot(
    view: VmSnapshotView, account: str | None, hypervisor: str, parent_name: str | None
) -> dict[str, Any]:
    return {
        **owned(account),
        "id": view.id,
        "name": view.name,
        "displayname": view.name,
        "description": view.description,
        "state": VM_SNAPSHOT_STATES[view.state],
        "type": view.type,
        "current": view.current,
        "parent": view.parent_id,
        "parentName": parent_name,
        "virtualmachineid": view.vm_id,
        "virtualmachinename": view.vm_id,
        "hypervisor": hypervisor,
        "hypervisorhost": view.hypervisor,
        "zoneid": ZONE_ID,
        "created": cloudstack_date(view.created),
        "quiescevm": view.quiesce_requested,
        # vmsnap's own fields: what the quiesce really gave, and why a create failed.
        "quiesced": view.quiesced,
        "consistency": view.consistency,
        "strategy": view.strategy,
        "errortext": view.error,
        "volumes": [{"volumeid": v.volume_id, "storageid": v.pool_id} for v in view.volumes],
    }


def volume_snapshot(view: VolumeSnapshotView, account: str | None) -> dict[str, Any]:
    stamp = datetime.fromisoformat(view.created).strftime("%Y%m%d%H%M%S")
    return {
        **owned(account),
        "id": view.id,
        "name": f"{view.vm_id}_{view.volume_id}_{stamp}",
        "volumeid": view.volume_id,
        "volumename": view.volume_id,
        "virtualmachineid": view.vm_id,
        "storageid": view.pool_id,
        "zoneid": ZONE_ID,
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
        # CloudStack 4.16+ spells the same map storagecapabilities.
        "storagecapabilities": {k: "true" if v else "false" for k, v in view.caps.items()},
        "zoneid": ZONE_ID,
        "zonename": ZONE_NAME,
    }


def volume(view: VolumeView, account: str | None, deviceid: int) -> dict[str, Any]:
    return {
        **owned(account),
        "id": view.id,
        "name": view.id,
        "type": view.type,
        "state": "Ready",
        "deviceid": deviceid,
        "size": 0,  # vmsnap's inventory holds no sizes
        "zoneid": ZONE_ID,
        "virtualmachineid": view.vm_id,
        "vmname": view.vm_id,
        "storageid": view.pool_id,
        "quiescevm": view.quiescevm,
        "supportsstoragesnapshot": view.supportsstoragesnapshot,
    }


def virtual_machine(view: VmView, account: str | None, hypervisor: str) -> dict[str, Any]:
    return {
        **owned(account),
        "id": view.id,
        "name": view.id,
        "displayname": view.id,
        "state": view.power_state,
        "hypervisor": hypervisor,
        "hostname": view.hypervisor,
        "zoneid": ZONE_ID,
        "zonename": ZONE_NAME,
    }


def zone() -> dict[str, Any]:
    return {
        "id": ZONE_ID,
        "name": ZONE_NAME,
        "networktype": "Advanced",
        "allocationstate": "Enabled",
        "localstorageenabled": False,
        "securitygroupsenabled": False,
    }


def error(command: str | None, code: int, text: str, cs_code: int | None = None) -> dict[str, Any]:
    """
    CloudStack's error body: ``{"<command>response": {"errorcode", "cserrorcode",
    "errortext", ...}}``.
    """
    name = f"{command}response" if command else "errorresponse"
    cs = cs_code if cs_code is not None else CS_ERROR_CODES.get(code, 9999)
    return {name: {"uuidList": [], "errorcode": code, "cserrorcode": cs, "errortext": text}}
