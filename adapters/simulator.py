"""
The simulator hypervisor and storage (like CloudStack's simulator), acting on a simulated
world (``simulator_world``) that several processes, threads and tests share.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from vmsnap.adapters.simulator_tables import (
    add_name,
    add_volume,
    freeze,
    has_name,
    is_frozen,
    remove_name,
)
from vmsnap.adapters.simulator_world import Refused, SimulatorWorld
from vmsnap.domain.exceptions import ConfigError
from vmsnap.domain.ports import Hypervisor, StorageDriver
from vmsnap.domain.values import (
    Capabilities,
    HookResult,
    HypervisorSnapshot,
    PoolInfo,
    QuiesceResult,
    SnapshotRef,
    VmInfo,
    VolumeInfo,
    cap_output,
    temporary_name,
)

__all__ = ["PROFILES", "SimulatorHypervisor", "SimulatorStorage", "SimulatorWorld"]

PROFILES = ("vmware", "xenserver", "kvm")

_R = TypeVar("_R")


class SimulatorHypervisor(Hypervisor):
    """
    A simulated hypervisor that behaves as its ``profile`` says.

    ``vmware`` honours guest quiesce; ``xenserver`` ignores the quiesce option (its
    snapshots are crash-consistent, and the results say so); ``kvm`` quiesces by freezing
    the guest's filesystems, which must then be thawed.

    Args:
        name: the hypervisor's name (the ``target`` of its logged calls).
        profile: vmware | xenserver | kvm.
        world: the simulated world it acts on.
        faults: operation -> "fail", to make that operation fail.
        delay_s: operation -> seconds to sleep at the start of that operation.

    Raises:
        ConfigError: the profile is unknown.
    """

    def __init__(
        self,
        name: str,
        profile: str,
        world: SimulatorWorld,
        faults: Mapping[str, str] | None = None,
        delay_s: Mapping[str, float] | None = None,
    ) -> None:
        if profile not in PROFILES:
            raise ConfigError(
                f"hypervisor {name!r}: profile must be one of {', '.join(PROFILES)}"
                f" (got {profile!r})"
            )
        self.name = name
        self.profile = profile
        self.world = world
        self.faults = dict(faults or {})
        self.delay_s = dict(delay_s or {})

    def __repr__(self) -> str:
        return f"SimulatorHypervisor({self.name!r}, {self.profile!r}, {self.world!r})"

    def check_vm(self, vm: VmInfo) -> None:
        # The simulator knows every configured VM: the first sight registers it.
        self.world.register_vm(vm.id)

    def quiesce(self, vm: VmInfo, snapshot: SnapshotRef, *, memory: bool) -> QuiesceResult:
        temp = temporary_name(snapshot.name)

        def apply(conn: sqlite3.Connection) -> QuiesceResult:
            if is_frozen(conn, vm.id):
                raise Refused(f"vm {vm.id} is already frozen", "ALREADY_FROZEN")
            add_name(conn, "hv_snapshots", "vm_id", vm.id, temp)
            if self.profile == "kvm" and snapshot.quiesce:
                freeze(conn, vm.id)
                return QuiesceResult(
                    True, True, temp, f"KVM: guest filesystems frozen; snapshot {temp} taken"
                )
            return QuiesceResult(False, self._honours(snapshot), temp, self._detail(temp, snapshot))

        return self._call("quiesce", vm, apply, _quiesce_record)

    def unquiesce(
        self, vm: VmInfo, snapshot: SnapshotRef, *, thaw: bool, release: str | None
    ) -> str:
        def apply(conn: sqlite3.Connection) -> str:
            done = []
            if thaw:
                if is_frozen(conn, vm.id):
                    conn.execute(
                        "UPDATE vms SET frozen = 0, thaw_count = thaw_count + 1 WHERE vm_id = ?",
                        (vm.id,),
                    )
                    done.append("guest thawed")
                else:
                    done.append("guest was not frozen")
            if release is not None:
                gone = remove_name(conn, "hv_snapshots", "vm_id", vm.id, release)
                done.append(f"snapshot {release} " + ("released" if gone else "already gone"))
            return "; ".join(done) or "nothing to do"

        return self._call("unquiesce", vm, apply)

    def guest_exec(self, vm: VmInfo, argv: Sequence[str], *, timeout_s: float) -> HookResult:
        """
        Simulate a command in the guest: ``/bin/false`` exits 1, ``/bin/echo`` prints its
        arguments, ``/bin/sleep S`` runs S seconds, ``/bin/exit N`` exits N, anything else
        exits 0. A run longer than ``timeout_s`` (``/bin/sleep``, or the ``guest_exec``
        delay) is killed at the timeout. Each run is a logged call (``simulator show``),
        its argv in the result, so tests can count what ran.
        """
        program, args = argv[0].rsplit("/", 1)[-1], list(argv[1:])
        took = self.delay_s.get("guest_exec", 0.0)
        if program == "sleep" and args:
            took += float(args[0])  # simulated time: nothing sleeps for it
        killed = took > timeout_s
        delays = {**self.delay_s, "guest_exec": min(self.delay_s.get("guest_exec", 0.0), timeout_s)}

        def apply(conn: sqlite3.Connection) -> HookResult:
            if killed:
                return HookResult(None, "", timed_out=True)
            if program == "echo":
                return HookResult(0, cap_output((" ".join(args) + "\n").encode()))
            if program == "exit":
                return HookResult(int(args[0]) if args else 0, "")
            return HookResult(1 if program == "false" else 0, "")

        def record(result: HookResult) -> dict[str, Any]:
            return {"argv": list(argv), **attrs.asdict(result)}

        return self.world._call(
            "guest_exec", self.name, vm.id, (), self.faults, delays, apply, record
        )

    def take_vm_snapshot(
        self, vm: VmInfo, snapshot: SnapshotRef, *, memory: bool
    ) -> HypervisorSnapshot:
        def apply(conn: sqlite3.Connection) -> HypervisorSnapshot:
            freezes = self.profile == "kvm" and snapshot.quiesce
            if freezes and is_frozen(conn, vm.id):
                raise Refused(f"vm {vm.id} is already frozen", "ALREADY_FROZEN")
            add_name(conn, "hv_snapshots", "vm_id", vm.id, snapshot.name)
            if freezes:
                # The guest agent freezes and thaws around the snapshot, inside this call.
                freeze(conn, vm.id)
                conn.execute(
                    "UPDATE vms SET frozen = 0, thaw_count = thaw_count + 1 WHERE vm_id = ?",
                    (vm.id,),
                )
                detail = f"KVM: guest frozen and thawed around snapshot {snapshot.name}"
            else:
                detail = self._detail(snapshot.name, snapshot)
            return HypervisorSnapshot(snapshot.name, self._honours(snapshot), memory, detail)

        return self._call("take_vm_snapshot", vm, apply, attrs.asdict)

    def revert_vm_snapshot(self, vm: VmInfo, name: str) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            if not has_name(conn, "hv_snapshots", "vm_id", vm.id, name):
                raise Refused(f"vm {vm.id} has no hypervisor snapshot {name}", "NOT_FOUND")

        self._call("revert_vm_snapshot", vm, apply)

    def delete_vm_snapshot(self, vm: VmInfo, name: str) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            remove_name(conn, "hv_snapshots", "vm_id", vm.id, name)

        self._call("delete_vm_snapshot", vm, apply)

    def held_snapshots(self, vm: VmInfo) -> list[str] | None:
        return self.world.hypervisor_snapshots(vm.id)

    def held_volume_snapshots(self, vm: VmInfo, volume: VolumeInfo) -> list[str] | None:
        return self.world.volume_snapshots(volume.id)

    def take_volume_snapshot(self, vm: VmInfo, volume: VolumeInfo, name: str) -> str:
        def apply(conn: sqlite3.Connection) -> str:
            add_volume(conn, volume)
            add_name(conn, "vol_snapshots", "volume_id", volume.id, name)
            return name

        return self._call("take_volume_snapshot", vm, apply, volumes=[volume.id])

    def delete_volume_snapshot(self, vm: VmInfo, volume: VolumeInfo, name: str) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            remove_name(conn, "vol_snapshots", "volume_id", volume.id, name)

        self._call("delete_volume_snapshot", vm, apply, volumes=[volume.id])

    def _honours(self, snapshot: SnapshotRef) -> bool:
        return snapshot.quiesce and self.profile != "xenserver"

    def _detail(self, name: str, snapshot: SnapshotRef) -> str:
        if not snapshot.quiesce:
            return f"{self.profile}: snapshot {name} taken without quiesce (crash-consistent)"
        if self.profile == "xenserver":
            return f"XenServer ignores the quiesce option: snapshot {name} is crash-consistent"
        return f"VMware: snapshot {name} taken with guest quiesce; base disks are stable"

    def _call(
        self,
        op: str,
        vm: VmInfo,
        apply: Callable[[sqlite3.Connection], _R],
        encode: Callable[[_R], Any] | None = None,
        volumes: Sequence[str] = (),
    ) -> _R:
        def apply_to_vm(conn: sqlite3.Connection) -> _R:
            conn.execute("INSERT OR IGNORE INTO vms (vm_id) VALUES (?)", (vm.id,))
            return apply(conn)

        return self.world._call(
            op, self.name, vm.id, volumes, self.faults, self.delay_s, apply_to_vm, encode
        )


class SimulatorStorage(StorageDriver):
    """
    A simulated vendor storage pool with configurable capabilities and answers.

    Args:
        pool: the pool it serves (its id is the ``target`` of its logged calls).
        world: the simulated world it acts on.
        capabilities: what the pool advertises.
        need_unquiesce: what :meth:`take_vm_snapshot` answers (True: it captured its
            volumes itself, so the VM's temporary hypervisor snapshot may be released).
        faults: operation -> "fail", to make that operation fail.
        delay_s: operation -> seconds to sleep at the start of that operation.
    """

    driver = "simulator"

    def __init__(
        self,
        pool: PoolInfo,
        world: SimulatorWorld,
        capabilities: Capabilities,
        need_unquiesce: bool = True,
        faults: Mapping[str, str] | None = None,
        delay_s: Mapping[str, float] | None = None,
    ) -> None:
        self.pool = pool
        self.world = world
        self._capabilities = capabilities
        self.need_unquiesce = need_unquiesce
        self.faults = dict(faults or {})
        self.delay_s = dict(delay_s or {})

    def __repr__(self) -> str:
        return f"SimulatorStorage({self.pool.id!r}, {self.world!r})"

    def capabilities(self) -> Capabilities:
        return self._capabilities

    def take_vm_snapshot(self, volumes: Sequence[VolumeInfo], snapshot: SnapshotRef) -> bool:
        def apply(conn: sqlite3.Connection) -> bool:
            for vol in volumes:
                add_volume(conn, vol)
                add_name(conn, "vol_snapshots", "volume_id", vol.id, snapshot.name)
            return self.need_unquiesce

        return self._call("take_vm_snapshot", snapshot.vm_id, volumes, apply)

    def revert_vm_snapshot(self, volumes: Sequence[VolumeInfo], snapshot: SnapshotRef) -> bool:
        def apply(conn: sqlite3.Connection) -> bool:
            for vol in volumes:
                if not has_name(conn, "vol_snapshots", "volume_id", vol.id, snapshot.name):
                    raise Refused(
                        f"volume {vol.id} has no snapshot {snapshot.name} on pool {self.pool.id}",
                        "NOT_FOUND",
                    )
            return True

        return self._call("revert_vm_snapshot", snapshot.vm_id, volumes, apply)

    def delete_vm_snapshot(self, volumes: Sequence[VolumeInfo], snapshot: SnapshotRef) -> bool:
        def apply(conn: sqlite3.Connection) -> bool:
            for vol in volumes:
                remove_name(conn, "vol_snapshots", "volume_id", vol.id, snapshot.name)
            return True

        return self._call("delete_vm_snapshot", snapshot.vm_id, volumes, apply)

    def held_snapshots(self, volume: VolumeInfo) -> list[str] | None:
        return self.world.volume_snapshots(volume.id)

    def take_snapshot(self, volume: VolumeInfo, name: str) -> str:
        def apply(conn: sqlite3.Connection) -> str:
            add_volume(conn, volume)
            add_name(conn, "vol_snapshots", "volume_id", volume.id, name)
            return name

        return self._call("take_snapshot", volume.vm_id, [volume], apply)

    def delete_snapshot(self, volume: VolumeInfo, name: str) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            remove_name(conn, "vol_snapshots", "volume_id", volume.id, name)

        self._call("delete_snapshot", volume.vm_id, [volume], apply)

    def _call(
        self,
        op: str,
        vm_id: str,
        volumes: Sequence[VolumeInfo],
        apply: Callable[[sqlite3.Connection], _R],
    ) -> _R:
        ids = [v.id for v in volumes]
        return self.world._call(op, self.pool.id, vm_id, ids, self.faults, self.delay_s, apply)


def _quiesce_record(result: QuiesceResult) -> dict[str, Any]:
    # The guest-agent fields (ADR 0016) are never set here: keep the call log's shape.
    return attrs.asdict(
        result,
        filter=lambda field, value: (
            value is not None or field.name not in ("filesystems_frozen", "crash_reason")
        ),
    )
