"""
The driver groups of a VM snapshot are called together inside the freeze (ADR 0024),
bounded by ``[limits] max_parallel_driver_calls``, each answer recorded as it arrives.

A KVM VM here has one volume on each of N simulator pools. Each pool's real simulator
driver is wrapped by a :class:`Gated` driver whose calls first pass a gate in the call's
own worker thread: a barrier that only N calls inside at once can pass, a wait for the VM
to be thawed, a wait for another call's thread to end. No test sleeps or measures time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.conftest import ALL_CAPS, STATE_FILE
from tests.crash import SimulatedCrash
from tests.support import WAIT_S, Config, vm_tables, wait_for, write_config
from vmsnap import Controller
from vmsnap.adapters.simulator import SimulatorWorld
from vmsnap.config import load
from vmsnap.domain.exceptions import OperationTakenOver

VM = "vm-wide"
Gate = Callable[[str], None]  # runs in the call's worker thread, with the pool's id


def wide_config(pools: int, **limits: Any) -> Config:
    """A KVM VM with one volume on each of ``pools`` simulator pools."""
    return Config(
        hypervisors=[{"name": "kvm1", "type": "simulator", "profile": "kvm", "state": STATE_FILE}],
        pools=[
            {
                "id": f"pool-{i}",
                "name": f"Pool {i}",
                "driver": "simulator",
                "state": STATE_FILE,
                "capabilities": dict(ALL_CAPS),
            }
            for i in range(pools)
        ],
        vms=vm_tables(
            {VM: ("kvm1", "Running", [(f"vol-{i}", f"pool-{i}", "DATADISK") for i in range(pools)])}
        ),
        limits=limits,
    )


class Gated:
    """A real driver whose calls named in ``gates`` first pass their gate (then ``leave``)."""

    def __init__(self, inner: Any, pool_id: str, gates: dict[str, Gate], leave: Gate) -> None:
        self._inner = inner
        self._pool_id = pool_id
        self._gates = gates
        self._leave = leave

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        gate = self._gates.get(name)
        if gate is None:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                gate(self._pool_id)
                return attr(*args, **kwargs)
            finally:
                self._leave(self._pool_id)

        return call


def gate_drivers(
    ctrl: Controller, gates: dict[str, Gate], leave: Gate = lambda _pool: None
) -> None:
    """Every pool's driver of ``ctrl`` passes ``gates`` (op -> gate) from now on."""
    drivers = ctrl._wiring.drivers
    for pool_id, driver in list(drivers.items()):
        drivers[pool_id] = Gated(driver, pool_id, gates, leave)  # type: ignore[assignment]


@pytest.fixture
def open_world(tmp_path: Path) -> Callable[..., tuple[Controller, SimulatorWorld]]:
    opened: list[Any] = []

    def open_(pools: int, **limits: Any) -> tuple[Controller, SimulatorWorld]:
        ctrl = Controller.from_config(write_config(tmp_path, wide_config(pools, **limits)))
        world = SimulatorWorld(tmp_path / STATE_FILE)
        opened.extend([ctrl, world])
        return ctrl, world

    yield open_  # type: ignore[misc]
    for thing in reversed(opened):
        thing.close()


def events(ctrl: Controller, sid: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, e.data) for e in ctrl.audit_timeline(snapshot_id=sid)]


def pools_of(evs: list[tuple[str, dict[str, Any]]], type_: str) -> list[str]:
    return [d.get("pool_id") or d["target"] for t, d in evs if t == type_]


def all_pools(n: int) -> list[str]:
    return [f"pool-{i}" for i in range(n)]


def nothing_left(ctrl: Controller, world: SimulatorWorld, pools: int) -> None:
    assert not world.is_frozen(VM)
    for i in range(pools):
        assert world.volume_snapshots(f"vol-{i}") == [], f"vol-{i} kept a snapshot"
    assert ctrl.audit_verify().ok
    assert ctrl.reconcile().ok
    assert [v.in_flight for v in ctrl.list_vms()] == [None]


