"""
The Controller end to end: a real SQLite store file and a simulated world in tmp_path.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.application import AggregateNotFoundError, Repository
from eventsourcing.persistence import OperationalError

from tests.conftest import (
    NO_CAPS,
    STATE_FILE,
    STORE_FILE,
    VendorPool,
    volumes_of,
    world_config,
)
from tests.support import WAIT_S, wait_for, write_config
from vmsnap import Controller, InvalidRequest, NotFound, OperationInProgress, VmSnapshotView
from vmsnap.adapters import simulator_world, store
from vmsnap.adapters.simulator import SimulatorWorld
from vmsnap.adapters.store import EventLog
from vmsnap.domain.exceptions import IllegalTransition, StoreError
from vmsnap.domain.pool import Pool

# -- helpers ---------------------------------------------------------------------------------


def event_count(ctrl: Controller) -> int:
    return len(list(ctrl.audit_export()))


@contextmanager
def records_nothing(ctrl: Controller, world: SimulatorWorld) -> Iterator[None]:
    """The block records no event and makes no simulated call."""
    events, calls = event_count(ctrl), len(world.calls())
    yield
    assert event_count(ctrl) == events, "a refused request recorded events"
    assert len(world.calls()) == calls, "a refused request called a hypervisor or driver"


def events(ctrl: Controller, sid: str, name: str) -> list[dict[str, Any]]:
    """The data of the events ``<Aggregate>.<name>`` of snapshot ``sid``, in order."""
    return [e.data for e in ctrl.audit_timeline(snapshot_id=sid) if e.type.endswith("." + name)]


def vendor_calls(world: SimulatorWorld, vm_id: str, op: str) -> dict[str, list[list[str]]]:
    """pool or hypervisor -> the volumes of each ``op`` call about ``vm_id``."""
    out: dict[str, list[list[str]]] = {}
    for call in world.calls(vm_id):
        if call["op"] == op:
            out.setdefault(call["target"], []).append(call["volumes"])
    return out


def open_second(tmp_path: Path, **config: Any) -> Controller:
    """Another Controller on the same store and world, configured as ``config`` says."""
    name = f"other-{uuid.uuid4().hex[:6]}.toml"
    return Controller.from_config(write_config(tmp_path, world_config(**config), name))


def no_leftovers(world: SimulatorWorld, vm_id: str) -> None:
    for vol in volumes_of(vm_id):
        assert world.volume_snapshots(vol) == [], f"volume {vol} kept a snapshot"
    assert world.hypervisor_snapshots(vm_id) == []
    assert not world.is_frozen(vm_id)


# -- storage strategy across drivers -------------------------------------------------------


def test_a_quiesced_vmware_snapshot_across_three_drivers_calls_each_driver_once(
    controller: Controller, world: SimulatorWorld
) -> None:
    snap = controller.create_vm_snapshot("vm-vmware", name="nightly", quiesce=True)

    assert snap.state == "ready"
    assert snap.strategy == "storage"
    assert (snap.quiesce_requested, snap.quiesced, snap.consistency) == (True, True, "filesystem")
    assert snap.error is None
    assert snap.current is True
    assert snap.parent_id is None
    assert {(v.volume_id, v.pool_id) for v in snap.volumes} == {
        ("vmw-root", "primary-1"),
        ("vmw-data", "netapp-1"),
        ("vmw-log", "netapp-1"),
        ("vmw-db", "pure-1"),
    }
    # One take_vm_snapshot per vendor driver, with exactly its own volumes.
    assert vendor_calls(world, "vm-vmware", "take_vm_snapshot") == {
        "netapp-1": [["vmw-data", "vmw-log"]],
        "pure-1": [["vmw-db"]],
    }
    # ... and one for the default driver, recorded as an event.
    taken = events(controller, snap.id, "DriverSnapshotTaken")
    assert sorted((t["pool_id"], tuple(t["volume_ids"]), t["need_unquiesce"]) for t in taken) == [
        ("netapp-1", ("vmw-data", "vmw-log"), True),
        ("primary-1", ("vmw-root",), False),
        ("pure-1", ("vmw-db",), True),
    ]
    assert world.volume_snapshots("vmw-data") == [f"vmsnap-{snap.id}"]
    assert world.volume_snapshots("vmw-db") == [f"vmsnap-{snap.id}"]


def test_the_unquiesce_decision_records_the_answers_and_their_and(
    controller: Controller, world: SimulatorWorld
) -> None:
    snap = controller.create_vm_snapshot("vm-vmware", quiesce=True)

    [decision] = events(controller, snap.id, "UnquiesceDecided")
    assert decision["answers"] == {"netapp-1": True, "primary-1": False, "pure-1": True}
    assert decision["need_unquiesce"] is False
    assert decision["release"] is None
    assert "primary-1" in decision["reason"]
    # The default driver depends on the temporary hypervisor snapshot: it is kept.
    assert world.hypervisor_snapshots("vm-vmware") == [f"vmsnap-{snap.id}-quiesce"]
    assert vendor_calls(world, "vm-vmware", "unquiesce") == {}


@pytest.mark.parametrize(
    ("pure_answer", "released"), [(True, True), (False, False)], ids=["all-true", "pure-false"]
)
def test_the_temporary_snapshot_is_released_only_when_every_driver_answers_true(
    tmp_path: Path, pure_answer: bool, released: bool
) -> None:
    config = write_config(tmp_path, world_config(pure=VendorPool(need_unquiesce=pure_answer)))
    with Controller.from_config(config) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        snap = ctrl.create_vm_snapshot("vm-san", quiesce=True)

        [decision] = events(ctrl, snap.id, "UnquiesceDecided")
        assert decision["answers"] == {"netapp-1": True, "pure-1": pure_answer}
        assert decision["need_unquiesce"] is released
        temp = f"vmsnap-{snap.id}-quiesce"
        assert decision["release"] == (temp if released else None)
        assert (world.hypervisor_snapshots("vm-san") == []) is released
        unquiesced = events(ctrl, snap.id, "Unquiesced")
        assert [u["released"] for u in unquiesced] == ([temp] if released else [])
        assert snap.state == "ready"


def test_a_memory_snapshot_keeps_the_hypervisor_snapshot_even_when_every_driver_says_true(
    controller: Controller, world: SimulatorWorld
) -> None:
    snap = controller.create_vm_snapshot("vm-san", memory=True, quiesce=True)

    assert (snap.state, snap.type) == ("ready", "DiskAndMemory")
    [decision] = events(controller, snap.id, "UnquiesceDecided")
    assert (decision["need_unquiesce"], decision["release"]) == (True, None)
    assert world.hypervisor_snapshots("vm-san") == [f"vmsnap-{snap.id}-quiesce"]


def test_xenserver_ignores_quiesce_and_the_snapshot_says_it_is_crash_consistent(
    controller: Controller,
) -> None:
    snap = controller.create_vm_snapshot("vm-xen", quiesce=True)

    assert snap.state == "ready"
    assert (snap.quiesce_requested, snap.quiesced, snap.consistency) == (True, False, "crash")
    [quiesced] = events(controller, snap.id, "Quiesced")
    assert quiesced["result"]["quiesced"] is False
    assert "XenServer ignores the quiesce option" in quiesced["result"]["detail"]


def test_xenserver_hypervisor_snapshots_also_say_quiesce_was_ignored(tmp_path: Path) -> None:
    config = write_config(tmp_path, world_config(netapp=VendorPool(caps=dict(NO_CAPS))))
    with Controller.from_config(config) as ctrl:
        snap = ctrl.create_vm_snapshot("vm-xen", quiesce=True)

        assert (snap.strategy, snap.quiesced, snap.consistency) == ("hypervisor", False, "crash")
        [taken] = events(ctrl, snap.id, "HypervisorSnapshotTaken")
        assert "XenServer ignores the quiesce option" in taken["detail"]


def test_kvm_is_frozen_then_thawed_even_when_the_rule_says_keep(
    controller: Controller, world: SimulatorWorld
) -> None:
    snap = controller.create_vm_snapshot("vm-kvm", quiesce=True)

    assert (snap.state, snap.quiesced, snap.consistency) == ("ready", True, "filesystem")
    vm = world.vm_state("vm-kvm")
    assert vm is not None
    assert (vm["frozen"], vm["freeze_count"], vm["thaw_count"]) == (False, 1, 1)
    ops = [c["op"] for c in world.calls("vm-kvm")]
    assert ops == ["quiesce", "take_vm_snapshot", "take_vm_snapshot", "unquiesce"]
    [decision] = events(controller, snap.id, "UnquiesceDecided")
    assert (decision["need_unquiesce"], decision["thaw"], decision["release"]) == (
        False,
        True,
        None,
    )
    [unquiesced] = events(controller, snap.id, "Unquiesced")
    assert (unquiesced["thawed"], unquiesced["reason"]) == (True, "mandatory")


def test_an_unquiesced_request_on_kvm_does_not_freeze_the_guest(
    controller: Controller, world: SimulatorWorld
) -> None:
    snap = controller.create_vm_snapshot("vm-kvm", quiesce=False)

    assert (snap.state, snap.quiesced, snap.consistency) == ("ready", False, "crash")
    vm = world.vm_state("vm-kvm")
    assert vm is not None
    assert vm["freeze_count"] == 0


def test_the_hypervisor_strategy_is_used_when_no_pool_advertises_storage_snapshots(
    tmp_path: Path,
) -> None:
    quiesce_only = {"VOLUME_SNAPSHOT_QUIESCEVM": True, "STORAGE_SYSTEM_SNAPSHOT": False}
    config = write_config(
        tmp_path,
        world_config(netapp=VendorPool(caps=quiesce_only), pure=VendorPool(caps=dict(NO_CAPS))),
    )
    with Controller.from_config(config) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        snap = ctrl.create_vm_snapshot("vm-vmware", quiesce=True)

        assert (snap.state, snap.strategy) == ("ready", "hypervisor")
        assert (snap.quiesced, snap.consistency) == (True, "filesystem")
        assert [(c["op"], c["target"]) for c in world.calls("vm-vmware")] == [
            ("take_vm_snapshot", "esx1")
        ]
        assert world.hypervisor_snapshots("vm-vmware") == [f"vmsnap-{snap.id}"]
        [requested] = events(ctrl, snap.id, "Requested")
        assert "no volume" in requested["strategy_reason"]


def test_a_vm_on_pools_without_storage_snapshots_uses_the_hypervisor_strategy(
    controller: Controller, world: SimulatorWorld
) -> None:
    snap = controller.create_vm_snapshot("vm-plain", quiesce=True)

    assert (snap.state, snap.strategy, snap.quiesced) == ("ready", "hypervisor", True)
    assert vendor_calls(world, "vm-plain", "take_vm_snapshot") == {"esx1": [[]]}
    assert vendor_calls(world, "vm-plain", "quiesce") == {}


# -- validation: refused, nothing recorded -------------------------------------------------


def test_an_unknown_vm_is_refused_as_not_found(
    controller: Controller, world: SimulatorWorld
) -> None:
    with records_nothing(controller, world), pytest.raises(NotFound, match="vm-nope"):
        controller.create_vm_snapshot("vm-nope")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "n" * 256},
        {"description": "d" * 256},
        {"name": "   "},
        {"memory": True, "quiesce": True},
    ],
    ids=["long-name", "long-description", "blank-name", "memory-on-stopped"],
)
def test_bad_create_requests_are_refused_and_record_nothing(
    controller: Controller, world: SimulatorWorld, kwargs: dict[str, Any]
) -> None:
    vm = "vm-stopped" if kwargs.get("memory") else "vm-vmware"

    with records_nothing(controller, world), pytest.raises(InvalidRequest):
        controller.create_vm_snapshot(vm, **kwargs)

    assert controller.list_vm_snapshots(include_removed=True) == []


def test_a_disk_snapshot_of_a_stopped_vm_is_accepted(controller: Controller) -> None:
    assert controller.create_vm_snapshot("vm-stopped").state == "ready"


def test_a_name_of_exactly_255_characters_is_accepted(controller: Controller) -> None:
    snap = controller.create_vm_snapshot("vm-plain", name="n" * 255, description="d" * 255)

    assert (snap.state, len(snap.name), len(snap.description or "")) == ("ready", 255, 255)


def test_a_duplicate_name_on_the_same_vm_is_refused_but_free_on_another_vm(
    controller: Controller, world: SimulatorWorld
) -> None:
    controller.create_vm_snapshot("vm-plain", name="daily")

    with records_nothing(controller, world), pytest.raises(InvalidRequest, match="daily"):
        controller.create_vm_snapshot("vm-plain", name="daily")

    assert controller.create_vm_snapshot("vm-xen", name="daily").state == "ready"


def test_the_name_of_a_removed_snapshot_can_be_used_again(controller: Controller) -> None:
    first = controller.create_vm_snapshot("vm-plain", name="daily")
    controller.delete_vm_snapshot(first.id)

    assert controller.create_vm_snapshot("vm-plain", name="daily").state == "ready"


def test_the_snapshot_limit_counts_every_snapshot_but_removed_ones(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        world_config(
            max_vm_snapshots_per_vm=2, pure=VendorPool(faults={"take_vm_snapshot": "fail"})
        ),
    )
    with Controller.from_config(config) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        ready = ctrl.create_vm_snapshot("vm-plain")
        failed = ctrl.create_vm_snapshot("vm-san")
        assert (ready.state, failed.state) == ("ready", "failed")
        ctrl.create_vm_snapshot("vm-plain")

        with records_nothing(ctrl, world), pytest.raises(InvalidRequest, match="limit is 2"):
            ctrl.create_vm_snapshot("vm-plain")

        ctrl.delete_vm_snapshot(ready.id)
        assert ctrl.create_vm_snapshot("vm-plain").state == "ready"

        # A failed snapshot counts until it is deleted.
        ctrl.create_vm_snapshot("vm-san", name="second")
        with records_nothing(ctrl, world), pytest.raises(InvalidRequest, match="limit"):
            ctrl.create_vm_snapshot("vm-san")
        ctrl.delete_vm_snapshot(failed.id)
        assert ctrl.list_vm_snapshots(vm_id="vm-san", state="removed")[0].id == failed.id


def test_reverting_a_snapshot_that_is_not_ready_is_refused(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path, world_config(pure=VendorPool(faults={"take_vm_snapshot": "fail"}))
    )
    with Controller.from_config(config) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        failed = ctrl.create_vm_snapshot("vm-vmware", quiesce=True)
        assert failed.state == "failed"
        removed = ctrl.create_vm_snapshot("vm-plain")
        ctrl.delete_vm_snapshot(removed.id)

        for sid in (failed.id, removed.id):
            with records_nothing(ctrl, world), pytest.raises(IllegalTransition, match="revert"):
                ctrl.revert_vm_snapshot(sid)


def test_deleting_a_removed_snapshot_is_refused(
    controller: Controller, world: SimulatorWorld
) -> None:
    snap = controller.create_vm_snapshot("vm-vmware", quiesce=True)
    controller.delete_vm_snapshot(snap.id)

    with records_nothing(controller, world), pytest.raises(InvalidRequest, match="removed"):
        controller.delete_vm_snapshot(snap.id)


@pytest.mark.parametrize("volume", ["plain-data", "vmw-root"])
def test_a_quiesced_volume_snapshot_is_refused_on_a_pool_that_cannot_quiesce(
    controller: Controller, world: SimulatorWorld, volume: str
) -> None:
    with (
        records_nothing(controller, world),
        pytest.raises(InvalidRequest, match="VOLUME_SNAPSHOT_QUIESCEVM"),
    ):
        controller.create_volume_snapshot(volume, quiesce=True)

    assert controller.list_volume_snapshots() == []


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.create_volume_snapshot("vol-nope"),
        lambda c: c.revert_vm_snapshot(str(uuid.uuid4())),
        lambda c: c.delete_vm_snapshot(str(uuid.uuid4())),
        lambda c: c.delete_vm_snapshot("not-an-id"),
        lambda c: c.get_vm_snapshot(str(uuid.uuid4())),
        lambda c: c.audit_timeline(snapshot_id=str(uuid.uuid4())),
        lambda c: c.audit_timeline(vm_id="vm-nope"),
        lambda c: c.list_volumes("vm-nope"),
    ],
    ids=[
        "volume",
        "revert",
        "delete",
        "delete-bad-id",
        "get",
        "timeline-snapshot",
        "timeline-vm",
        "volumes-of-vm",
    ],
)
def test_unknown_ids_are_refused_as_not_found(
    controller: Controller, world: SimulatorWorld, call: Callable[[Controller], Any]
) -> None:
    controller.create_vm_snapshot("vm-plain")

    with records_nothing(controller, world), pytest.raises(NotFound):
        call(controller)


def test_a_volume_snapshot_id_is_not_a_vm_snapshot(controller: Controller) -> None:
    vol = controller.create_volume_snapshot("vmw-data")

    with pytest.raises(NotFound):
        controller.revert_vm_snapshot(vol.id)
    with pytest.raises(NotFound):
        controller.get_vm_snapshot(vol.id)


# -- faults: compensation --------------------------------------------------------------------


def test_a_failing_vendor_driver_fails_the_snapshot_and_leaves_no_orphan(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path, world_config(pure=VendorPool(faults={"take_vm_snapshot": "fail"}))
    )
    with Controller.from_config(config) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        snap = ctrl.create_vm_snapshot("vm-kvm", quiesce=True)

        assert snap.state == "failed"
        assert snap.error is not None and "take_vm_snapshot on pure-1" in snap.error
        assert "not cleaned up" not in snap.error
        assert snap.current is False
        # netapp-1, called together with pure-1, took its snapshot: it was deleted.
        assert vendor_calls(world, "vm-kvm", "take_vm_snapshot")["netapp-1"] == [["kvm-data"]]
        no_leftovers(world, "vm-kvm")
        vm = world.vm_state("vm-kvm")
        assert vm is not None and vm["freeze_count"] == vm["thaw_count"] == 1
        deleted = events(ctrl, snap.id, "DriverSnapshotDeleted")
        assert {(d["pool_id"], d["compensation"]) for d in deleted} == {
            ("netapp-1", True),
            ("primary-1", True),
        }
        [failure] = events(ctrl, snap.id, "CallFailed")
        assert (failure["target"], failure["op"], failure["code"]) == (
            "pure-1",
            "take_vm_snapshot",
            "SIMULATED",
        )
        # One thaw: at once if netapp-1 still ran when pure-1 failed (ADR 0024), else
        # together with the release of the temporary snapshot.
        unquiesced = events(ctrl, snap.id, "Unquiesced")
        [thaw] = [u for u in unquiesced if u["thawed"]]
        assert thaw["reason"] == "failure"
        assert ctrl.audit_verify().ok
        # The VM is not left claimed: the next create runs (and fails the same way).
        assert ctrl.create_vm_snapshot("vm-kvm", quiesce=True).state == "failed"
        no_leftovers(world, "vm-kvm")


def test_a_failing_quiesce_fails_the_snapshot_before_any_driver_is_called(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, world_config(hypervisor_faults={"kvm1": {"quiesce": "fail"}}))
    with Controller.from_config(config) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        snap = ctrl.create_vm_snapshot("vm-kvm", quiesce=True)

        assert snap.state == "failed"
        assert snap.error is not None and "quiesce on kvm1" in snap.error
        assert vendor_calls(world, "vm-kvm", "take_vm_snapshot") == {}
        no_leftovers(world, "vm-kvm")
        assert ctrl.audit_verify().ok


def test_a_failing_hypervisor_snapshot_fails_a_hypervisor_strategy_snapshot(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path, world_config(hypervisor_faults={"esx1": {"take_vm_snapshot": "fail"}})
    )
    with Controller.from_config(config) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        snap = ctrl.create_vm_snapshot("vm-plain", quiesce=True)

        assert (snap.state, snap.strategy) == ("failed", "hypervisor")
        assert snap.error is not None and "take_vm_snapshot on esx1" in snap.error
        no_leftovers(world, "vm-plain")


def test_a_thaw_that_keeps_failing_is_retried_and_the_failure_says_the_vm_is_frozen(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, world_config(hypervisor_faults={"kvm1": {"unquiesce": "fail"}}))
    with Controller.from_config(config) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        snap = ctrl.create_vm_snapshot("vm-kvm", quiesce=True)

        assert snap.state == "failed"
        assert snap.error is not None and "the VM is still frozen" in snap.error
        attempts = [
            f["attempt"] for f in events(ctrl, snap.id, "CallFailed") if f["op"] == "unquiesce"
        ]
        assert attempts == [1, 2, 3, 1, 2, 3]  # the decided thaw, then the failure path's
        # Taken driver snapshots were still cleaned up.
        for vol in volumes_of("vm-kvm"):
            assert world.volume_snapshots(vol) == []
        report = ctrl.audit_verify()
        assert not report.ok
        assert any("still frozen" in p for p in report.problems)


def test_a_failed_revert_returns_to_ready_with_the_error_and_keeps_the_current_snapshot(
    tmp_path: Path,
) -> None:
    with Controller.from_config(write_config(tmp_path, world_config())) as ctrl:
        first = ctrl.create_vm_snapshot("vm-vmware", quiesce=True)
        second = ctrl.create_vm_snapshot("vm-vmware", quiesce=True)
        with open_second(tmp_path, netapp=VendorPool(faults={"revert_vm_snapshot": "fail"})) as bad:
            reverted = bad.revert_vm_snapshot(first.id)

        assert reverted.state == "ready"
        assert reverted.error is not None and "revert_vm_snapshot on netapp-1" in reverted.error
        assert ctrl.get_vm_snapshot(second.id).current is True
        assert ctrl.get_vm_snapshot(first.id).current is False
        assert len(events(ctrl, first.id, "RevertFailed")) == 1

        # A revert that works clears the error and makes the snapshot current.
        again = ctrl.revert_vm_snapshot(first.id)
        assert (again.state, again.error, again.current) == ("ready", None, True)
        assert ctrl.audit_verify().ok


def test_a_failed_delete_ends_failed_and_a_retry_removes_everything(tmp_path: Path) -> None:
    with (
        Controller.from_config(write_config(tmp_path, world_config())) as ctrl,
        SimulatorWorld(tmp_path / STATE_FILE) as world,
    ):
        snap = ctrl.create_vm_snapshot("vm-vmware", quiesce=True)
        with open_second(tmp_path, netapp=VendorPool(faults={"delete_vm_snapshot": "fail"})) as bad:
            failed = bad.delete_vm_snapshot(snap.id)

        assert failed.state == "failed"
        assert failed.error is not None and "delete_vm_snapshot on netapp-1" in failed.error
        assert world.volume_snapshots("vmw-data") == [f"vmsnap-{snap.id}"]

        removed = ctrl.delete_vm_snapshot(snap.id)
        assert removed.state == "removed"
        no_leftovers(world, "vm-vmware")
        assert ctrl.audit_verify().ok


# -- delete, list and the snapshot tree ------------------------------------------------------


def test_a_deleted_snapshot_is_hidden_from_lists_unless_removed_ones_are_asked_for(
    controller: Controller, world: SimulatorWorld
) -> None:
    keep = controller.create_vm_snapshot("vm-vmware", quiesce=True)
    gone = controller.create_vm_snapshot("vm-vmware", quiesce=True)

    deleted = controller.delete_vm_snapshot(gone.id)

    assert deleted.state == "removed"
    assert [s.id for s in controller.list_vm_snapshots()] == [keep.id]
    assert [s.id for s in controller.list_vm_snapshots(vm_id="vm-vmware")] == [keep.id]
    assert [s.id for s in controller.list_vm_snapshots(include_removed=True)] == [keep.id, gone.id]
    assert [s.id for s in controller.list_vm_snapshots(state="removed")] == [gone.id]
    assert controller.get_vm_snapshot(gone.id).state == "removed"
    assert world.volume_snapshots("vmw-data") == [f"vmsnap-{keep.id}"]
    assert world.hypervisor_snapshots("vm-vmware") == [f"vmsnap-{keep.id}-quiesce"]


def test_list_filters_by_vm_and_state(controller: Controller) -> None:
    a = controller.create_vm_snapshot("vm-plain")
    b = controller.create_vm_snapshot("vm-xen", quiesce=True)

    assert [s.id for s in controller.list_vm_snapshots(vm_id="vm-xen")] == [b.id]
    assert [s.id for s in controller.list_vm_snapshots(state="ready")] == [a.id, b.id]
    assert controller.list_vm_snapshots(state="failed") == []


def test_the_snapshot_tree_follows_creates_reverts_and_deletes(controller: Controller) -> None:
    def view(s: VmSnapshotView) -> VmSnapshotView:
        return controller.get_vm_snapshot(s.id)

    s1 = controller.create_vm_snapshot("vm-vmware", name="s1", quiesce=True)
    s2 = controller.create_vm_snapshot("vm-vmware", name="s2", quiesce=True)
    assert s2.parent_id == s1.id
    assert (view(s1).current, view(s2).current) == (False, True)

    reverted = controller.revert_vm_snapshot(s1.id)
    assert (reverted.state, reverted.error, reverted.current) == ("ready", None, True)
    assert view(s2).current is False

    s3 = controller.create_vm_snapshot("vm-vmware", name="s3", quiesce=True)
    assert s3.parent_id == s1.id  # a branch from the reverted snapshot
    s4 = controller.create_vm_snapshot("vm-vmware", name="s4", quiesce=True)
    assert s4.parent_id == s3.id

    controller.revert_vm_snapshot(s3.id)
    controller.delete_vm_snapshot(s3.id)  # the current one, with a child

    assert view(s1).current is True
    assert view(s4).parent_id == s1.id
    assert view(s4).current is False
    assert view(s3).current is False
    assert controller.audit_verify().ok


def test_reverting_a_storage_snapshot_reverts_the_kept_hypervisor_snapshot_and_each_driver(
    controller: Controller, world: SimulatorWorld
) -> None:
    snap = controller.create_vm_snapshot("vm-vmware", quiesce=True)

    controller.revert_vm_snapshot(snap.id)

    assert vendor_calls(world, "vm-vmware", "revert_vm_snapshot") == {
        "esx1": [[]],
        "netapp-1": [["vmw-data", "vmw-log"]],
        "pure-1": [["vmw-db"]],
    }


def test_projections_equal_a_rebuild_from_the_log_after_a_busy_story(
    tmp_path: Path,
) -> None:
    with Controller.from_config(write_config(tmp_path, world_config())) as ctrl:
        for vm in ("vm-vmware", "vm-xen", "vm-kvm", "vm-san", "vm-plain"):
            s = ctrl.create_vm_snapshot(vm, quiesce=True)
            ctrl.revert_vm_snapshot(s.id)
        ctrl.create_vm_snapshot("vm-vmware", memory=True)
        ctrl.delete_vm_snapshot(s.id)
        v = ctrl.create_volume_snapshot("kvm-data", quiesce=True)
        ctrl.delete_volume_snapshot(v.id)
        with open_second(tmp_path, pure=VendorPool(faults={"take_vm_snapshot": "fail"})) as bad:
            assert bad.create_vm_snapshot("vm-san").state == "failed"

        report = ctrl.audit_verify()

        assert report.ok, report.problems
        assert report.problems == ()
        assert report.events == event_count(ctrl)


def test_unnamed_snapshots_get_distinct_cloudstack_default_names(controller: Controller) -> None:
    names = [controller.create_vm_snapshot("vm-plain").name for _ in range(3)]

    assert len(set(names)) == 3
    for name in names:
        assert re.fullmatch(r"vm-plain_VS_\d{14}(_\d+)?", name), name


def test_a_snapshot_view_has_the_contract_json_shape(controller: Controller) -> None:
    doc = controller.create_vm_snapshot("vm-xen", name="n", description="d", quiesce=True).to_dict()

    assert set(doc) >= {
        "id", "vm_id", "name", "description", "type", "state", "quiesce_requested", "quiesced",
        "consistency", "strategy", "error", "volumes", "parent_id", "current",
    }  # fmt: skip
    assert doc["volumes"] == [
        {"volume_id": "xen-root", "pool_id": "primary-1"},
        {"volume_id": "xen-data", "pool_id": "netapp-1"},
    ]
    assert json.loads(json.dumps(doc)) == doc


def test_the_timeline_of_a_vm_holds_its_vm_and_volume_snapshots_events_in_log_order(
    controller: Controller,
) -> None:
    vm_snap = controller.create_vm_snapshot("vm-kvm", quiesce=True)
    vol_snap = controller.create_volume_snapshot("kvm-data", quiesce=True)
    controller.create_vm_snapshot("vm-xen")

    timeline = controller.audit_timeline(vm_id="vm-kvm")

    positions = [e.position for e in timeline]
    assert positions == sorted(positions)
    assert {e.originator_id for e in timeline} == {vm_snap.id, vol_snap.id}
    assert timeline[0].type == "VmSnapshot.Requested"
    assert [e.type for e in timeline].count("Snapshot.Unquiesced") == 2


# -- volume snapshots, pools, volumes ------------------------------------------------------


def test_a_quiesced_volume_snapshot_on_kvm_freezes_takes_then_thaws_and_releases(
    controller: Controller, world: SimulatorWorld
) -> None:
    snap = controller.create_volume_snapshot("kvm-data", quiesce=True)

    assert (snap.state, snap.quiesce_requested, snap.quiesced) == ("ready", True, True)
    assert (snap.volume_id, snap.pool_id, snap.error) == ("kvm-data", "netapp-1", None)
    assert world.volume_snapshots("kvm-data") == [f"vmsnap-{snap.id}"]
    assert world.hypervisor_snapshots("vm-kvm") == []
    vm = world.vm_state("vm-kvm")
    assert vm is not None and (vm["frozen"], vm["freeze_count"], vm["thaw_count"]) == (False, 1, 1)
    assert [s.id for s in controller.list_volume_snapshots("kvm-data")] == [snap.id]


def test_a_volume_snapshot_on_the_default_pool_goes_through_the_hypervisor(
    controller: Controller, world: SimulatorWorld
) -> None:
    snap = controller.create_volume_snapshot("vmw-root")

    assert (snap.state, snap.quiesced) == ("ready", False)
    assert vendor_calls(world, "vm-vmware", "take_volume_snapshot") == {"esx1": [["vmw-root"]]}

    removed = controller.delete_volume_snapshot(snap.id)
    assert removed.state == "removed"
    assert world.volume_snapshots("vmw-root") == []


def test_pools_report_their_caps_and_volumes_derive_theirs(controller: Controller) -> None:
    caps = {p.id: p.caps for p in controller.list_pools()}
    assert caps["primary-1"] == dict(NO_CAPS)
    assert caps["plain-1"] == dict(NO_CAPS)
    assert caps["netapp-1"] == {"VOLUME_SNAPSHOT_QUIESCEVM": True, "STORAGE_SYSTEM_SNAPSHOT": True}
    assert {p.id: p.driver for p in controller.list_pools()}["primary-1"] == "default"

    volumes = {v.id: v for v in controller.list_volumes("vm-vmware")}
    assert set(volumes) == set(volumes_of("vm-vmware"))
    assert (volumes["vmw-root"].quiescevm, volumes["vmw-root"].supportsstoragesnapshot) == (
        False,
        False,
    )
    assert (volumes["vmw-db"].quiescevm, volumes["vmw-db"].supportsstoragesnapshot) == (True, True)


# -- several controllers, several threads ----------------------------------------------------


def test_two_controllers_on_one_store_see_each_other_s_work(
    controller: Controller, tmp_path: Path
) -> None:
    first = controller.create_vm_snapshot("vm-vmware", name="from-a", quiesce=True)
    with open_second(tmp_path) as other:
        assert other.get_vm_snapshot(first.id).state == "ready"
        second = other.create_vm_snapshot("vm-vmware", name="from-b", quiesce=True)
        assert second.parent_id == first.id

        assert controller.get_vm_snapshot(second.id).current is True
        assert controller.get_vm_snapshot(first.id).current is False

        with pytest.raises(InvalidRequest, match="from-a"):
            other.create_vm_snapshot("vm-vmware", name="from-a")

        other.delete_vm_snapshot(first.id)
        assert [s.id for s in controller.list_vm_snapshots()] == [second.id]
        assert controller.audit_verify().ok
        assert other.audit_verify().ok


@pytest.fixture
def held_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[threading.Event, threading.Event]]:
    """
    Make every simulated delay wait for the test: ``entered`` is set when a call starts
    its delay, which lasts until the test sets ``release`` (bounded by WAIT_S).
    """
    entered, release = threading.Event(), threading.Event()

    def hold(seconds: float) -> None:
        entered.set()
        assert release.wait(WAIT_S), "the test never released the held call"

    monkeypatch.setattr(simulator_world, "_sleep", hold)
    yield entered, release
    release.set()


def test_a_second_operation_on_a_vm_with_one_in_flight_is_refused_and_records_nothing(
    tmp_path: Path, held_calls: tuple[threading.Event, threading.Event]
) -> None:
    entered, release = held_calls
    config = write_config(
        tmp_path, world_config(netapp=VendorPool(delay_s={"take_vm_snapshot": 1}))
    )
    with (
        Controller.from_config(config) as ctrl,
        open_second(tmp_path) as other,
        SimulatorWorld(tmp_path / STATE_FILE) as world,
    ):
        earlier = other.create_vm_snapshot("vm-vmware", quiesce=True)
        results: list[Any] = []
        thread = threading.Thread(
            target=lambda: results.append(ctrl.create_vm_snapshot("vm-vmware", quiesce=True))
        )
        thread.start()
        try:
            assert entered.wait(WAIT_S), "the first operation never reached its driver call"
            wait_for(
                lambda: (
                    [s.state for s in ctrl.list_vm_snapshots("vm-vmware")]
                    == ["ready", "snapshotting"]
                ),
                WAIT_S,
                "the first operation's claim to show in the views",
            )
            [running] = [s.id for s in ctrl.list_vm_snapshots("vm-vmware") if s.id != earlier.id]
            # The other driver groups, called together with the held one, have answered.
            wait_for(
                lambda: (
                    [e.type for e in ctrl.audit_timeline(snapshot_id=running)].count(
                        "VmSnapshot.DriverSnapshotTaken"
                    )
                    == 2
                ),
                WAIT_S,
                "primary-1's and pure-1's answers",
            )
            before = event_count(ctrl)
            calls = len(world.calls())

            attempts: list[Callable[[], Any]] = [
                lambda: ctrl.create_vm_snapshot("vm-vmware", quiesce=True),
                lambda: other.create_vm_snapshot("vm-vmware"),
                lambda: ctrl.revert_vm_snapshot(earlier.id),
                lambda: other.delete_vm_snapshot(earlier.id),
                lambda: ctrl.create_volume_snapshot("vmw-root"),
                # The snapshot being created: busy, not merely in the wrong state.
                lambda: other.revert_vm_snapshot(running),
                lambda: other.delete_vm_snapshot(running),
            ]
            for attempt in attempts:
                with pytest.raises(OperationInProgress, match="vm-vmware"):
                    attempt()

            assert event_count(ctrl) == before
            assert len(world.calls()) == calls
            # Another VM is not held up.
            assert other.create_vm_snapshot("vm-plain").state == "ready"
        finally:
            release.set()
            thread.join(WAIT_S)
        assert not thread.is_alive()
        [done] = results
        assert (done.state, done.parent_id, done.current) == ("ready", earlier.id, True)
        assert ctrl.audit_verify().ok
        # Once it ended, the VM takes new operations again.
        assert ctrl.revert_vm_snapshot(earlier.id).state == "ready"


def test_racing_threads_on_one_vm_run_one_operation_at_a_time(
    tmp_path: Path, held_calls: tuple[threading.Event, threading.Event]
) -> None:
    entered, release = held_calls
    config = write_config(
        tmp_path, world_config(hypervisor_delays={"esx1": {"take_vm_snapshot": 1}})
    )
    outcomes: list[str] = []
    lock = threading.Lock()
    with Controller.from_config(config) as ctrl:

        def create() -> None:
            try:
                ctrl.create_vm_snapshot("vm-plain")
                outcome = "done"
            except OperationInProgress:
                outcome = "refused"
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=create) for _ in range(4)]
        for t in threads:
            t.start()
        assert entered.wait(WAIT_S)
        wait_for(lambda: len(outcomes) == 3, WAIT_S, "the other threads to be refused")
        release.set()
        for t in threads:
            t.join(WAIT_S)

        assert sorted(outcomes) == ["done", "refused", "refused", "refused"]
        assert len(ctrl.list_vm_snapshots("vm-plain")) == 1
        assert ctrl.audit_verify().ok


# -- regressions: bugs these tests found (since fixed) ---------------------------------------------


def _waiting_for_the_store_writer(thread: threading.Thread) -> bool:
    """Whether ``thread`` is inside eventsourcing's pool, asking for the writer connection."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "get_connection" and code.co_filename.endswith("persistence.py"):
            return frame.f_locals.get("is_writer") is True
        frame = frame.f_back
    return False


