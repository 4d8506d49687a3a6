"""
Recovery is fenced (invariant 9, ADR 0020), as a stateful property: operations by live
and by stopped controllers pause inside any hypervisor or driver call, several recovers
run at once, paused operations resume or die; whatever the interleaving:

- no recover thaws (or touches) an operation whose controller is alive;
- a dead operation is taken over exactly once, and every call a recover makes is recorded;
- an operation taken over while paused makes no call after it resumes, and says so;
- a snapshot recorded ``consistency: filesystem`` had its guest frozen around every driver
  call, as the simulated world saw it;
- at the end (everything dead, one more recover) no VM is frozen or claimed, and no backend
  snapshot of a failed or removed snapshot is left.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from tests.conftest import STATE_FILE, world_config
from tests.crash import WORKFLOW_CALLS, SimulatedCrash
from tests.support import wait_for, write_config
from vmsnap import Controller
from vmsnap.adapters.simulator import SimulatorWorld
from vmsnap.config import load
from vmsnap.domain.exceptions import OperationInProgress, OperationTakenOver, VmsnapError
from vmsnap.domain.values import SnapshotRef

VM = "vm-kvm"  # a KVM guest: quiesce freezes it, so every thaw is visible in the world
PREFIX = "vmsnap-"
CLEANUPS = {"unquiesce", "delete_vm_snapshot", "delete_snapshot"}


def snapshot_of(args: tuple[Any, ...]) -> str | None:
    for a in args:
        if isinstance(a, SnapshotRef):
            return a.id
        if isinstance(a, str) and a.startswith(PREFIX):
            return a[len(PREFIX) : len(PREFIX) + 36]
    return None


@attrs.define
class Call:
    owner: str
    op: str
    sid: str | None
    thaw: bool
    frozen_before: bool
    frozen_after: bool
    after_resume: bool


@attrs.define
class Journal:
    world: SimulatorWorld
    calls: list[Call] = attrs.Factory(list)
    lock: threading.Lock = attrs.Factory(threading.Lock)


@attrs.define(eq=False)
class Gate:
    """Where one operation pauses: its ``at``-th call, before or after the backend's work."""

    at: int
    after: bool
    count: int = 0
    paused: threading.Event = attrs.Factory(threading.Event)
    go: threading.Event = attrs.Factory(threading.Event)
    crash: bool = False
    resumed: bool = False
    paused_in: str | None = None
    lock: threading.Lock = attrs.Factory(threading.Lock)  # driver calls run together

    def hold(self, op: str) -> None:
        self.paused_in = op
        self.paused.set()
        self.go.wait()
        self.resumed = True
        if self.crash:
            raise SimulatedCrash("killed while paused")


class Watched:
    """Wraps one adapter: journals every workflow call and pauses at the gate."""

    def __init__(self, inner: Any, owner: Any, journal: Journal, gate: Gate | None) -> None:
        self._inner, self._owner, self._journal, self._gate = inner, owner, journal, gate

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in WORKFLOW_CALLS:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            gate = self._gate
            pause = False
            if gate is not None:
                with gate.lock:
                    gate.count += 1
                    pause = gate.count == gate.at
                if pause and not gate.after:
                    gate.hold(name)
            resumed = gate is not None and gate.resumed and not pause
            before = self._journal.world.is_frozen(VM)
            try:
                return attr(*args, **kwargs)
            finally:
                entry = Call(
                    self._owner(),
                    name,
                    snapshot_of(args),
                    bool(kwargs.get("thaw")),
                    before,
                    self._journal.world.is_frozen(VM),
                    resumed,
                )
                with self._journal.lock:
                    self._journal.calls.append(entry)
                if pause and gate is not None and gate.after:
                    gate.hold(name)

        return call


def watch(ctrl: Controller, journal: Journal, gate: Gate | None) -> None:
    wiring = ctrl._wiring

    def owner() -> str:
        return ctrl.owner

    for name, hv in list(wiring.hypervisors.items()):
        wiring.hypervisors[name] = Watched(hv, owner, journal, gate)  # type: ignore[assignment]
    for pool, driver in list(wiring.drivers.items()):
        wiring.drivers[pool] = Watched(driver, owner, journal, gate)  # type: ignore[assignment]