def barrier_gate(parties: int) -> Gate:
    """Passes only once ``parties`` calls are inside at once (a sequential loop breaks it)."""
    barrier = threading.Barrier(parties, timeout=WAIT_S)

    def gate(_pool: str) -> None:
        barrier.wait()

    return gate


def until_thawed(world: SimulatorWorld) -> Gate:
    def gate(_pool: str) -> None:
        wait_for(lambda: not world.is_frozen(VM), WAIT_S, f"{VM} to be thawed")

    return gate


# -- together, bounded ---------------------------------------------------------------------


def test_every_group_s_take_is_in_flight_at_once_inside_the_freeze(open_world: Any) -> None:
    ctrl, world = open_world(4)
    frozen_inside: list[bool] = []
    all_in = barrier_gate(4)

    def gate(pool: str) -> None:
        all_in(pool)
        frozen_inside.append(world.is_frozen(VM))

    gate_drivers(ctrl, {"take_vm_snapshot": gate})

    snap = ctrl.create_vm_snapshot(VM, quiesce=True)

    assert snap.state == "ready" and snap.consistency == "filesystem"
    assert frozen_inside == [True] * 4
    evs = events(ctrl, snap.id)
    assert sorted(pools_of(evs, "VmSnapshot.DriverSnapshotTaken")) == all_pools(4)
    [decision] = [d for t, d in evs if t == "Snapshot.UnquiesceDecided"]
    assert sorted(decision["answers"]) == all_pools(4)
    assert ctrl.audit_verify().ok


def test_no_more_calls_run_at_once_than_the_limit(open_world: Any) -> None:
    ctrl, _ = open_world(5, max_parallel_driver_calls=2)
    lock = threading.Lock()
    inside, peak, entered = [0], [0], [0]

    def gate(_pool: str) -> None:
        with lock:
            inside[0] += 1
            entered[0] += 1
            peak[0] = max(peak[0], inside[0])
            first = entered[0] == 1
        if first:  # the first call holds until a second one is inside with it
            wait_for(lambda: entered[0] >= 2, WAIT_S, "a second call")

    def leave(_pool: str) -> None:
        with lock:
            inside[0] -= 1

    gate_drivers(ctrl, {"take_vm_snapshot": gate}, leave)

    snap = ctrl.create_vm_snapshot(VM, quiesce=True)

    assert snap.state == "ready"
    assert peak[0] == 2
    assert entered[0] == 5


def test_the_log_holds_the_answers_in_the_order_they_came(open_world: Any) -> None:
    ctrl, _ = open_world(4)
    reader, _ = open_world(4)  # another controller on the same store and world
    order = ["pool-2", "pool-0", "pool-3", "pool-1"]
    all_in = barrier_gate(4)

    def gate(pool: str) -> None:
        all_in(pool)
        i = order.index(pool)  # answer only once the answers before it are in the log
        wait_for(lambda: len(taken(reader)) == i, WAIT_S, f"{i} answers saved")

    gate_drivers(ctrl, {"take_vm_snapshot": gate})

    snap = ctrl.create_vm_snapshot(VM, quiesce=True)

    assert snap.state == "ready"
    assert pools_of(events(ctrl, snap.id), "VmSnapshot.DriverSnapshotTaken") == order


def test_revert_and_delete_call_the_groups_together(open_world: Any) -> None:
    ctrl, world = open_world(3)
    snap = ctrl.create_vm_snapshot(VM, quiesce=True)
    gate_drivers(
        ctrl, {"revert_vm_snapshot": barrier_gate(3), "delete_vm_snapshot": barrier_gate(3)}
    )

    reverted = ctrl.revert_vm_snapshot(snap.id)
    assert reverted.state == "ready" and reverted.error is None
    evs = events(ctrl, snap.id)
    assert sorted(pools_of(evs, "VmSnapshot.DriverSnapshotReverted")) == all_pools(3)

    deleted = ctrl.delete_vm_snapshot(snap.id)
    assert deleted.state == "removed"
    evs = events(ctrl, snap.id)
    assert sorted(pools_of(evs, "VmSnapshot.DriverSnapshotDeleted")) == all_pools(3)
    nothing_left(ctrl, world, 3)


