from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from vmsnap.adapters.default_driver import DefaultStorageDriver
from vmsnap.adapters.simulator import SimulatorHypervisor, SimulatorWorld
from vmsnap.domain.ports import Hypervisor
from vmsnap.domain.values import (
    Capabilities,
    HypervisorSnapshot,
    PoolInfo,
    QuiesceResult,
    SnapshotRef,
    VmInfo,
    VolumeInfo,
)

PRIMARY = PoolInfo("primary-1", "Primary NFS", "default")
ROOT = VolumeInfo("vol-1", "vm-1", "primary-1", "ROOT")
DATA = VolumeInfo("vol-4", "vm-1", "primary-1")
VM = VmInfo("vm-1", "hv-1", "Running", ())
SNAP = SnapshotRef("s1", "vm-1", "vmsnap-s1", quiesce=True)


class FakeHypervisor(Hypervisor):
    def __init__(self) -> None:
        self.name = "hv-1"
        self.profile = "vmware"
        self.calls: list[tuple[str, ...]] = []

    def check_vm(self, vm: VmInfo) -> None:
        self.calls.append(("check_vm", vm.id))

    def quiesce(self, vm: VmInfo, snapshot: SnapshotRef, *, memory: bool) -> QuiesceResult:
        self.calls.append(("quiesce", vm.id))
        return QuiesceResult(frozen=False, quiesced=True)

    def unquiesce(
        self, vm: VmInfo, snapshot: SnapshotRef, *, thaw: bool, release: str | None
    ) -> str:
        self.calls.append(("unquiesce", vm.id))
        return ""

    def take_vm_snapshot(
        self, vm: VmInfo, snapshot: SnapshotRef, *, memory: bool
    ) -> HypervisorSnapshot:
        self.calls.append(("take_vm_snapshot", vm.id))
        return HypervisorSnapshot(snapshot.name, quiesced=True)

    def revert_vm_snapshot(self, vm: VmInfo, name: str) -> None:
        self.calls.append(("revert_vm_snapshot", vm.id, name))

    def delete_vm_snapshot(self, vm: VmInfo, name: str) -> None:
        self.calls.append(("delete_vm_snapshot", vm.id, name))

    def take_volume_snapshot(self, vm: VmInfo, volume: VolumeInfo, name: str) -> str:
        self.calls.append(("take_volume_snapshot", vm.id, volume.id, name))
        return f"hv-ref-{name}"

    def delete_volume_snapshot(self, vm: VmInfo, volume: VolumeInfo, name: str) -> None:
        self.calls.append(("delete_volume_snapshot", vm.id, volume.id, name))


def driver_with(hv: Hypervisor) -> DefaultStorageDriver:
    return DefaultStorageDriver(PRIMARY, lambda volume: (hv, VM))


def test_the_default_driver_advertises_no_capability() -> None:
    driver = driver_with(FakeHypervisor())

    assert driver.capabilities() == Capabilities(
        volume_snapshot_quiescevm=False, storage_system_snapshot=False
    )
    assert (driver.driver, driver.pool) == ("default", PRIMARY)


VOLUME_LISTS = st.lists(st.sampled_from([ROOT, DATA]), max_size=2, unique=True)
SNAPSHOTS = st.builds(SnapshotRef, st.just("s1"), st.just("vm-1"), st.text(), st.booleans())


@given(volumes=VOLUME_LISTS, snapshot=SNAPSHOTS)
def test_a_vm_snapshot_answers_false_without_calling_the_hypervisor(
    volumes: list[VolumeInfo], snapshot: SnapshotRef
) -> None:
    hv = FakeHypervisor()

    assert driver_with(hv).take_vm_snapshot(volumes, snapshot) is False
    assert hv.calls == []


@given(volumes=VOLUME_LISTS, snapshot=SNAPSHOTS)
def test_reverting_and_deleting_a_vm_snapshot_are_left_to_the_hypervisor_strategy(
    volumes: list[VolumeInfo], snapshot: SnapshotRef
) -> None:
    hv = FakeHypervisor()
    driver = driver_with(hv)

    assert driver.revert_vm_snapshot(volumes, snapshot) is True
    assert driver.delete_vm_snapshot(volumes, snapshot) is True
    assert hv.calls == []


def test_a_volume_snapshot_is_taken_by_the_hypervisor_of_the_volumes_vm() -> None:
    hv = FakeHypervisor()
    asked: list[VolumeInfo] = []

    def hypervisor_for(volume: VolumeInfo) -> tuple[Hypervisor, VmInfo]:
        asked.append(volume)
        return hv, VM

    ref = DefaultStorageDriver(PRIMARY, hypervisor_for).take_snapshot(DATA, "snap-1")

    assert ref == "hv-ref-snap-1"
    assert asked == [DATA]
    assert hv.calls == [("take_volume_snapshot", "vm-1", "vol-4", "snap-1")]


def test_a_volume_snapshot_is_deleted_by_the_hypervisor() -> None:
    hv = FakeHypervisor()

    driver_with(hv).delete_snapshot(DATA, "snap-1")

    assert hv.calls == [("delete_volume_snapshot", "vm-1", "vol-4", "snap-1")]


def test_volume_snapshots_land_in_the_simulated_world_through_the_simulated_hypervisor(
    tmp_path: Path,
) -> None:
    world = SimulatorWorld(tmp_path / "sim-state.json")
    driver = driver_with(SimulatorHypervisor("hv-1", "kvm", world))

    assert driver.take_vm_snapshot([ROOT], SNAP) is False
    driver.take_snapshot(ROOT, "snap-1")
    driver.take_snapshot(ROOT, "snap-2")
    driver.delete_snapshot(ROOT, "snap-1")

    assert world.volume_snapshots("vol-1") == ["snap-2"]
    assert [(c["op"], c["target"], c["volumes"]) for c in world.calls()] == [
        ("take_volume_snapshot", "hv-1", ["vol-1"]),
        ("take_volume_snapshot", "hv-1", ["vol-1"]),
        ("delete_volume_snapshot", "hv-1", ["vol-1"]),
    ]
