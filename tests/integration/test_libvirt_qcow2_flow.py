"""
The whole story through the real Controller, on real adapters: a libvirt test-driver
domain whose disks are real qcow2 files on two qcow2 pools (and, in a variant, a volume on
a ``default`` pool). What vmsnap records is checked against ``qemu-img snapshot -l``,
libvirt's own snapshot list and the guest's freeze state; reverts are checked on real data
with ``qemu-io``.

The test driver keeps its state in the connection (each ``libvirt.open`` of the node file
starts afresh), so every test runs its whole story in one Controller and looks at libvirt
through that Controller's own connection.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.support import NOT_INSTALLED, Config, write_config

pytest.importorskip("libvirt", reason=NOT_INSTALLED["libvirt"])

from tests.integration.libvirt_fixtures import domain_xml, write_node
from vmsnap import Controller, InvalidRequest
from vmsnap.adapters.libvirt_hypervisor import LibvirtHypervisor
from vmsnap.adapters.qcow2_driver import create_volume

HYPERVISOR = "kvm-test"
DOMAIN = "guest-1"
VM = "vm-1"
POOL_A = "qcow2-a"
POOL_B = "qcow2-b"
PRIMARY = "primary"
#: volume id -> (pool id, pool folder, target dev); groups are sorted by pool id, so
#: qcow2-a is snapshotted before qcow2-b.
QCOW2_VOLUMES = {
    "root": (POOL_A, "pool-a", "vda"),
    "logs": (POOL_A, "pool-a", "vdb"),
    "data": (POOL_B, "pool-b", "vdc"),
}
DEFAULT_VOLUME = ("scratch", PRIMARY, "primary", "vdd")
DRIVERS = {POOL_A: "qcow2", POOL_B: "qcow2", PRIMARY: "default"}


@attrs.frozen
class World:
    """A config file, the node file it points at, and the volumes' files."""

    config: Path
    uri: str
    files: dict[str, Path]
    pools: dict[str, tuple[str, ...]]

    def qcow2_files(self) -> list[Path]:
        return [self.files[v] for v in QCOW2_VOLUMES]


def write_world(folder: Path, *, default_pool: bool = False, domain: str = DOMAIN) -> World:
    """
    Create the qcow2 volumes, a node file whose domain ``DOMAIN`` uses them as its disks,
    and a config naming that domain as ``domain`` (another name: a VM the host lacks).
    """
    volumes = dict(QCOW2_VOLUMES)
    if default_pool:
        vol, pool, sub, dev = DEFAULT_VOLUME
        volumes[vol] = (pool, sub, dev)
    files = {v: create_volume(folder / sub, v) for v, (_, sub, _) in volumes.items()}
    uri = write_node(
        folder / "node.xml",
        [domain_xml(DOMAIN, {dev: files[v] for v, (_, _, dev) in volumes.items()})],
    )
    pool_tables = [
        {"id": POOL_A, "name": "Local qcow2 A", "driver": "qcow2", "path": "pool-a"},
        {"id": POOL_B, "name": "Local qcow2 B", "driver": "qcow2", "path": "pool-b"},
        {"id": PRIMARY, "name": "Primary", "driver": "default"},
    ]
    vm_volumes = [
        {"id": v, "pool": pool, "type": "ROOT" if dev == "vda" else "DATADISK"}
        for v, (pool, _, dev) in volumes.items()
    ]
    vm = {
        "id": VM,
        "hypervisor": HYPERVISOR,
        "power_state": "Running",
        "domain": domain,
        "volumes": vm_volumes,
    }
    config = write_config(
        folder,
        Config(
            hypervisors=[{"name": HYPERVISOR, "type": "libvirt", "uri": uri}],
            pools=pool_tables,
            vms=[vm],
        ),
    )
    pools: dict[str, list[str]] = {}
    for v, (pool, _, _) in volumes.items():
        pools.setdefault(pool, []).append(v)
    return World(config, uri, files, {p: tuple(sorted(vs)) for p, vs in pools.items()})


@pytest.fixture
def world(tmp_path: Path) -> World:
    return write_world(tmp_path)


@pytest.fixture
def ctrl(world: World) -> Iterator[Controller]:
    with Controller.from_config(world.config) as controller:
        yield controller


# What really exists ---------------------------------------------------------------


def qemu_img_snapshots(file: Path) -> list[str]:
    out = subprocess.run(
        ["qemu-img", "snapshot", "-l", str(file)], capture_output=True, text=True, check=True
    ).stdout
    # "ID  TAG  VM SIZE  DATE ..." rows after two header lines; TAG is the second column.
    return [line.split()[1] for line in out.splitlines()[2:] if line.strip()]


def write_pattern(file: Path, pattern: int) -> None:
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern:#x} 0 4k", str(file)],
        capture_output=True,
        check=True,
    )


