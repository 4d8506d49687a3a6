"""Immutable values of the domain (frozen, slotted attrs classes)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

VOLUME_SNAPSHOT_QUIESCEVM = "VOLUME_SNAPSHOT_QUIESCEVM"
STORAGE_SYSTEM_SNAPSHOT = "STORAGE_SYSTEM_SNAPSHOT"
CAPABILITY_NAMES = (VOLUME_SNAPSHOT_QUIESCEVM, STORAGE_SYSTEM_SNAPSHOT)

MAX_TEXT = 255
RUNNING, STOPPED = "Running", "Stopped"
POWER_STATES = (RUNNING, STOPPED)

# What a snapshot's data is consistent with (the views' ``consistency``).
CRASH, FILESYSTEM = "crash", "filesystem"


def _volume_tuple(volumes: Iterable[VolumeInfo]) -> tuple[VolumeInfo, ...]:
    return tuple(volumes)


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen
class Capabilities:
    """
    What a storage pool advertises (the seed's ``caps`` map of listStoragePools).
    """

    volume_snapshot_quiescevm: bool = False
    storage_system_snapshot: bool = False

    @classmethod
    def from_dict(cls, caps: Mapping[str, Any]) -> Capabilities:
        return cls(
            volume_snapshot_quiescevm=bool(caps.get(VOLUME_SNAPSHOT_QUIESCEVM, False)),
            storage_system_snapshot=bool(caps.get(STORAGE_SYSTEM_SNAPSHOT, False)),
        )

    def to_dict(self) -> dict[str, bool]:
        return {
            VOLUME_SNAPSHOT_QUIESCEVM: self.volume_snapshot_quiescevm,
            STORAGE_SYSTEM_SNAPSHOT: self.storage_system_snapshot,
        }


@attrs.frozen
class PoolInfo:
    """
    A primary storage pool from the inventory; ``driver`` names its storage driver.
    """

    id: str
    name: str
    driver: str


@attrs.frozen
class VolumeInfo:
    """
    A volume of a VM and the pool it lives on.
    """

    id: str
    vm_id: str
    pool_id: str
    type: str = "DATADISK"


@attrs.frozen
class VmInfo:
    """
    A VM from the inventory: its hypervisor, power state and volumes.
    """

    id: str
    hypervisor: str
    power_state: str
    volumes: tuple[VolumeInfo, ...] = attrs.field(converter=_volume_tuple)
    domain: str | None = None


@attrs.frozen
class VolumeRef:
    """
    A volume as recorded in a snapshot: which pool held it at the time.
    """

    volume_id: str
    pool_id: str


@attrs.frozen
class DriverGroup:
    """
    The volumes of one VM that one pool's driver snapshots in one call (the seed's
    grouping by driver).
    """

    pool_id: str
    driver: str
    volume_ids: tuple[str, ...] = attrs.field(converter=_str_tuple)


@attrs.frozen
class QuiesceResult:
    """
    What a hypervisor did when asked to quiesce a VM.

    ``frozen``: the guest is frozen now and must be thawed whatever happens (KVM).
    ``quiesced``: the guest's filesystems were quiesced while the volumes were captured.
    ``hypervisor_snapshot``: the temporary hypervisor snapshot taken, if any.
    ``filesystems_frozen``: the guest agent's own answer to the freeze (how many
    filesystems it froze); None when no freeze was asked of it.
    ``crash_reason``: when quiesce was asked but the result is not quiesced, why (no
    agent, the agent froze nothing, the domain is not running); None otherwise.
    """

    frozen: bool
    quiesced: bool
    hypervisor_snapshot: str | None = None
    detail: str = ""
    filesystems_frozen: int | None = None
    crash_reason: str | None = None


@attrs.frozen
class HypervisorSnapshot:
    """
    A VM snapshot taken by the hypervisor itself (the hypervisor strategy).
    """

    name: str
    quiesced: bool
    memory: bool = False
    detail: str = ""


@attrs.frozen
class SnapshotRef:
    """
    What a driver is told about the vmsnap snapshot it works for. ``name`` is the
    backend snapshot name, derived from the snapshot id so that retries and
    compensations find the same backend object.
    """

    id: str
    vm_id: str
    name: str
    quiesce: bool = False


@attrs.frozen
class Origin:
    """
    Who asked for an operation (``actor``), why (``reason``) and under which request
    (``correlation_id``): recorded on the operation's first event, for the audit.
    """

    actor: str | None = None
    reason: str | None = None
    correlation_id: str | None = None

    def fields(self) -> dict[str, str | None]:
        return {"actor": self.actor, "reason": self.reason, "correlation_id": self.correlation_id}


NO_ORIGIN = Origin()


def backend_name(snapshot_id: str) -> str:
    """
    Return the name a backend snapshot gets for the vmsnap snapshot ``snapshot_id``.
    """
    return f"vmsnap-{snapshot_id}"


def temporary_name(snapshot_name: str) -> str:
    """
    Return the name of the temporary hypervisor snapshot that quiesce takes for the backend
    snapshot ``snapshot_name``: fixed, so that recovery can release one whose quiesce
    answer was never recorded.
    """
    return f"{snapshot_name}-quiesce"


# What a backend may hold that vmsnap owes a cleanup for (``Vm.OrphanOwed.kind``).
OWED_THAW = "thaw"  # the guest may be frozen
OWED_RELEASE = "release"  # a temporary hypervisor snapshot (quiesce)
OWED_HYPERVISOR_SNAPSHOT = "hypervisor-snapshot"
OWED_DRIVER_SNAPSHOT = "driver-vm-snapshot"  # a driver's snapshot of some of the VM's volumes
OWED_VOLUME_SNAPSHOT = "volume-snapshot"


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen
class Owed:
    """
    One object a backend may hold with nothing else recording it (a call sent with no
    recorded answer, or a cleanup that failed): ``kind`` above, ``target`` the hypervisor
    name or pool id, ``name`` the backend object, ``volume_ids`` the volumes it is on.
    """

    kind: str
    target: str
    name: str
    snapshot_id: str
    volume_ids: tuple[str, ...] = attrs.field(default=(), converter=_strings)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.target}:{self.name}:{','.join(self.volume_ids)}"


ATTRS_VALUES: tuple[type, ...] = (
    Capabilities,
    VolumeInfo,
    VolumeRef,
    DriverGroup,
    QuiesceResult,
    HypervisorSnapshot,
    Owed,
)