# -- a failure, the deadline, a crash -------------------------------------------------------


def test_a_failure_thaws_at_once_and_the_calls_still_running_are_recorded_and_undone(
    open_world: Any,
) -> None:
    ctrl, world = open_world(3)
    all_in = barrier_gate(3)
    thawed = until_thawed(world)

    def gate(pool: str) -> None:
        all_in(pool)
        if pool == "pool-0":
            raise RuntimeError("array offline")
        thawed(pool)  # the others answer only after the failure's thaw

    gate_drivers(ctrl, {"take_vm_snapshot": gate})

    snap = ctrl.create_vm_snapshot(VM, quiesce=True)

    assert snap.state == "failed"
    assert snap.error is not None and "pool-0 failed: array offline" in snap.error
    evs = events(ctrl, snap.id)
    types = [t for t, _ in evs]
    [thaw] = [i for i, (t, d) in enumerate(evs) if t == "Snapshot.Unquiesced" and d["thawed"]]
    assert evs[thaw][1]["reason"] == "failure"
    assert types.index("Snapshot.CallFailed") < thaw
    late = [d["pool_id"] for t, d in evs[thaw:] if t == "VmSnapshot.DriverSnapshotTaken"]
    assert sorted(late) == ["pool-1", "pool-2"]
    deleted = [d for t, d in evs if t == "VmSnapshot.DriverSnapshotDeleted"]
    assert sorted(d["pool_id"] for d in deleted) == ["pool-1", "pool-2"]
    assert all(d["compensation"] for d in deleted)
    assert types[-1] == "Snapshot.Failed"
    vm = world.vm_state(VM)
    assert vm is not None and (vm["freeze_count"], vm["thaw_count"]) == (1, 1)
    nothing_left(ctrl, world, 3)


def test_the_deadline_thaws_once_before_the_slow_calls_return_and_undoes_them(
    open_world: Any,
) -> None:
    ctrl, world = open_world(3, quiesce_deadline_s=0.05)
    thawed = until_thawed(world)
    gate_drivers(
        ctrl, {"take_vm_snapshot": lambda pool: None if pool == "pool-0" else thawed(pool)}
    )

    snap = ctrl.create_vm_snapshot(VM, quiesce=True)

    assert snap.state == "failed"
    assert snap.error is not None and "quiesce deadline of 0.05s exceeded" in snap.error
    evs = events(ctrl, snap.id)
    types = [t for t, _ in evs]
    assert sorted(pools_of(evs, "Snapshot.DeadlineExceeded")) == ["pool-1", "pool-2"]
    [thaw] = [i for i, (t, d) in enumerate(evs) if t == "Snapshot.Unquiesced" and d["thawed"]]
    assert evs[thaw][1]["reason"] == "deadline"
    assert max(i for i, t in enumerate(types) if t == "Snapshot.DeadlineExceeded") < thaw
    late = [d["pool_id"] for t, d in evs[thaw:] if t == "VmSnapshot.DriverSnapshotTaken"]
    assert sorted(late) == ["pool-1", "pool-2"]
    deleted = [d["pool_id"] for t, d in evs if t == "VmSnapshot.DriverSnapshotDeleted"]
    assert sorted(deleted) == all_pools(3)
    vm = world.vm_state(VM)
    assert vm is not None and (vm["freeze_count"], vm["thaw_count"]) == (1, 1)
    nothing_left(ctrl, world, 3)


