"""
The failure paths of a frozen VM, through the Controller on the simulator: the quiesce
deadline (``[limits] quiesce_deadline_s``) passing while a driver call still runs, and the
cleanup of a quiesced volume snapshot whose take, thaw or deadline fails.

A delayed simulated call here does not sleep for its configured time: it lasts until the
VM is thawed (see :func:`held_until_thawed`), so the deadline always passes first however
fast or slow the machine is, and no test measures time.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import STATE_FILE, VendorPool, volumes_of, world_config
from tests.support import WAIT_S, wait_for, write_config
from vmsnap import Controller, OperationInProgress
from vmsnap.adapters import simulator_world as simulator
from vmsnap.adapters.simulator import SimulatorWorld

VM = "vm-kvm"  # KVM: a quiesce freezes the guest until it is thawed
VOLUME = "kvm-data"  # on netapp-1, which advertises VOLUME_SNAPSHOT_QUIESCEVM
DEADLINE_S = 0.05


@pytest.fixture
def held_until_thawed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A simulated call with a delay waits, instead of sleeping, until ``vm-kvm`` is thawed
    (bounded by WAIT_S), then does its work: a call still running at the deadline.
    """

    def hold(_seconds: float) -> None:
        with SimulatorWorld(tmp_path / STATE_FILE) as world:
            wait_for(lambda: not world.is_frozen(VM), WAIT_S, f"{VM} to be thawed")

    monkeypatch.setattr(simulator, "_sleep", hold)