def test_operations_on_two_vms_from_two_threads_of_one_controller_both_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vmsnap.bootstrap as bootstrap_module

    real_project = bootstrap_module.project
    holding = threading.Event()
    main = threading.current_thread()

    def project_then_let_the_main_thread_queue(event: Any, rows: Any, position: int) -> None:
        real_project(event, rows, position)
        if threading.current_thread().name == "first" and not holding.is_set():
            holding.set()  # this thread is inside catch_up, holding the store's writer
            wait_for(
                lambda: _waiting_for_the_store_writer(main), WAIT_S, "the main thread to queue"
            )

    monkeypatch.setattr(bootstrap_module, "project", project_then_let_the_main_thread_queue)
    with Controller.from_config(write_config(tmp_path, world_config())) as ctrl:
        results: list[Any] = []

        def first() -> None:
            try:
                results.append(ctrl.create_vm_snapshot("vm-plain").state)
            except Exception as e:
                results.append(e)

        thread = threading.Thread(target=first, name="first")
        thread.start()
        try:
            assert holding.wait(WAIT_S)
            second = ctrl.create_vm_snapshot("vm-xen", quiesce=True)
        finally:
            thread.join(WAIT_S)

        assert second.state == "ready"
        assert results == ["ready"]


def test_first_snapshots_of_two_vms_sharing_a_pool_do_not_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first thread finds pool primary-1 unknown, then waits while another VM on the
    # same pool records it first: its own first sight of the pool then conflicts.
    primary = Pool.create_id("primary-1")
    real_get = Repository.get
    looked, other_done = threading.Event(), threading.Event()

    def get_then_wait(self: Repository, aggregate_id: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return real_get(self, aggregate_id, *args, **kwargs)
        except AggregateNotFoundError:
            if (
                aggregate_id == primary
                and threading.current_thread().name == "first"
                and not looked.is_set()
            ):
                looked.set()
                assert other_done.wait(WAIT_S)
            raise

    monkeypatch.setattr(Repository, "get", get_then_wait)
    with Controller.from_config(write_config(tmp_path, world_config())) as ctrl:
        results: list[Any] = []

        def first() -> None:
            try:
                results.append(ctrl.create_vm_snapshot("vm-xen").state)
            except Exception as e:
                results.append(e)

        thread = threading.Thread(target=first, name="first")
        thread.start()
        try:
            assert looked.wait(WAIT_S), "the first thread never looked the pool up"
            # vm-plain shares primary-1 with vm-xen, and records it first.
            assert ctrl.create_vm_snapshot("vm-plain").state == "ready"
        finally:
            other_done.set()
            thread.join(WAIT_S)

        assert results == ["ready"]
        registered = [
            e
            for e in ctrl.audit_export()
            if e.type == "Pool.Registered" and e.data["pool_id"] == "primary-1"
        ]
        assert len(registered) == 1
        assert ctrl.audit_verify().ok


def test_a_controller_on_a_memory_store_takes_a_snapshot(config_path: Path) -> None:
    with Controller.from_config(config_path, store_url="memory://") as ctrl:
        snap = ctrl.create_vm_snapshot("vm-plain")

        assert snap.state == "ready"
        assert ctrl.list_vm_snapshots()[0].id == snap.id


def test_a_store_error_right_after_the_claim_leaves_the_vm_recoverable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    primary = Pool.create_id("primary-1")
    real_get = Repository.get

    def locked_for_the_pool(self: Repository, aggregate_id: Any, *args: Any, **kw: Any) -> Any:
        if aggregate_id == primary:
            raise OperationalError("database is locked")
        return real_get(self, aggregate_id, *args, **kw)

    with Controller.from_config(write_config(tmp_path, world_config())) as ctrl:
        monkeypatch.setattr(Repository, "get", locked_for_the_pool)
        with pytest.raises(OperationalError):
            ctrl.create_vm_snapshot("vm-plain")
        monkeypatch.undo()

        recovered = ctrl.recover()

        assert [s.state for s in recovered] == ["failed"]
        assert ctrl.create_vm_snapshot("vm-plain").state == "ready"


def test_a_store_error_while_the_vm_is_frozen_thaws_it_before_the_error_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = EventLog.save

    def broken_after_the_first_driver(self: EventLog, *aggregates: Any, **kw: Any) -> Any:
        for agg in aggregates:
            if any(type(e).__name__ == "DriverSnapshotTaken" for e in agg.pending_events):
                raise OperationalError("disk I/O error")
        return real_save(self, *aggregates, **kw)

    with (
        Controller.from_config(write_config(tmp_path, world_config())) as ctrl,
        SimulatorWorld(tmp_path / STATE_FILE) as world,
    ):
        monkeypatch.setattr(EventLog, "save", broken_after_the_first_driver)
        with pytest.raises(OperationalError):
            ctrl.create_vm_snapshot("vm-kvm", quiesce=True)
        monkeypatch.undo()

        # The freeze did not outlive the failure, though nothing could record the thaw.
        assert world.vm_state("vm-kvm")["frozen"] is False  # type: ignore[index]
        [frozen] = [v for v in ctrl.list_vms() if v.frozen]
        assert frozen.id == "vm-kvm"  # the log still believes it frozen, until recover

        [recovered] = ctrl.recover()

        assert recovered.state == "failed"
        assert not [v for v in ctrl.list_vms() if v.frozen or v.in_flight]
        names = [n for vol in world.show()["volumes"].values() for n in vol["snapshots"]]
        names += [n for n in world.show()["vms"]["vm-kvm"]["hypervisor_snapshots"]]
        assert [n for n in names if recovered.id in n] == []
        assert ctrl.audit_verify().ok


def test_a_store_locked_by_another_writer_past_its_timeout_is_a_clear_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "LOCK_TIMEOUT_S", 1)
    with Controller.from_config(write_config(tmp_path, world_config())) as ctrl:
        ctrl.create_vm_snapshot("vm-plain")
        before = event_count(ctrl)
        holder = sqlite3.connect(tmp_path / STORE_FILE, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")  # another writer that does not let go

            with pytest.raises(StoreError, match="locked"):
                ctrl.create_vm_snapshot("vm-plain")
        finally:
            holder.close()

        assert event_count(ctrl) == before
        assert {v.in_flight for v in ctrl.list_vms()} == {None}
        assert ctrl.create_vm_snapshot("vm-plain").state == "ready"


def test_closing_a_controller_closes_its_store_and_its_simulated_world(tmp_path: Path) -> None:
    ctrl = Controller.from_config(write_config(tmp_path, world_config()))
    ctrl.create_vm_snapshot("vm-kvm", quiesce=True)

    ctrl.close()

    # SQLite removes a database's -wal file when its last connection closes.
    assert not (tmp_path / f"{STORE_FILE}-wal").exists()
    assert not (tmp_path / f"{STATE_FILE}-wal").exists()


def test_a_vm_record_with_a_long_history_is_loaded_from_its_snapshot_and_stays_correct(
    tmp_path: Path,
) -> None:
    with Controller.from_config(
        write_config(tmp_path, world_config(max_vm_snapshots_per_vm=3))
    ) as ctrl:
        kept = ctrl.create_vm_snapshot("vm-plain", name="kept")
        for n in range(12):  # about 5 VM-record events each: past the snapshot interval
            snap = ctrl.create_vm_snapshot("vm-plain", name=f"n{n}")
            ctrl.delete_vm_snapshot(snap.id)
        with contextlib.closing(sqlite3.connect(tmp_path / STORE_FILE)) as conn:
            [(snapshots,)] = conn.execute("SELECT count(*) FROM stored_snapshots").fetchall()
        assert snapshots >= 1

        # The record loaded from its snapshot still knows names, limits and the tree.
        with pytest.raises(InvalidRequest, match="already has a snapshot named 'kept'"):
            ctrl.create_vm_snapshot("vm-plain", name="kept")
        child = ctrl.create_vm_snapshot("vm-plain", name="n0")
        assert child.parent_id == kept.id
        assert ctrl.audit_verify().ok