def test_recovery_undoes_every_group_without_a_recorded_answer(
    open_world: Any, tmp_path: Path
) -> None:
    ctrl, world = open_world(4)
    reader, _ = open_world(4)  # another controller on the same store and world
    all_in = barrier_gate(4)

    def take(pool: str) -> None:
        all_in(pool)
        if pool in ("pool-2", "pool-3"):  # pool-0's and pool-1's answers are saved first
            wait_for(lambda: len(taken(reader)) == 2, WAIT_S, "two answers saved")

    def die_after(inner_take: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            inner_take(*args, **kwargs)  # it took its snapshot; the process dies now
            raise SimulatedCrash("take_vm_snapshot")

        return call

    gate_drivers(ctrl, {"take_vm_snapshot": take})
    for pool_id in ("pool-2", "pool-3"):
        driver = ctrl._wiring.drivers[pool_id]
        ctrl._wiring.drivers[pool_id] = _Dying(driver, die_after)  # type: ignore[assignment]

    with pytest.raises(SimulatedCrash):
        ctrl.create_vm_snapshot(VM, quiesce=True)
    [sid] = [v.in_flight for v in ctrl.list_vms()]
    assert sid is not None
    ctrl.close()  # the process is gone; its claim is an orphan
    evs = events(reader, sid)
    assert sorted(pools_of(evs, "VmSnapshot.DriverSnapshotTaken")) == ["pool-0", "pool-1"]

    with Controller.from_config(tmp_path / "vmsnap.toml", recover=True) as restarted:
        view = restarted.get_vm_snapshot(sid)
        assert view.state == "failed"
        evs = events(restarted, sid)
        deleted = [d["pool_id"] for t, d in evs if t == "VmSnapshot.DriverSnapshotDeleted"]
        assert sorted(deleted) == all_pools(4)  # the two answered and the two unanswered
        nothing_left(restarted, world, 4)
        assert restarted.recover() == []


def test_calls_running_when_recovery_takes_over_are_waited_for_and_owed(tmp_path: Path) -> None:
    # A controller on another host, judged stopped (operation_timeout_s = 0) while two of
    # its calls still run: recovery compensates the snapshot; the two calls then take
    # their snapshots, which the fenced controller can no longer record: they are owed.
    config = load(write_config(tmp_path, wide_config(3)))
    expired = attrs.evolve(config, limits=attrs.evolve(config.limits, operation_timeout_s=0))
    recovered: list[Any] = []
    with (
        Controller(config) as slow,
        Controller(expired) as recovering,
        SimulatorWorld(tmp_path / STATE_FILE) as world,
    ):
        slow._runtime.owner = "another-host:4242:cafe"
        answered = threading.Event()

        def gate(pool: str) -> None:
            if pool == "pool-0":
                return
            if pool == "pool-1":  # once pool-0's answer is saved, recovery takes over
                wait_for(lambda: len(taken(recovering)) == 1, WAIT_S, "pool-0's answer")
                recovered.extend(recovering.recover())
                answered.set()
            assert answered.wait(WAIT_S)

        gate_drivers(slow, {"take_vm_snapshot": gate})
        with pytest.raises(OperationTakenOver):
            slow.create_vm_snapshot(VM, quiesce=True)

        [snap] = recovered
        assert snap.state == "failed"
        evs = events(recovering, snap.id)
        assert pools_of(evs, "VmSnapshot.DriverSnapshotTaken") == ["pool-0"]
        deleted = pools_of(evs, "VmSnapshot.DriverSnapshotDeleted")
        assert sorted(deleted) == all_pools(3)  # pool-0's and, by name, the unanswered two
        # The late takes were owed by the fenced controller and cleaned up at once.
        owed = [e.view.data for e in recovering.audit_export() if e.type == "Vm.OrphanOwed"]
        assert sorted(o["owed"]["target"] for o in owed) == ["pool-1", "pool-2"]
        types = [e.type for e in recovering.audit_export()]
        assert types.count("Vm.OrphanSettled") == 2
        nothing_left(recovering, world, 3)


def taken(ctrl: Controller) -> list[str]:
    """The driver answers stored so far, read from the log (the views may lag)."""
    return [e.type for e in ctrl.audit_export() if e.type == "VmSnapshot.DriverSnapshotTaken"]


class _Dying:
    def __init__(self, inner: Any, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]):
        self._inner = inner
        self._wrap = wrap

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        return self._wrap(attr) if name == "take_vm_snapshot" else attr
