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
# The pre-freeze hook succeeded and the guest was then quiesced (issue 19).
APPLICATION = "application"

# Hooks (issue 19): which hook, where it runs, what a failed pre-freeze hook does.
PRE_FREEZE, POST_THAW = "pre_freeze", "post_thaw"
HOOK_NAMES = (PRE_FREEZE, POST_THAW)
GUEST, HOST = "guest", "host"
HOOK_WHERE = (GUEST, HOST)
ON_FAILURE_FAIL, ON_FAILURE_CONTINUE = "fail", "continue"
PRE_FREEZE_FAILURE_POLICIES = (ON_FAILURE_FAIL, ON_FAILURE_CONTINUE)
#: A hook's recorded output: at most the first 4 KiB of its stdout and stderr.
HOOK_OUTPUT_LIMIT = 4096
# A hook's status in the views.
HOOK_OWED, HOOK_RUNNING, HOOK_OK, HOOK_FAILED, HOOK_TIMED_OUT = (
    "owed",
    "running",
    "ok",
    "failed",
    "timed-out",
)
# A run whose end was never recorded, superseded by a rerun (an idempotent post hook).
HOOK_UNENDED = "unended"


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
class HookSpec:
    """
    One hook of a VM: the command (``run``, an argv with an absolute program path),
    ``where`` it runs ("guest": through the guest agent; "host": on the controller's
    host), its timeout, and whether running it twice is harmless (``idempotent``: a
    post-thaw hook whose end was never recorded is then run again by ``recover``).
    """

    run: tuple[str, ...] = attrs.field(converter=_str_tuple)
    where: str
    timeout_s: float = 30.0
    idempotent: bool = False


@attrs.frozen
class HookResult:
    """
    What a hook answered: its exit code (None when it was killed at its timeout), at most
    the first :data:`HOOK_OUTPUT_LIMIT` bytes of its stdout and stderr (decoded with
    errors="replace"), and whether it was killed at its timeout.
    """

    exit_code: int | None
    output: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def cap_output(data: bytes) -> str:
    """A hook's output as recorded: its first 4 KiB, decoded with errors="replace"."""
    return data[:HOOK_OUTPUT_LIMIT].decode(errors="replace")


@attrs.frozen
class VmHooks:
    """
    A VM's hooks (config ``hooks``): run around the freeze of quiesced snapshots.
    ``count_in_deadline``: the quiesce deadline includes the pre-freeze hook's time.
    """

    pre_freeze: HookSpec | None = None
    post_thaw: HookSpec | None = None
    on_pre_freeze_failure: str = ON_FAILURE_FAIL
    count_in_deadline: bool = False


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
    hooks: VmHooks | None = None


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
