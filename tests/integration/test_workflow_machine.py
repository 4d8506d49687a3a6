"""
A hypothesis state machine that drives a Controller (SQLite file store + simulated world)
with random commands, against a plain model of what each snapshot's state must be.

A second Controller on the same store and world has a vendor pool (netapp-1) whose
take/revert/delete of VM snapshots fail; rules switch between the two. Another rule runs
an operation on a Controller that dies at a chosen call (tests/crash.py), then restarts
the healthy Controller with recovery enabled, as a restarted controller process would.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import event as note_event
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from tests.conftest import STATE_FILE, VMS, VendorPool, world_config
from tests.crash import SimulatedCrash, die_at_call
from tests.support import Config, write_config
from vmsnap import Controller, InvalidRequest
from vmsnap.adapters.simulator import SimulatorWorld
from vmsnap.domain.exceptions import IllegalTransition
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.values import backend_name
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.volume_snapshot import VolumeSnapshot
from vmsnap.domain.workflow import (
    VM_SNAPSHOT_WORKFLOW,
    VOLUME_SNAPSHOT_WORKFLOW,
    Workflow,
)

LIMIT = 3
NETAPP_FAULTS = {
    "take_vm_snapshot": "fail",
    "revert_vm_snapshot": "fail",
    "delete_vm_snapshot": "fail",
}
QUIESCE_POOLS = {"netapp-1", "pure-1"}
VOLUMES = sorted(
    (vol, pool)
    for vm, (_, power, vols) in VMS.items()
    if power == "Running"
    for vol, pool, _ in vols
)


# vm-kvm has hooks (issue 19): its quiesced snapshots run them around the freeze.
HOOKED_VM, PRE, POST = "vm-kvm", ["/usr/local/bin/db-quiesce"], ["/usr/local/bin/db-resume"]


def _hooked(config: Config) -> Config:
    hooks = {
        "pre_freeze": {"run": PRE, "where": "guest"},
        "post_thaw": {"run": POST, "where": "guest"},
    }
    vms = [{**v, "hooks": hooks} if v["id"] == HOOKED_VM else v for v in config.vms]
    return attrs.evolve(config, vms=vms)


def _uses_netapp(vm_id: str) -> bool:
    return any(pool == "netapp-1" for _, pool, _ in VMS[vm_id][2])


@attrs.define
class Expected:
    """What the model expects of one VM snapshot."""

    vm_id: str
    name: str
    state: str
    parent: str | None
    netapp_held: bool  # the faulty pool holds a snapshot of it, so its faults apply
    holds: bool = True  # may own backend snapshots (ready, or failed to delete)


class WorkflowMachine(RuleBasedStateMachine):
    snapshots = Bundle("snapshots")

    @initialize()
    def open_controllers(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="vmsnap-machine-"))
        healthy = write_config(self.folder, _hooked(world_config(max_vm_snapshots_per_vm=LIMIT)))
        self.healthy_config = healthy
        faulty = write_config(
            self.folder,
            _hooked(
                world_config(max_vm_snapshots_per_vm=LIMIT, netapp=VendorPool(faults=NETAPP_FAULTS))
            ),
            "faulty.toml",
        )
        self.healthy = Controller.from_config(healthy)
        self.faulty = Controller.from_config(faulty)
        self.ctrl = self.healthy
        self.world = SimulatorWorld(self.folder / STATE_FILE)
        self.model: dict[str, Expected] = {}
        self.current: dict[str, str | None] = {vm: None for vm in VMS}
        self.volume_snapshots: dict[str, str] = {}
        self.histories: dict[str, list[str]] = {}

    def teardown(self) -> None:
        for name in ("healthy", "faulty", "world"):
            thing = getattr(self, name, None)
            if thing is not None:
                thing.close()
        folder = getattr(self, "folder", None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    # -- helpers --------------------------------------------------------------------------

    @property
    def is_faulty(self) -> bool:
        return self.ctrl is self.faulty

    def _events(self) -> int:
        return len(list(self.ctrl.audit_export()))

    def _refused(self, error: type[Exception], call: Callable[[], Any]) -> None:
        before = self._events()
        with pytest.raises(error):
            call()
        assert self._events() == before, "a refused request recorded events"

    def _live(self, vm_id: str) -> list[Expected]:
        return [s for s in self.model.values() if s.vm_id == vm_id and s.state != "removed"]

    # -- rules ----------------------------------------------------------------------------

    @precondition(lambda self: not self.is_faulty)
    @rule()
    def use_the_faulty_controller(self) -> None:
        self.ctrl = self.faulty

    @precondition(lambda self: self.is_faulty)
    @rule()
    def use_the_healthy_controller(self) -> None:
        self.ctrl = self.healthy

    @rule(
        target=snapshots,
        vm_id=st.sampled_from(sorted(VMS)),
        name=st.sampled_from([None, None, "daily", "weekly"]),
        memory=st.booleans(),
        quiesce=st.booleans(),
    )
    def create(self, vm_id: str, name: str | None, memory: bool, quiesce: bool) -> Any:
        return self._create(vm_id, name, memory, quiesce)

    @precondition(lambda self: any(s.state != "removed" for s in self.model.values()))
    @rule(
        target=snapshots,
        data=st.data(),
        name=st.sampled_from([None, "daily"]),
        quiesce=st.booleans(),
    )
    def create_on_a_vm_with_snapshots(
        self, data: st.DataObject, name: str | None, quiesce: bool
    ) -> Any:
        """Grow snapshot trees: most creates land on a VM that has one already."""
        vms = sorted({s.vm_id for s in self.model.values() if s.state != "removed"})
        vm_id = data.draw(st.sampled_from(vms), label="vm with snapshots")
        return self._create(vm_id, name, False, quiesce)

    def _create(self, vm_id: str, name: str | None, memory: bool, quiesce: bool) -> Any:
        live = self._live(vm_id)
        stopped = VMS[vm_id][1] == "Stopped"
        if (
            (memory and stopped)
            or (name is not None and any(s.name == name for s in live))
            or len(live) >= LIMIT
        ):
            self._refused(
                InvalidRequest,
                lambda: self.ctrl.create_vm_snapshot(
                    vm_id, name=name, memory=memory, quiesce=quiesce
                ),
            )
            return multiple()
        snap = self.ctrl.create_vm_snapshot(vm_id, name=name, memory=memory, quiesce=quiesce)
        fails = self.is_faulty and _uses_netapp(vm_id)
        expected = Expected(
            vm_id,
            snap.name,
            "failed" if fails else "ready",
            self.current[vm_id],
            _uses_netapp(vm_id) and not fails,
            holds=not fails,
        )
        assert snap.state == expected.state, snap.error
        assert (snap.error is not None) is fails
        assert snap.parent_id == expected.parent
        assert snap.type == ("DiskAndMemory" if memory else "Disk")
        self.model[snap.id] = expected
        if not fails:
            self.current[vm_id] = snap.id
        return snap.id

    @rule(sid=snapshots)
    def revert(self, sid: str) -> None:
        expected = self.model[sid]
        if expected.state != "ready":
            self._refused(IllegalTransition, lambda: self.ctrl.revert_vm_snapshot(sid))
            return
        self._revert(sid)

    @precondition(lambda self: any(s.state == "ready" for s in self.model.values()))
    @rule(data=st.data())
    def revert_a_ready_snapshot(self, data: st.DataObject) -> None:
        ready = sorted(sid for sid, s in self.model.items() if s.state == "ready")
        self._revert(data.draw(st.sampled_from(ready), label="ready snapshot"))

    def _revert(self, sid: str) -> None:
        expected = self.model[sid]
        snap = self.ctrl.revert_vm_snapshot(sid)
        fails = self.is_faulty and expected.netapp_held
        assert snap.state == "ready"
        assert (snap.error is not None) is fails
        if not fails:
            self.current[expected.vm_id] = sid

    @rule(sid=snapshots)
    def delete(self, sid: str) -> None:
        self._delete(sid)

    def _parents(self) -> list[str]:
        return sorted(
            sid
            for sid, s in self.model.items()
            if s.state in ("ready", "failed")
            and any(c.parent == sid and c.state != "removed" for c in self.model.values())
        )

    @precondition(lambda self: bool(self._parents()))
    @rule(data=st.data())
    def delete_a_snapshot_with_children(self, data: st.DataObject) -> None:
        self._delete(data.draw(st.sampled_from(self._parents()), label="parent snapshot"))

    def _delete(self, sid: str) -> None:
        expected = self.model[sid]
        if expected.state not in ("ready", "failed"):
            self._refused(IllegalTransition, lambda: self.ctrl.delete_vm_snapshot(sid))
            return
        snap = self.ctrl.delete_vm_snapshot(sid)
        fails = self.is_faulty and expected.netapp_held
        if fails:
            assert snap.state == "failed"
            assert snap.error is not None
            expected.state = "failed"
            return
        assert snap.state == "removed", snap.error
        self._removed(sid)

    def _removed(self, sid: str) -> None:
        expected = self.model[sid]
        expected.state = "removed"
        expected.netapp_held = False
        expected.holds = False
        for child in self.model.values():
            if child.parent == sid:
                child.parent = expected.parent
        if self.current[expected.vm_id] == sid:
            self.current[expected.vm_id] = expected.parent

    @rule(volume=st.sampled_from(VOLUMES), quiesce=st.booleans())
    def create_volume_snapshot(self, volume: tuple[str, str], quiesce: bool) -> None:
        volume_id, pool_id = volume
        if quiesce and pool_id not in QUIESCE_POOLS:
            self._refused(
                InvalidRequest, lambda: self.ctrl.create_volume_snapshot(volume_id, quiesce=True)
            )
            return
        snap = self.ctrl.create_volume_snapshot(volume_id, quiesce=quiesce)
        assert (snap.state, snap.error) == ("ready", None)
        assert snap.quiesce_requested is quiesce
        self.volume_snapshots[snap.id] = "ready"

    @rule(
        data=st.data(),
        operation=st.sampled_from(["create", "revert", "delete"]),
        call=st.integers(min_value=1, max_value=6),
        after=st.booleans(),
    )
    def crash_mid_flight_then_restart(
        self, data: st.DataObject, operation: str, call: int, after: bool
    ) -> None:
        """
        Run one operation on a Controller that dies at its ``call``-th adapter call, then
        restart with recovery: the operation ends as recovery defines (a create failed and
        cleaned up, a revert back to ready, a delete finished).
        """
        if operation == "create":
            candidates = sorted(vm for vm in VMS if len(self._live(vm)) < LIMIT)
        else:
            wanted = ("ready",) if operation == "revert" else ("ready", "failed")
            candidates = sorted(sid for sid, s in self.model.items() if s.state in wanted)
        if not candidates:
            return
        target = data.draw(st.sampled_from(candidates), label=f"{operation} target")
        dying = Controller.from_config(self.healthy_config)
        countdown = die_at_call(dying, call, after=after)
        saved, self.ctrl = self.ctrl, dying
        try:
            if operation == "create":
                self._create(target, None, False, data.draw(st.booleans(), label="quiesce"))
            elif operation == "revert":
                self._revert(target)
            else:
                self._delete(target)
            crashed = None
        except SimulatedCrash:
            [crashed] = [v.in_flight for v in dying.list_vms() if v.in_flight is not None]
        finally:
            self.ctrl = saved
            dying.close()
        assert (crashed is None) is (countdown.fired is None)
        outcome = f"died in {countdown.fired}" if countdown.fired else "ran to its end"
        note_event(f"{operation}: {outcome}")
        self._restart_with_recovery()
        if crashed is None:
            return  # it ran to its end before the chosen call: the model already knows
        view = self.ctrl.get_vm_snapshot(crashed)
        if operation != "delete":  # recovery finishes a delete; the others end with an error
            assert view.error is not None and "recovered after the controller" in view.error
        if operation == "create":
            assert view.state == "failed"
            self.model[crashed] = Expected(
                target, view.name, "failed", self.current[target], False, holds=False
            )
        elif operation == "revert":
            assert view.state == "ready"  # the current snapshot stays what it was
        else:
            assert view.state == "removed"
            self._removed(crashed)

    def _restart_with_recovery(self) -> None:
        was_healthy = not self.is_faulty
        self.healthy.close()
        self.healthy = Controller.from_config(self.healthy_config, recover=True)
        if was_healthy:
            self.ctrl = self.healthy

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def no_backend_snapshot_is_orphaned(self) -> None:
        if not hasattr(self, "world"):
            return
        shown = self.world.show()
        names = [n for vm in shown["vms"].values() for n in vm["hypervisor_snapshots"]]
        names += [n for vol in shown["volumes"].values() for n in vol["snapshots"]]
        owners = {backend_name(sid): sid for sid in [*self.model, *self.volume_snapshots]}
        for name in names:
            sid = owners.get(name.removesuffix("-quiesce"))
            assert sid is not None, f"backend snapshot {name} belongs to no snapshot"
            if sid in self.model:
                assert self.model[sid].holds, f"{name} outlived its snapshot ({sid})"

    @invariant()
    def views_match_the_model(self) -> None:
        if not hasattr(self, "ctrl"):
            return
        views = {s.id: s for s in self.ctrl.list_vm_snapshots(include_removed=True)}
        assert set(views) == set(self.model)
        for sid, view in views.items():
            expected = self.model[sid]
            assert view.state in VM_SNAPSHOT_WORKFLOW.states
            assert view.state == expected.state, (sid, view.error)
            if expected.state != "removed":
                assert view.parent_id == expected.parent
                assert view.current is (self.current[expected.vm_id] == sid)
        volume_views = {s.id: s.state for s in self.ctrl.list_volume_snapshots()}
        assert volume_views == self.volume_snapshots

    @invariant()
    def states_follow_the_machine_from_the_previous_state(self) -> None:
        if not hasattr(self, "ctrl"):
            return
        workflows: dict[str, Workflow] = {}
        histories: dict[str, list[str]] = {}
        for view in self.ctrl.audit_export():
            oid, event = view.originator_id, view.event
            if isinstance(event, VmSnapshot.Requested | VolumeSnapshot.Requested):
                workflows[oid] = (
                    VM_SNAPSHOT_WORKFLOW
                    if isinstance(event, VmSnapshot.Requested)
                    else VOLUME_SNAPSHOT_WORKFLOW
                )
                histories[oid] = ["allocated"]
            elif oid in histories and isinstance(event, SnapshotAggregate.Event) and event.trigger:
                state = histories[oid][-1]
                histories[oid].append(workflows[oid].next_state(state, event.trigger))
        for oid, previous in self.histories.items():
            assert histories[oid][: len(previous)] == previous, "history was rewritten"
        for sid, expected in self.model.items():
            assert histories[sid][-1] == expected.state
        for sid, state in self.volume_snapshots.items():
            assert histories[sid][-1] == state
        self.histories = histories

    @invariant()
    def projections_equal_a_rebuild_from_the_log(self) -> None:
        if not hasattr(self, "ctrl"):
            return
        report = self.ctrl.audit_verify()
        assert report.ok, report.problems

    @invariant()
    def every_owed_post_hook_ran_at_most_once_and_none_is_left_unstarted(self) -> None:
        """
        Each post-thaw hook owed ran at most once (not idempotent), at least when its end
        is recorded, and none is left owed without a start (recover started it).
        """
        if not hasattr(self, "ctrl"):
            return
        S = SnapshotAggregate
        owed = started = ended = 0
        for view in self.ctrl.audit_export():
            event = view.event
            owed += isinstance(event, S.PostHookOwed)
            if isinstance(event, S.HookStarted | S.HookEnded) and event.hook == "post_thaw":
                started += isinstance(event, S.HookStarted)
                ended += isinstance(event, S.HookEnded)
        runs = [c for c in self.world.calls(HOOKED_VM) if c["op"] == "guest_exec" and c["ok"]]
        post_runs = sum(c["result"]["argv"] == POST for c in runs)
        assert started == owed, "a post-thaw hook was left owed"
        assert ended <= post_runs <= owed, (ended, post_runs, owed)
        assert [h.status for h in self.ctrl.reconcile().hooks if h.status == "owed"] == []

    @invariant()
    def no_vm_is_left_frozen(self) -> None:
        if not hasattr(self, "world"):
            return
        frozen = [vm for vm, state in self.world.show()["vms"].items() if state["frozen"]]
        assert frozen == []
        vms = self.ctrl.list_vms()
        assert [v.id for v in vms if v.frozen] == []
        assert [v.id for v in vms if v.in_flight is not None] == []
        for vm in vms:
            assert vm.current == self.current[vm.id]


WorkflowMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)
TestWorkflow = WorkflowMachine.TestCase
