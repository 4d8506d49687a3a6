"""
``reconcile`` on libvirt: the domain snapshots vmsnap holds are listed (VM snapshots and the
temporary quiesce ones as the hypervisor's, volume snapshots under their volume), the ones
the log owns are not reported, and one made behind vmsnap's back under a vmsnap name is an
orphan that ``--clean`` deletes, recorded. Real libvirt (test driver) and real qcow2 files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import NOT_INSTALLED

pytest.importorskip("libvirt", reason=NOT_INSTALLED["libvirt"])

from tests.integration.test_libvirt_qcow2_flow import (
    DEFAULT_VOLUME,
    HYPERVISOR,
    PRIMARY,
    VM,
    domain,
    hypervisor,
    libvirt_snapshots,
    write_world,
)
from vmsnap import Controller
from vmsnap.adapters.libvirt_hypervisor import VOLUME_SNAPSHOT_OF
from vmsnap.domain.values import SnapshotRef

ORPHAN_ID = "00000000-0000-4000-8000-0000000000bb"  # no snapshot of the log has this id
ORPHAN = f"vmsnap-{ORPHAN_ID}"


def test_libvirt_snapshots_the_log_owns_are_listed_and_not_reported(tmp_path: Path) -> None:
    world = write_world(tmp_path, default_pool=True)
    with Controller.from_config(world.config) as ctrl:
        vm_snap = ctrl.create_vm_snapshot(VM, quiesce=True)
        vol_snap = ctrl.create_volume_snapshot(DEFAULT_VOLUME[0])
        assert (vm_snap.state, vol_snap.state) == ("ready", "ready")
        vm = ctrl._runtime.vm_info(VM)
        hv = hypervisor(ctrl)
        scratch = next(v for v in vm.volumes if v.id == DEFAULT_VOLUME[0])

        # The kept temporary snapshot is the VM snapshot's; the volume snapshot is the volume's.
        assert hv.held_snapshots(vm) == [f"vmsnap-{vm_snap.id}-quiesce"]
        assert hv.held_volume_snapshots(vm, scratch) == [f"vmsnap-{vol_snap.id}"]
        report = ctrl.reconcile()
        assert (report.ok, report.unlisted, report.orphans) == (True, (), ())

        ctrl.delete_volume_snapshot(vol_snap.id)
        ctrl.delete_vm_snapshot(vm_snap.id)
        assert libvirt_snapshots(ctrl) == set()
        assert ctrl.reconcile().ok


@pytest.mark.parametrize("volume_snapshot", [False, True], ids=["vm-snapshot", "volume-snapshot"])
def test_a_libvirt_snapshot_nothing_records_is_an_orphan_and_clean_deletes_it_recorded(
    tmp_path: Path, volume_snapshot: bool
) -> None:
    world = write_world(tmp_path, default_pool=True)
    with Controller.from_config(world.config) as ctrl:
        vm = ctrl._runtime.vm_info(VM)
        hv = hypervisor(ctrl)
        if volume_snapshot:
            scratch = next(v for v in vm.volumes if v.id == DEFAULT_VOLUME[0])
            hv.take_volume_snapshot(vm, scratch, ORPHAN)
            description = domain(ctrl).snapshotLookupByName(ORPHAN).getXMLDesc(0)
            assert VOLUME_SNAPSHOT_OF + scratch.id in description
        else:
            hv.take_vm_snapshot(vm, SnapshotRef(ORPHAN_ID, VM, ORPHAN), memory=False)

        report = ctrl.reconcile()

        assert not report.ok and report.unlisted == ()
        [orphan] = report.orphans
        target = PRIMARY if volume_snapshot else HYPERVISOR
        assert (orphan.vm_id, orphan.owed.target, orphan.owed.name) == (VM, target, ORPHAN)

        cleaned = ctrl.reconcile(clean=True)

        assert [f.owed.name for f in cleaned.cleaned] == [ORPHAN] and cleaned.ok
        assert libvirt_snapshots(ctrl) == set()
        assert ctrl.reconcile().ok
        types = [e.type for e in ctrl.audit_export()]
        assert "Vm.OrphanOwed" in types and "Vm.OrphanSettled" in types