@attrs.define(eq=False)
class Op:
    ctrl: Controller
    gate: Gate
    remote: bool
    thread: threading.Thread | None = None
    outcome: Any = None
    claimed: str | None = None
    closed: bool = False

    @property
    def alive(self) -> bool:
        """Whether recovery must leave its operation alone."""
        return not self.remote and not self.closed

    def run(self, kind: str) -> None:
        def claimed(sid: str) -> None:
            self.claimed = sid

        def body() -> None:
            try:
                if kind == "vm":
                    self.outcome = self.ctrl.create_vm_snapshot(
                        VM, quiesce=True, on_claimed=claimed
                    )
                else:
                    self.outcome = self.ctrl.create_volume_snapshot(
                        "kvm-data", quiesce=True, on_claimed=claimed
                    )
            except (VmsnapError, SimulatedCrash) as e:
                self.outcome = e

        self.thread = threading.Thread(target=body, daemon=True)
        self.thread.start()
        wait_for(
            lambda: self.gate.paused.is_set() or not self.thread_alive(),
            30,
            "the operation to pause or end",
        )

    def thread_alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def release(self, *, crash: bool) -> None:
        self.gate.crash = crash
        self.gate.go.set()
        assert self.thread is not None
        self.thread.join(60)
        assert not self.thread.is_alive(), "a resumed operation did not end"
        if crash:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.ctrl.close()


class FencingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="vmsnap-fencing-"))
        path = write_config(self.folder, world_config(max_vm_snapshots_per_vm=1000))
        self.config = load(path)
        # Recovers judge another host's claim stopped at once: a live remote operation
        # is then taken over while it still runs (the hard case).
        self.recovering = attrs.evolve(
            self.config, limits=attrs.evolve(self.config.limits, operation_timeout_s=0)
        )
        self.world = SimulatorWorld(self.folder / STATE_FILE)
        self.journal = Journal(self.world)
        self.ops: list[Op] = []
        self.serial = 0

    # Rules --------------------------------------------------------------------------

    @precondition(lambda self: len(self.paused()) < 2)
    @rule(
        kind=st.sampled_from(["vm", "volume"]),
        remote=st.booleans(),
        at=st.integers(min_value=1, max_value=8),
        after=st.booleans(),
    )
    def start(self, kind: str, remote: bool, at: int, after: bool) -> None:
        ctrl = Controller(self.config)
        if remote:
            self.serial += 1
            ctrl._runtime.owner = f"remote-host:{self.serial}@1:cafe"
        op = Op(ctrl, Gate(at, after), remote)
        watch(ctrl, self.journal, op.gate)
        self.ops.append(op)
        op.run(kind)
        if not op.thread_alive():
            op.close()

    @precondition(lambda self: bool(self.paused()))
    @rule(data=st.data(), crash=st.booleans())
    def resume(self, data: st.DataObject, crash: bool) -> None:
        op = data.draw(st.sampled_from(self.paused()))
        op.release(crash=crash)
        sid = op.claimed
        if sid is not None and self.taken_over(sid):
            if not crash:
                assert isinstance(op.outcome, OperationTakenOver), op.outcome
            # It calls nothing more for its operation; only the cleanup of what its last
            # call left, under a claim of its own (the orphan ledger), may follow.
            late = [c for c in self.journal.calls if c.owner == op.ctrl.owner and c.after_resume]
            assert all(c.op in CLEANUPS for c in late), f"a taken-over operation went on: {late}"
        elif not crash and not isinstance(op.outcome, OperationInProgress):
            assert not isinstance(op.outcome, BaseException), op.outcome
        if not crash:
            op.close()

    @rule(k=st.integers(min_value=1, max_value=3))
    def recover(self, k: int) -> None:
        alive = {op.claimed for op in self.ops if op.alive and op.claimed}
        start = len(self.journal.calls)
        recovering = self.concurrent_recovers(k)
        # Only the recovers' calls: a paused live operation's other driver calls of the
        # same batch (ADR 0024) go on meanwhile, as they should.
        for call in self.journal.calls[start:]:
            if call.owner in recovering:
                assert call.sid not in alive, f"recover called {call.op} on a live operation"
        for sid in alive:
            assert not self.taken_over(sid), f"recover took over the live operation {sid}"

    # Checks -------------------------------------------------------------------------

    @contextlib.contextmanager
    def reader(self) -> Iterator[Controller]:
        with Controller(self.config) as ctrl:
            yield ctrl

    def paused(self) -> list[Op]:
        return [op for op in self.ops if op.thread_alive()]

    def concurrent_recovers(self, k: int) -> set[str]:
        """Run ``k`` recovers at once; return their controllers' owners."""
        ctrls = [Controller(self.recovering) for _ in range(k)]
        for c in ctrls:
            watch(c, self.journal, None)
        errors: list[BaseException] = []

        def run(c: Controller) -> None:
            try:
                c.recover()
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=run, args=(c,)) for c in ctrls]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for c in ctrls:
            c.close()
        assert errors == []
        return {c.owner for c in ctrls}

    def events(self, sid: str) -> list[Any]:
        with self.reader() as ctrl:
            return list(ctrl.audit_timeline(snapshot_id=sid))

    def taken_over(self, sid: str) -> bool:
        return any(e.type == "Snapshot.RecoveryStarted" for e in self.events(sid))

    def check_snapshot(self, sid: str, ctrl: Controller) -> None:
        events = self.events(sid)
        takeovers = [e for e in events if e.type == "Snapshot.RecoveryStarted"]
        assert len(takeovers) <= 1, f"{sid} was taken over {len(takeovers)} times"
        recorded = sum(
            1
            for e in events
            if e.type == "Snapshot.Unquiesced"
            or (e.type == "Snapshot.CallFailed" and e.data["op"] == "unquiesce")
        )
        settled = [
            e
            for e in ctrl.audit_export()
            if e.type in ("Vm.OrphanSettled", "Vm.OrphanCleanupFailed")
            and e.data["key"].startswith(("thaw:", "release:"))
            and sid in e.data["key"]
        ]
        made = [c for c in self.journal.calls if c.sid == sid and c.op == "unquiesce"]
        # The one call a taken-over operation was paused inside has no recorded answer.
        inside = [op for op in self.ops if op.claimed == sid and op.gate.paused_in == "unquiesce"]
        allowed = len(takeovers) if inside else 0
        assert len(made) <= recorded + len(settled) + allowed, (sid, made, recorded)
        view: Any = ctrl.snapshot(sid)
        consistency = getattr(view, "consistency", "filesystem" if view.quiesced else "crash")
        if view.state == "ready" and consistency == "filesystem":
            takes = [
                c for c in self.journal.calls if c.sid == sid and c.op == "take_vm_snapshot"
            ] + [c for c in self.journal.calls if c.sid == sid and c.op == "take_snapshot"]
            assert takes, sid
            for c in takes:
                assert c.frozen_before and c.frozen_after, f"{sid}: thawed around {c}"
        if view.state in ("failed", "removed"):
            shown = self.world.show()
            names = [n for v in shown["vms"].values() for n in v["hypervisor_snapshots"]]
            names += [n for v in shown["volumes"].values() for n in v["snapshots"]]
            assert [n for n in names if sid in n] == [], f"{sid} left {names}"

    def teardown(self) -> None:
        try:
            for op in self.paused():
                op.release(crash=True)
            for op in self.ops:
                op.close()
            self.concurrent_recovers(2)
            with self.reader() as ctrl:
                assert [v.id for v in ctrl.list_vms() if v.in_flight or v.frozen] == []
                assert not self.world.is_frozen(VM)
                for op in self.ops:
                    if op.claimed is not None:
                        self.check_snapshot(op.claimed, ctrl)
                assert ctrl.audit_verify().ok
        finally:
            self.world.close()
            shutil.rmtree(self.folder, ignore_errors=True)


# Each step runs real controllers and threads: no shrinking (it takes minutes here); a
# failure prints its whole program of steps, which replays as it is.
FencingMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
TestRecoveryFencing = FencingMachine.TestCase