def timeline(ctrl: Controller, sid: str) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) of every event of snapshot ``sid``, in log order."""
    return [(e.type, e.data) for e in ctrl.audit_timeline(snapshot_id=sid)]


def types(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [t for t, _ in events]


def only(events: list[tuple[str, dict[str, Any]]], type_: str) -> list[dict[str, Any]]:
    return [d for t, d in events if t == type_]


def clean(world: SimulatorWorld) -> None:
    """Nothing of any snapshot is left in the simulated world, and the VM is thawed."""
    assert not world.is_frozen(VM)
    assert world.hypervisor_snapshots(VM) == []
    for vol in volumes_of(VM):
        assert world.volume_snapshots(vol) == [], f"volume {vol} kept a snapshot"


# -- the quiesce deadline ------------------------------------------------------------------


@pytest.mark.usefixtures("held_until_thawed")
def test_quiesce_deadline_thaws_while_driver_call_runs(tmp_path: Path) -> None:
    # netapp-1's take_vm_snapshot still runs at the deadline; vm-kvm's other groups answer.
    config = write_config(
        tmp_path,
        world_config(
            netapp=VendorPool(delay_s={"take_vm_snapshot": 1}), quiesce_deadline_s=DEADLINE_S
        ),
    )
    with Controller.from_config(config) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        snap = ctrl.create_vm_snapshot(VM, quiesce=True)

        assert snap.state == "failed"
        assert snap.current is False
        assert snap.error is not None and "quiesce deadline of 0.05s exceeded" in snap.error
        assert "not cleaned up" not in snap.error
        events = timeline(ctrl, snap.id)
        [exceeded] = only(events, "Snapshot.DeadlineExceeded")
        assert exceeded == {"target": "netapp-1", "op": "take_vm_snapshot", "deadline_s": 0.05}
        # Thawed at once, with the driver call still running ...
        thaws = only(events, "Snapshot.Unquiesced")
        assert (thaws[0]["thawed"], thaws[0]["reason"]) == (True, "deadline")
        # ... whose late answer is still recorded, after the thaw; the other groups, called
        # together with it, answered before the deadline ...
        order = types(events)
        answers = [
            (i, d["pool_id"]) for i, (t, d) in enumerate(events) if t.endswith("SnapshotTaken")
        ]
        assert order.index("Snapshot.DeadlineExceeded") < order.index("Snapshot.Unquiesced")
        late = [pool for i, pool in answers if i > order.index("Snapshot.Unquiesced")]
        assert late == ["netapp-1"]
        assert sorted(pool for _, pool in answers) == ["netapp-1", "primary-1", "pure-1"]
        # ... and what every group took is deleted.
        deleted = only(events, "VmSnapshot.DriverSnapshotDeleted")
        assert sorted(d["pool_id"] for d in deleted) == ["netapp-1", "primary-1", "pure-1"]
        assert all(d["compensation"] for d in deleted)
        assert order[-1] == "Snapshot.Failed"
        takes = [c["target"] for c in world.calls(VM) if c["op"] == "take_vm_snapshot"]
        assert sorted(takes) == ["netapp-1", "pure-1"]  # primary-1's default driver logs none
        clean(world)
        vm = world.vm_state(VM)
        assert vm is not None and (vm["freeze_count"], vm["thaw_count"]) == (1, 1)
        assert ctrl.audit_verify().ok
        # The VM is not left claimed.
        assert [v.in_flight for v in ctrl.list_vms() if v.id == VM] == [None]


@pytest.mark.usefixtures("held_until_thawed")
def test_quiesce_deadline_on_a_volume_snapshot_thaws_and_deletes_the_late_snapshot(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path,
        world_config(
            netapp=VendorPool(delay_s={"take_snapshot": 1}), quiesce_deadline_s=DEADLINE_S
        ),
    )
    with Controller.from_config(config) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        snap = ctrl.create_volume_snapshot(VOLUME, quiesce=True)

        assert snap.state == "failed"
        assert snap.error is not None and "quiesce deadline" in snap.error
        assert "not cleaned up" not in snap.error
        events = timeline(ctrl, snap.id)
        [exceeded] = only(events, "Snapshot.DeadlineExceeded")
        assert (exceeded["target"], exceeded["op"]) == ("netapp-1", "take_snapshot")
        order = types(events)
        assert order.index("Snapshot.Unquiesced") < order.index(
            "VolumeSnapshot.VolumeSnapshotTaken"
        )
        assert only(events, "Snapshot.Unquiesced")[0]["reason"] == "deadline"
        [deleted] = only(events, "VolumeSnapshot.VolumeSnapshotDeleted")
        assert (deleted["name"], deleted["compensation"]) == (f"vmsnap-{snap.id}", True)
        assert order[-1] == "Snapshot.Failed"
        clean(world)
        assert ctrl.audit_verify().ok


# -- a failed volume snapshot is cleaned up ------------------------------------------------


def test_failed_volume_snapshot_is_cleaned_up(tmp_path: Path) -> None:
    # The take fails while the VM is frozen: thawed, the temporary snapshot released.
    config = write_config(
        tmp_path, world_config(netapp=VendorPool(faults={"take_snapshot": "fail"}))
    )
    with Controller.from_config(config) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        snap = ctrl.create_volume_snapshot(VOLUME, quiesce=True)

        assert snap.state == "failed"
        assert snap.error is not None and "take_snapshot on netapp-1" in snap.error
        events = timeline(ctrl, snap.id)
        [failure] = only(events, "Snapshot.CallFailed")
        assert (failure["target"], failure["op"], failure["code"]) == (
            "netapp-1",
            "take_snapshot",
            "SIMULATED",
        )
        [unquiesced] = only(events, "Snapshot.Unquiesced")
        assert (unquiesced["thawed"], unquiesced["reason"]) == (True, "failure")
        assert unquiesced["released"] == f"vmsnap-{snap.id}-quiesce"
        assert only(events, "VolumeSnapshot.VolumeSnapshotTaken") == []
        assert types(events)[-1] == "Snapshot.Failed"
        clean(world)
        assert ctrl.audit_verify().ok
        assert [s.state for s in ctrl.list_volume_snapshots(VOLUME)] == ["failed"]


def test_a_volume_snapshot_whose_thaw_fails_is_deleted_and_the_frozen_vm_is_reported(
    tmp_path: Path,
) -> None:
    # The take succeeds, every thaw fails: the snapshot taken is still deleted, and the VM
    # the hypervisor cannot thaw is raised as an alert.
    config = write_config(tmp_path, world_config(hypervisor_faults={"kvm1": {"unquiesce": "fail"}}))
    with Controller.from_config(config) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        snap = ctrl.create_volume_snapshot(VOLUME, quiesce=True)

        assert snap.state == "failed"
        assert snap.error is not None and "unquiesce on kvm1" in snap.error
        events = timeline(ctrl, snap.id)
        attempts = [f["attempt"] for f in only(events, "Snapshot.CallFailed")]
        assert attempts == [1, 2, 3, 1, 2, 3]  # the decided thaw, then the failure path's
        assert {a["kind"] for a in only(events, "Snapshot.AlertRaised")} == {"vm-frozen"}
        [deleted] = only(events, "VolumeSnapshot.VolumeSnapshotDeleted")
        assert (deleted["name"], deleted["compensation"]) == (f"vmsnap-{snap.id}", True)
        assert world.volume_snapshots(VOLUME) == []
        assert world.is_frozen(VM)  # the fault stays: no thaw can succeed
        report = ctrl.audit_verify()
        assert not report.ok
        assert any("still frozen" in p for p in report.problems)


@pytest.mark.usefixtures("held_until_thawed")
def test_a_late_volume_snapshot_that_cannot_be_deleted_is_named_in_the_error(
    tmp_path: Path,
) -> None:
    netapp = VendorPool(delay_s={"take_snapshot": 1}, faults={"delete_snapshot": "fail"})
    config = write_config(tmp_path, world_config(netapp=netapp, quiesce_deadline_s=DEADLINE_S))
    with Controller.from_config(config) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        snap = ctrl.create_volume_snapshot(VOLUME, quiesce=True)

        assert snap.state == "failed"
        assert snap.error is not None
        assert snap.error.endswith(f"; not cleaned up: volume snapshot vmsnap-{snap.id}")
        events = timeline(ctrl, snap.id)
        assert only(events, "VolumeSnapshot.VolumeSnapshotDeleted") == []
        [failure] = only(events, "Snapshot.CallFailed")
        assert (failure["target"], failure["op"]) == ("netapp-1", "delete_snapshot")
        assert world.volume_snapshots(VOLUME) == [f"vmsnap-{snap.id}"]
        assert not world.is_frozen(VM)
        assert world.hypervisor_snapshots(VM) == []


# -- a controller that stops (serve on SIGTERM) --------------------------------------------


@pytest.mark.usefixtures("held_until_thawed")
def test_stop_thaws_a_frozen_guest_at_once_and_refuses_new_operations(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, world_config(netapp=VendorPool(delay_s={"take_vm_snapshot": 1}))
    )
    with Controller.from_config(config) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        created: list[Any] = []
        worker = threading.Thread(
            target=lambda: created.append(ctrl.create_vm_snapshot(VM, quiesce=True))
        )
        worker.start()
        wait_for(lambda: world.is_frozen(VM), WAIT_S, f"{VM} frozen")

        ctrl.stop()  # the held driver call returns only once the guest is thawed
        worker.join(WAIT_S)

        [snap] = created
        assert snap.state == "failed" and snap.error is not None
        assert "interrupted: the controller is stopping" in snap.error
        events = timeline(ctrl, snap.id)
        thaws = only(events, "Snapshot.Unquiesced")
        assert (thaws[0]["thawed"], thaws[0]["reason"]) == (True, "interrupted")
        assert "Snapshot.DeadlineExceeded" not in types(events)
        # Every group the batch called is compensated, netapp-1's late answer included.
        deleted = only(events, "VmSnapshot.DriverSnapshotDeleted")
        taken = only(events, "VmSnapshot.DriverSnapshotTaken")
        assert "netapp-1" in {d["pool_id"] for d in taken}
        assert {(d["pool_id"], d["compensation"]) for d in deleted} == {
            (d["pool_id"], True) for d in taken
        }
        clean(world)
        with pytest.raises(OperationInProgress, match="vmsnap is stopping"):
            ctrl.create_vm_snapshot("vm-plain")
        assert ctrl.audit_verify().ok