def holds_pattern(file: Path, pattern: int) -> bool:
    done = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"read -P {pattern:#x} 0 4k", str(file)],
        capture_output=True,
        text=True,
    )
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout


@contextmanager
def held_open_by_another_process(file: Path) -> Iterator[None]:
    # qemu-io opens the image read-write, taking QEMU's image locks as a running QEMU
    # does; it has opened it once it answers a read.
    holder = subprocess.Popen(
        ["qemu-io", "-f", "qcow2", str(file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        holder.stdin.write("read 0 512\n")
        holder.stdin.flush()
        for line in holder.stdout:
            if "bytes at offset" in line:
                break
        else:
            raise AssertionError("qemu-io did not open the image")
        yield
    finally:
        holder.stdin.close()
        try:
            holder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()


def hypervisor(ctrl: Controller) -> LibvirtHypervisor:
    hv = ctrl._wiring.hypervisors[HYPERVISOR]
    assert isinstance(hv, LibvirtHypervisor)
    return hv


def domain(ctrl: Controller) -> Any:
    # The Controller's own connection: a new one would re-read the node file.
    return hypervisor(ctrl).connection().lookupByName(DOMAIN)


def libvirt_snapshots(ctrl: Controller) -> set[str]:
    dom = domain(ctrl)
    listed = {s.getName() for s in dom.listAllSnapshots()}
    assert listed == set(dom.snapshotListNames())
    return listed


def guest_is_frozen(ctrl: Controller) -> bool:
    # The test driver's fsThaw answers how many filesystems it thawed; freeze again after.
    dom = domain(ctrl)
    thawed = dom.fsThaw()
    if thawed:
        dom.fsFreeze()
    return bool(thawed)


# What vmsnap recorded ---------------------------------------------------------------


def events(ctrl: Controller, snapshot_id: str, kind: str) -> list[dict[str, Any]]:
    # Event types are qualified by the aggregate: "VmSnapshot.DriverSnapshotTaken".
    return [e.data for e in ctrl.audit_timeline(snapshot_id) if e.type.split(".")[-1] == kind]


def per_pool(ctrl: Controller, snapshot_id: str, kind: str) -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    for data in events(ctrl, snapshot_id, kind):
        assert data["pool_id"] not in found, f"two {kind} events for {data['pool_id']}"
        assert data["driver"] == DRIVERS[data["pool_id"]]
        found[data["pool_id"]] = tuple(data["volume_ids"])
    return found


# The story ---------------------------------------------------------------------------


def test_a_quiesced_snapshot_is_taken_per_qcow2_pool_and_the_temporary_libvirt_one_released(
    ctrl: Controller, world: World
) -> None:
    snap = ctrl.create_vm_snapshot(VM, name="before upgrade", quiesce=True)

    assert snap.error is None
    assert (snap.state, snap.strategy) == ("ready", "storage")
    assert (snap.quiesced, snap.consistency) == (True, "filesystem")
    assert {(v.volume_id, v.pool_id) for v in snap.volumes} == {
        (v, pool) for v, (pool, _, _) in QCOW2_VOLUMES.items()
    }
    taken = per_pool(ctrl, snap.id, "DriverSnapshotTaken")
    assert taken == {POOL_A: ("logs", "root"), POOL_B: ("data",)}
    assert all(d["need_unquiesce"] for d in events(ctrl, snap.id, "DriverSnapshotTaken"))
    for file in world.qcow2_files():
        assert qemu_img_snapshots(file) == [f"vmsnap-{snap.id}"], file
    # Frozen for the drivers, thawed after; every driver answered True: released.
    [quiesced] = events(ctrl, snap.id, "Quiesced")
    assert quiesced["result"]["frozen"] is True
    assert quiesced["result"]["hypervisor_snapshot"] == f"vmsnap-{snap.id}-quiesce"
    [unquiesced] = events(ctrl, snap.id, "Unquiesced")
    assert unquiesced["thawed"] is True
    assert unquiesced["released"] == f"vmsnap-{snap.id}-quiesce"
    assert "fsThaw thawed" in unquiesced["detail"]
    assert not guest_is_frozen(ctrl)
    assert libvirt_snapshots(ctrl) == set()
    assert ctrl.audit_verify().ok


def test_reverting_restores_the_data_of_the_volumes_on_both_qcow2_pools(
    ctrl: Controller, world: World
) -> None:
    snap = ctrl.create_vm_snapshot(VM, quiesce=True)
    for file in world.qcow2_files():
        write_pattern(file, 0xAB)
        assert holds_pattern(file, 0xAB)

    reverted = ctrl.revert_vm_snapshot(snap.id)

    assert (reverted.state, reverted.error) == ("ready", None)
    assert reverted.current
    assert per_pool(ctrl, snap.id, "DriverSnapshotReverted") == world.pools
    for file in world.qcow2_files():
        assert holds_pattern(file, 0), file
        assert qemu_img_snapshots(file) == [f"vmsnap-{snap.id}"], file
    assert not guest_is_frozen(ctrl)
    assert libvirt_snapshots(ctrl) == set()
    assert ctrl.audit_verify().ok


def test_deleting_removes_every_qcow2_snapshot_and_leaves_libvirt_without_a_vmsnap_snapshot(
    ctrl: Controller, world: World
) -> None:
    snap = ctrl.create_vm_snapshot(VM, quiesce=True)

    deleted = ctrl.delete_vm_snapshot(snap.id)

    assert (deleted.state, deleted.error) == ("removed", None)
    deletions = events(ctrl, snap.id, "DriverSnapshotDeleted")
    assert per_pool(ctrl, snap.id, "DriverSnapshotDeleted") == world.pools
    assert not any(d["compensation"] for d in deletions)
    for file in world.qcow2_files():
        assert qemu_img_snapshots(file) == [], file
    assert libvirt_snapshots(ctrl) == set()
    assert ctrl.list_vm_snapshots(VM) == []
    assert ctrl.audit_verify().ok


def test_a_default_pool_volume_keeps_the_temporary_libvirt_snapshot_as_part_of_the_vm_snapshot(
    tmp_path: Path,
) -> None:
    world = write_world(tmp_path, default_pool=True)
    with Controller.from_config(world.config) as ctrl:
        snap = ctrl.create_vm_snapshot(VM, quiesce=True)
        temp = f"vmsnap-{snap.id}-quiesce"

        assert (snap.state, snap.strategy, snap.error) == ("ready", "storage", None)
        assert (snap.quiesced, snap.consistency) == (True, "filesystem")
        assert per_pool(ctrl, snap.id, "DriverSnapshotTaken") == world.pools
        [decided] = events(ctrl, snap.id, "UnquiesceDecided")
        assert decided["answers"] == {PRIMARY: False, POOL_A: True, POOL_B: True}
        assert (decided["need_unquiesce"], decided["release"]) == (False, None)
        [unquiesced] = events(ctrl, snap.id, "Unquiesced")
        assert (unquiesced["thawed"], unquiesced["released"]) == (True, None)
        assert not guest_is_frozen(ctrl)
        # The kept snapshot holds the default pool's volume: it is part of the VM snapshot.
        assert libvirt_snapshots(ctrl) == {temp}
        for file in world.qcow2_files():
            assert qemu_img_snapshots(file) == [f"vmsnap-{snap.id}"], file
        assert qemu_img_snapshots(world.files[DEFAULT_VOLUME[0]]) == []

        for file in world.qcow2_files():
            write_pattern(file, 0xAB)
        reverted = ctrl.revert_vm_snapshot(snap.id)

        assert (reverted.state, reverted.error) == ("ready", None)
        assert [d["name"] for d in events(ctrl, snap.id, "HypervisorSnapshotReverted")] == [temp]
        assert domain(ctrl).snapshotCurrent().getName() == temp
        assert per_pool(ctrl, snap.id, "DriverSnapshotReverted") == world.pools
        for file in world.qcow2_files():
            assert holds_pattern(file, 0), file
        assert not guest_is_frozen(ctrl)

        deleted = ctrl.delete_vm_snapshot(snap.id)

        assert (deleted.state, deleted.error) == ("removed", None)
        assert [d["name"] for d in events(ctrl, snap.id, "HypervisorSnapshotDeleted")] == [temp]
        assert libvirt_snapshots(ctrl) == set()
        for file in world.qcow2_files():
            assert qemu_img_snapshots(file) == [], file
        assert ctrl.audit_verify().ok


# Failure and rollback ---------------------------------------------------------------------


def _remove(file: Path) -> None:
    file.unlink()


def _garbage(file: Path) -> None:
    file.write_bytes(b"this is not a disk image\n" * 100)


def _raw(file: Path) -> None:
    file.unlink()
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(file), "16M"], check=True)


BREAKAGES = {
    "missing": (_remove, "does not exist"),
    "garbage": (_garbage, "is not a qcow2 image"),
    "raw": (_raw, "is not a qcow2 image (format raw)"),
}


@pytest.mark.parametrize("default_pool", [False, True], ids=["qcow2-only", "with-default-pool"])
@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_image_on_the_second_pool_fails_the_create_and_rolls_back_the_first_pool(
    tmp_path: Path, breakage: str, default_pool: bool
) -> None:
    world = write_world(tmp_path, default_pool=default_pool)
    broken = world.files["data"]
    breaking, says = BREAKAGES[breakage]
    breaking(broken)
    with Controller.from_config(world.config) as ctrl:
        snap = ctrl.create_vm_snapshot(VM, quiesce=True)

        assert snap.state == "failed"
        assert snap.error is not None
        assert str(broken) in snap.error
        assert says in snap.error
        assert "not cleaned up" not in snap.error
        # qcow2-a, called together with qcow2-b, took its snapshot; it is deleted again as a
        # compensation (with a default pool, its group too).
        before = {p: vs for p, vs in world.pools.items() if p != POOL_B}
        assert per_pool(ctrl, snap.id, "DriverSnapshotTaken") == before
        compensations = events(ctrl, snap.id, "DriverSnapshotDeleted")
        assert per_pool(ctrl, snap.id, "DriverSnapshotDeleted") == before
        assert all(d["compensation"] for d in compensations)
        [failed_call] = events(ctrl, snap.id, "CallFailed")
        assert (failed_call["target"], failed_call["op"]) == (POOL_B, "take_vm_snapshot")
        for volume in world.pools[POOL_A]:
            assert qemu_img_snapshots(world.files[volume]) == [], volume
        # Thawed, and the temporary snapshot released: nothing left in libvirt.
        assert events(ctrl, snap.id, "Quiesced")[0]["result"]["frozen"] is True
        # (thawed at once if qcow2-a still ran when qcow2-b failed, else with the release)
        unquiesced = events(ctrl, snap.id, "Unquiesced")
        assert [u["thawed"] for u in unquiesced].count(True) == 1
        assert unquiesced[-1]["released"] == f"vmsnap-{snap.id}-quiesce"
        assert not guest_is_frozen(ctrl)
        assert not any(vm.frozen for vm in ctrl.list_vms())
        assert libvirt_snapshots(ctrl) == set()
        assert ctrl.audit_verify().ok


def test_an_image_in_use_mid_pool_fails_the_create_after_the_driver_undid_its_own_snapshots(
    ctrl: Controller, world: World
) -> None:
    # qcow2-a snapshots "logs" then "root"; "root" is held open by another process.
    root = world.files["root"]
    with held_open_by_another_process(root):
        snap = ctrl.create_vm_snapshot(VM, quiesce=True)

    assert snap.state == "failed"
    assert snap.error is not None
    assert str(root) in snap.error
    assert "locked by another process" in snap.error
    assert "rolled back the snapshot of logs" in snap.error
    assert "not cleaned up" not in snap.error
    [failed_call] = events(ctrl, snap.id, "CallFailed")
    assert (failed_call["target"], failed_call["op"], failed_call["code"]) == (
        POOL_A,
        "take_vm_snapshot",
        "locked",
    )
    # qcow2-a's driver undid its own snapshots; qcow2-b, called together with it, took its
    # snapshot, which is recorded and deleted as a compensation.
    assert [t["pool_id"] for t in events(ctrl, snap.id, "DriverSnapshotTaken")] == [POOL_B]
    [deleted] = events(ctrl, snap.id, "DriverSnapshotDeleted")
    assert (deleted["pool_id"], deleted["compensation"]) == (POOL_B, True)
    for file in world.qcow2_files():
        assert qemu_img_snapshots(file) == [], file
    assert [u["thawed"] for u in events(ctrl, snap.id, "Unquiesced")].count(True) == 1
    assert not guest_is_frozen(ctrl)
    assert libvirt_snapshots(ctrl) == set()
    assert ctrl.audit_verify().ok


def test_a_vm_whose_domain_the_host_does_not_have_is_refused_and_nothing_is_recorded(
    tmp_path: Path,
) -> None:
    world = write_world(tmp_path, domain="ghost")
    with Controller.from_config(world.config) as ctrl:
        with pytest.raises(InvalidRequest, match="has no domain named 'ghost'"):
            ctrl.create_vm_snapshot(VM, quiesce=True)

        assert list(ctrl.audit_export()) == []
        assert ctrl.list_vm_snapshots(include_removed=True) == []
        for file in world.qcow2_files():
            assert qemu_img_snapshots(file) == [], file
        assert libvirt_snapshots(ctrl) == set()


def test_a_qcow2_volume_snapshot_is_deleted_by_the_name_it_was_taken_with(
    ctrl: Controller, world: World
) -> None:
    # take_snapshot answers "<file>@<name>"; the delete must name the snapshot itself.
    file = world.files["data"]
    snap = ctrl.create_volume_snapshot("data", quiesce=True)
    assert snap.state == "ready", snap.error
    assert qemu_img_snapshots(file) == [f"vmsnap-{snap.id}"]

    deleted = ctrl.delete_volume_snapshot(snap.id)

    assert (deleted.state, deleted.error) == ("removed", None)
    assert qemu_img_snapshots(file) == []
    assert not guest_is_frozen(ctrl)
    assert ctrl.audit_verify().ok
