"""
Issue 14's findings, one test each: recovery fenced (a live operation taken over stops and
stores nothing unrecorded, concurrent recovers compensate once), isolated (config drift,
one VM that cannot be finished), honest exits, liveness by process start time, orphans
owed and reconciled, interrupts that thaw, and input refused at the boundary.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.conftest import STATE_FILE, VendorPool, world_config
from tests.crash import SimulatedCrash, die_at_call
from tests.integration.test_recovery_fencing import Gate, Journal, watch
from tests.strategies import stub_vm_snapshot
from tests.support import Config, write_config
from vmsnap import Controller
from vmsnap.adapters.simulator import SimulatorWorld
from vmsnap.adapters.store import EventLog
from vmsnap.cli import main
from vmsnap.config import load
from vmsnap.domain.exceptions import NotFound, OperationTakenOver, StoreError
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.values import SnapshotRef
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.service.runtime import start_time


def timeline(ctrl: Controller, sid: str) -> list[str]:
    return [e.type for e in ctrl.audit_timeline(snapshot_id=sid)]


def backend_names(world: SimulatorWorld, sid: str) -> list[str]:
    shown = world.show()
    names = [n for vm in shown["vms"].values() for n in vm["hypervisor_snapshots"]]
    names += [n for vol in shown["volumes"].values() for n in vol["snapshots"]]
    return [n for n in names if sid in n]


def without_volume(config: Config, volume_id: str) -> Config:
    vms = [
        {**vm, "volumes": [v for v in vm["volumes"] if v["id"] != volume_id]} for vm in config.vms
    ]
    return attrs.evolve(config, vms=vms)


def crashed(config: Path, vm_id: str, act: Any, n: int, *, after: bool = True) -> str:
    """Run ``act`` on a Controller that dies in its ``n``-th call; the snapshot it left."""
    dying = Controller.from_config(config)
    die_at_call(dying, n, after=after)
    with pytest.raises(SimulatedCrash):
        act(dying)
    [sid] = [v.in_flight for v in dying.list_vms() if v.id == vm_id]
    dying.close()
    assert sid is not None
    return sid


# Fencing ------------------------------------------------------------------------------


def test_four_concurrent_recovers_of_one_dead_operation_compensate_it_once(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, world_config())
    sid = crashed(config, "vm-kvm", lambda c: c.create_vm_snapshot("vm-kvm", quiesce=True), 1)
    ctrls = [Controller.from_config(config) for _ in range(4)]
    threads = [threading.Thread(target=c.recover) for c in ctrls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for c in ctrls:
        c.close()
    with Controller.from_config(config) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        assert timeline(ctrl, sid).count("Snapshot.RecoveryStarted") == 1
        unquiesces = [c for c in world.calls("vm-kvm") if c["op"] == "unquiesce"]
        assert len(unquiesces) == 1
        assert ctrl.get_vm_snapshot(sid).state == "failed"
        assert not world.is_frozen("vm-kvm")


def test_a_live_operation_taken_over_by_recovery_stops_and_leaves_nothing_unrecorded(
    tmp_path: Path,
) -> None:
    path = write_config(tmp_path, world_config())
    config = load(path)
    expired = attrs.evolve(config, limits=attrs.evolve(config.limits, operation_timeout_s=0))
    with SimulatorWorld(tmp_path / STATE_FILE) as world:
        slow = Controller(config)
        slow._runtime.owner = "other-host:1@1:slow"  # judged stopped once its claim is old
        gate = Gate(at=2, after=True)  # paused once the first driver took its snapshot
        watch(slow, Journal(world), gate)
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append(slow.create_vm_snapshot("vm-kvm", quiesce=True))
            except OperationTakenOver as e:
                outcome.append(e)

        thread = threading.Thread(target=run)
        thread.start()
        assert gate.paused.wait(30)
        with Controller(expired) as recovering:
            [taken] = recovering.recover()
        assert taken.state == "failed"
        assert not world.is_frozen("vm-kvm")
        gate.go.set()
        thread.join(60)
        slow.close()
        [error] = outcome
        assert isinstance(error, OperationTakenOver)
        assert "recovery took the operation over" in str(error)
        with Controller(config) as ctrl:
            assert ctrl.get_vm_snapshot(taken.id).state == "failed"
            assert backend_names(world, taken.id) == []
            assert not world.is_frozen("vm-kvm")
            assert ctrl.reconcile().ok
            assert ctrl.audit_verify().ok


# Isolation and config drift ----------------------------------------------------------------


def test_recover_reports_the_vm_it_cannot_finish_and_recovers_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = world_config()
    config = write_config(tmp_path, world)
    with Controller.from_config(config) as setup:
        ready = setup.create_vm_snapshot("vm-kvm", quiesce=True)
    crashed(config, "vm-kvm", lambda c: c.delete_vm_snapshot(ready.id), 1, after=False)
    other = crashed(config, "vm-san", lambda c: c.create_vm_snapshot("vm-san", quiesce=True), 2)
    drifted = write_config(tmp_path, without_volume(world, "kvm-db"), "drifted.toml")

    with Controller.from_config(drifted) as ctrl:
        report = ctrl.recover_report()
        assert [s.id for s in report.recovered] == [other]
        [stuck] = report.unrecovered
        assert (stuck.vm_id, stuck.snapshot_id) == ("vm-kvm", ready.id)
        assert "kvm-db" in stuck.reason
    capsys.readouterr()
    assert main(["--config", str(drifted), "recover"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: VM vm-kvm") and "kvm-db" in line
    assert main(["--config", str(drifted), "--recover", "pools", "list"]) == 0

    with Controller.from_config(config) as restored:
        assert [s.id for s in restored.recover()] == [ready.id]
        assert restored.get_vm_snapshot(ready.id).state == "removed"
        assert restored.audit_verify().ok


def test_deleting_a_snapshot_whose_volume_left_the_config_is_refused_until_it_is_back(
    tmp_path: Path,
) -> None:
    world = world_config()
    config = write_config(tmp_path, world)
    drifted = write_config(tmp_path, without_volume(world, "kvm-db"), "drifted.toml")
    with Controller.from_config(config) as ctrl:
        snap = ctrl.create_vm_snapshot("vm-kvm", quiesce=True)
    with Controller.from_config(drifted) as ctrl:
        with pytest.raises(NotFound, match="volume kvm-db of snapshot"):
            ctrl.delete_vm_snapshot(snap.id)
        assert ctrl.get_vm_snapshot(snap.id).state == "ready"
        assert [v.in_flight for v in ctrl.list_vms() if v.in_flight] == []
        assert ctrl.recover() == []
    with Controller.from_config(config) as ctrl:
        assert ctrl.delete_vm_snapshot(snap.id).state == "removed"


def without_pool(config: Config, pool_id: str, moved_to: str) -> Config:
    vms = [
        {
            **vm,
            "volumes": [
                {**v, "pool": moved_to if v["pool"] == pool_id else v["pool"]}
                for v in vm["volumes"]
            ],
        }
        for vm in config.vms
    ]
    pools = [p for p in config.pools if p["id"] != pool_id]
    return attrs.evolve(config, vms=vms, pools=pools)


def without_vm(config: Config, vm_id: str) -> Config:
    return attrs.evolve(config, vms=[vm for vm in config.vms if vm["id"] != vm_id])


@pytest.mark.parametrize(
    ("drift", "missing"),
    [
        (lambda c: without_pool(c, "pure-1", "netapp-1"), "pool pure-1"),
        (lambda c: without_vm(c, "vm-kvm"), "VM vm-kvm"),
    ],
    ids=["pool", "vm"],
)
def test_a_pool_or_vm_gone_from_the_config_never_crashes_a_delete_or_recover(
    tmp_path: Path, drift: Any, missing: str
) -> None:
    world = world_config()
    config = write_config(tmp_path, world)
    drifted = write_config(tmp_path, drift(world), "drifted.toml")
    with Controller.from_config(config) as ctrl:
        snap = ctrl.create_vm_snapshot("vm-kvm", quiesce=True)
    crashed(config, "vm-kvm", lambda c: c.revert_vm_snapshot(snap.id), 1, after=False)
    with Controller.from_config(drifted) as ctrl:
        [stuck] = ctrl.recover_report().unrecovered
        assert missing in stuck.reason
    with Controller.from_config(config) as ctrl:
        [reverted] = ctrl.recover()
        assert reverted.state == "ready"
    with Controller.from_config(drifted) as ctrl, pytest.raises(NotFound, match=missing):
        ctrl.delete_vm_snapshot(snap.id)
    with Controller.from_config(config) as ctrl:
        assert ctrl.delete_vm_snapshot(snap.id).state == "removed"


# Honest exits -------------------------------------------------------------------------------


def test_a_store_failure_after_the_claim_exits_1_with_the_view_and_names_recover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, world_config())
    real_save = EventLog.save

    def failing_save(self: EventLog, *objs: Any, **kwargs: Any) -> Any:
        pending = [e for o in objs for e in getattr(o, "pending_events", [])]
        if any(isinstance(e, SnapshotAggregate.Quiesced) for e in pending):
            raise StoreError("the store failed: database or disk is full")
        return real_save(self, *objs, **kwargs)

    monkeypatch.setattr(EventLog, "save", failing_save)
    argv = ["vm-snapshots", "create", "--vm", "vm-kvm", "--quiesce", "--json"]
    code = main(["--config", str(config), *argv])
    out, err = capsys.readouterr()
    assert code == 1
    assert json.loads(out)["state"] == "quiescing"
    assert "run 'vmsnap recover'" in err and err.startswith("error: ")
    monkeypatch.setattr(EventLog, "save", real_save)
    with Controller.from_config(config) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        assert not world.is_frozen("vm-kvm")  # thawed before the error propagated
        [recovered] = ctrl.recover()
        assert recovered.state == "failed"
        assert ctrl.reconcile().ok


# Liveness ---------------------------------------------------------------------------------


@pytest.mark.skipif(start_time(os.getppid()) is None, reason="needs /proc")
@pytest.mark.parametrize("same_start", [True, False], ids=["same-process", "pid-reused"])
def test_a_claim_is_alive_only_while_its_process_has_the_start_time_recorded(
    tmp_path: Path, same_start: bool
) -> None:
    config = write_config(tmp_path, world_config())
    parent = os.getppid()  # a process of this host that runs, and is not this one
    start = start_time(parent) if same_start else "1"
    with Controller.from_config(config) as ctrl:
        record = ctrl._runtime.vm_aggregate("vm-kvm")
        snap = stub_vm_snapshot("vm-kvm", "claimed", quiesce=False)
        record.start("create", str(snap.id), f"{socket.gethostname()}:{parent}@{start}:tok")
        ctrl._runtime.claim(record, snap)
        recovered = [s.id for s in ctrl.recover()]
    assert recovered == ([] if same_start else [str(snap.id)])


# Orphans ---------------------------------------------------------------------------------


def test_a_failed_quiesced_volume_snapshot_owes_its_temporary_snapshot_until_recover(
    tmp_path: Path,
) -> None:
    faulty = write_config(
        tmp_path, world_config(hypervisor_faults={"esx1": {"unquiesce": "fail"}}), "faulty.toml"
    )
    healthy = write_config(tmp_path, world_config())
    with Controller.from_config(faulty) as ctrl:
        snap = ctrl.create_volume_snapshot("vmw-data", quiesce=True)
    assert snap.state == "failed"
    assert snap.error and f"not cleaned up: hypervisor snapshot vmsnap-{snap.id}-quiesce" in (
        snap.error
    )
    with Controller.from_config(healthy) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        assert not ctrl.reconcile().ok
        assert ctrl.delete_volume_snapshot(snap.id).state == "removed"
        assert backend_names(world, snap.id) == [f"vmsnap-{snap.id}-quiesce"]
        assert ctrl.recover_report().unrecovered == ()
        assert backend_names(world, snap.id) == []
        assert ctrl.reconcile().ok


def test_reconcile_finds_an_orphan_nothing_records_and_clean_removes_it_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, world_config())
    sid = "00000000-0000-4000-8000-0000000000aa"  # no snapshot of the log has this id
    orphan = f"vmsnap-{sid}"
    with Controller.from_config(config) as ctrl:
        vm = ctrl._runtime.vm_info("vm-kvm")
        hv = ctrl._wiring.hypervisor_of(vm)
        hv.check_vm(vm)
        hv.take_vm_snapshot(vm, SnapshotRef(sid, vm.id, orphan), memory=False)
    capsys.readouterr()
    assert main(["--config", str(config), "reconcile", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [(o["vm_id"], o["name"]) for o in report["orphans"]] == [("vm-kvm", orphan)]
    assert main(["--config", str(config), "reconcile", "--clean", "--json"]) == 0
    cleaned = json.loads(capsys.readouterr().out)
    assert [o["name"] for o in cleaned["cleaned"]] == [orphan] and cleaned["ok"]
    with SimulatorWorld(tmp_path / STATE_FILE) as world:
        assert orphan not in world.hypervisor_snapshots("vm-kvm")
    assert main(["--config", str(config), "reconcile"]) == 0
    with Controller.from_config(config) as ctrl:
        types = [e.type for e in ctrl.audit_export()]
        assert "Vm.OrphanOwed" in types and "Vm.OrphanSettled" in types


# Interrupts ---------------------------------------------------------------------------------


def test_ctrl_c_during_a_freeze_thaws_the_guest_recorded_before_it_propagates(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, world_config())
    with Controller.from_config(config) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        driver = ctrl._wiring.drivers["netapp-1"]

        class Interrupting:
            def __getattr__(self, name: str) -> Any:
                if name == "take_vm_snapshot":

                    def interrupted(*args: Any) -> Any:
                        raise KeyboardInterrupt

                    return interrupted
                return getattr(driver, name)

        ctrl._wiring.drivers["netapp-1"] = Interrupting()  # type: ignore[assignment]
        with pytest.raises(KeyboardInterrupt):
            ctrl.create_vm_snapshot("vm-kvm", quiesce=True)
        assert not world.is_frozen("vm-kvm")
        [vm] = [v for v in ctrl.list_vms() if v.id == "vm-kvm"]
        events = ctrl.audit_timeline(snapshot_id=vm.in_flight)
        [thaw] = [e for e in events if e.type == "Snapshot.Unquiesced"]
        assert thaw.data["reason"] == "interrupted"


def test_an_interrupt_inside_a_save_leaves_a_log_that_recover_replays(tmp_path: Path) -> None:
    # Ctrl-C can land inside a save, after the events were taken from the aggregate and
    # before they were stored: the thaw is then recorded on the snapshot as stored, not
    # on the aggregate that ran ahead of it (which left a version gap: recover failed
    # with OriginatorVersionError).
    config = write_config(tmp_path, world_config())
    with Controller.from_config(config) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        log = ctrl._wiring.log
        save = log.save

        def interrupted_save(*aggregates: Any) -> Any:
            snaps = [a for a in aggregates if isinstance(a, VmSnapshot)]
            if snaps and snaps[0].answers:  # the first driver answer's save, cut short
                snaps[0].collect_events()
                raise KeyboardInterrupt
            return save(*aggregates)

        log.save = interrupted_save  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            ctrl.create_vm_snapshot("vm-kvm", quiesce=True)
        assert not world.is_frozen("vm-kvm")
    with Controller.from_config(config) as ctrl:
        [sid] = [v.in_flight for v in ctrl.list_vms() if v.id == "vm-kvm"]
        thaws = [e for e in ctrl.audit_timeline(snapshot_id=sid) if e.type == "Snapshot.Unquiesced"]
        assert [e.data["reason"] for e in thaws] == ["interrupted"]
        assert ctrl.recover_report().unrecovered == ()
        assert ctrl.reconcile().ok
        assert ctrl.audit_verify().ok


def test_a_failed_deadline_thaw_is_not_cut_short_by_the_deadline_again(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        world_config(
            quiesce_deadline_s=0.2,
            hypervisor_faults={"kvm1": {"unquiesce": "fail"}},
            netapp=VendorPool(delay_s={"take_vm_snapshot": 1}),
        ),
    )
    with Controller.from_config(config) as ctrl:
        snap = ctrl.create_vm_snapshot("vm-kvm", quiesce=True)
        assert snap.state == "failed"
        assert timeline(ctrl, snap.id).count("Snapshot.DeadlineExceeded") == 1
