"""
Pre-freeze and post-thaw hooks (issue 19, ADR 0026) on the simulator: the order of the
calls, what is recorded, and the post-thaw hook running exactly once on every path:
success, a failed pre hook under each policy, a failed driver, the quiesce deadline, a
failed thaw, and a controller that died after the pre hook, after the thaw, or inside the
post hook (recover runs it, or reports it when it was started and never ended).

The simulated guest logs every ``guest_exec`` (``simulator show``): that log is what
proves how often each hook ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.conftest import STATE_FILE, VendorPool, world_config
from tests.support import WAIT_S, Config, wait_for, write_config
from vmsnap import Controller
from vmsnap.adapters import simulator_world as simulator
from vmsnap.adapters.simulator import SimulatorWorld
from vmsnap.flows import hooks as hooks_module

VM = "vm-kvm"  # KVM: the quiesce freezes the guest until it is thawed
PRE = ["/usr/local/bin/db-quiesce", "--flush"]
POST = ["/usr/local/bin/db-resume"]
FAILS = ["/bin/false"]


def hooked(
    pre: list[str] | None = PRE,
    post: list[str] | None = POST,
    *,
    policy: str = "fail",
    idempotent: bool = False,
    count_in_deadline: bool = False,
    vms: tuple[str, ...] = (VM,),
    **world: Any,
) -> Config:
    """The test world with hooks on ``vms``, the other VMs unchanged."""
    hooks: dict[str, Any] = {"on_pre_freeze_failure": policy}
    if pre is not None:
        hooks["pre_freeze"] = {"run": pre, "where": "guest", "timeout_s": 10}
    if post is not None:
        hooks["post_thaw"] = {"run": post, "where": "guest", "idempotent": idempotent}
    if count_in_deadline:
        hooks["count_in_deadline"] = True
    config = world_config(**world)
    tables = [{**v, "hooks": hooks} if v["id"] in vms else v for v in config.vms]
    return attrs.evolve(config, vms=tables)


def guest_runs(world: SimulatorWorld, vm: str = VM) -> list[list[str]]:
    """The argv of every command the simulated guest of ``vm`` ran (or refused), in order."""
    return [c["result"]["argv"] if c["ok"] else ["(failed)"] for c in _execs(world, vm)]


def _execs(world: SimulatorWorld, vm: str) -> list[dict[str, Any]]:
    return [c for c in world.calls(vm) if c["op"] == "guest_exec"]


def ops(world: SimulatorWorld, vm: str = VM) -> list[str]:
    """The hypervisor calls of ``vm``, hook runs named by their program."""
    named = []
    for c in world.calls(vm):
        if c["op"] == "guest_exec":
            named.append(c["result"]["argv"][0] if c["ok"] else "guest_exec (failed)")
        elif c["target"] in ("kvm1", "esx1"):  # the hypervisors, not the pools
            named.append(c["op"])
    return named


def types(ctrl: Controller, sid: str) -> list[str]:
    return [e.type for e in ctrl.audit_timeline(snapshot_id=sid)]


def open_world(tmp_path: Path, config: Config) -> tuple[Controller, SimulatorWorld]:
    path = write_config(tmp_path, config)
    return Controller.from_config(path), SimulatorWorld(tmp_path / STATE_FILE)


# -- the success path --------------------------------------------------------------------------


def test_the_hooks_run_around_the_freeze_and_make_the_snapshot_application_consistent(
    tmp_path: Path,
) -> None:
    ctrl, world = open_world(tmp_path, hooked())
    with ctrl, world:
        snap = ctrl.create_vm_snapshot(VM, quiesce=True)
        assert (snap.state, snap.consistency) == ("ready", "application")
        assert ops(world) == [PRE[0], "quiesce", "unquiesce", POST[0]]
        assert guest_runs(world) == [PRE, POST]
        assert [(h.hook, h.status, h.exit_code, list(h.run)) for h in snap.hooks] == [
            ("pre_freeze", "ok", 0, PRE),
            ("post_thaw", "ok", 0, POST),
        ]
        order = types(ctrl, snap.id)
        assert order.index("Snapshot.PostHookOwed") < order.index("Snapshot.HookStarted")
        assert order.index("Snapshot.HookEnded") < order.index("Snapshot.QuiesceStarted")
        assert order[-5:] == [
            "Snapshot.UnquiesceDecided",
            "Snapshot.Unquiesced",
            "Snapshot.HookStarted",
            "Snapshot.HookEnded",
            "Snapshot.Completed",
        ]
        shown = ctrl.get_vm_snapshot(snap.id).to_dict()
        post = next(h for h in shown["hooks"] if h["hook"] == "post_thaw")
        assert (post["where"], post["status"], post["output"]) == ("guest", "ok", "")
        assert isinstance(post["duration_ms"], int)
        assert ctrl.audit_verify().ok
        assert ctrl.reconcile().ok


def test_other_vms_and_unquiesced_snapshots_run_no_hooks(tmp_path: Path) -> None:
    ctrl, world = open_world(tmp_path, hooked())
    with ctrl, world:
        assert ctrl.create_vm_snapshot(VM, quiesce=False).hooks == ()
        assert ctrl.create_vm_snapshot("vm-san", quiesce=True).consistency == "filesystem"
        assert _execs(world, VM) == _execs(world, "vm-san") == []


def test_a_quiesced_volume_snapshot_runs_the_hooks_around_its_freeze(tmp_path: Path) -> None:
    ctrl, world = open_world(tmp_path, hooked())
    with ctrl, world:
        snap = ctrl.create_volume_snapshot("kvm-data", quiesce=True)
        assert (snap.state, snap.consistency) == ("ready", "application")
        assert ops(world) == [PRE[0], "quiesce", "unquiesce", POST[0]]
        assert [h.status for h in snap.hooks] == ["ok", "ok"]


def test_the_hypervisor_strategy_runs_the_hooks_around_its_take(tmp_path: Path) -> None:
    ctrl, world = open_world(tmp_path, hooked(vms=("vm-plain",)))
    with ctrl, world:
        snap = ctrl.create_vm_snapshot("vm-plain", quiesce=True)
        assert (snap.strategy, snap.consistency) == ("hypervisor", "application")
        assert ops(world, "vm-plain") == [PRE[0], "take_vm_snapshot", POST[0]]


def test_a_post_hook_alone_is_owed_from_the_quiesce(tmp_path: Path) -> None:
    ctrl, world = open_world(tmp_path, hooked(pre=None))
    with ctrl, world:
        snap = ctrl.create_vm_snapshot(VM, quiesce=True)
        # No pre hook ran: the freeze alone gives a filesystem-consistent snapshot.
        assert (snap.state, snap.consistency) == ("ready", "filesystem")
        assert ops(world) == ["quiesce", "unquiesce", POST[0]]
        order = types(ctrl, snap.id)
        assert order.index("Snapshot.PostHookOwed") < order.index("Snapshot.QuiesceStarted")


def test_a_hook_s_output_and_exit_code_are_recorded_and_capped(tmp_path: Path) -> None:
    ctrl, world = open_world(
        tmp_path, hooked(pre=["/bin/echo", "x" * 5000], post=["/bin/exit", "3"])
    )
    with ctrl, world:
        snap = ctrl.create_vm_snapshot(VM, quiesce=True)
        pre, post = snap.hooks
        assert (pre.status, len(pre.output)) == ("ok", 4096)
        assert (post.status, post.exit_code) == ("failed", 3)
        # A failed post hook leaves the snapshot ready, with an alert on the VM.
        assert (snap.state, snap.consistency) == ("ready", "application")
        [vm] = [v for v in ctrl.list_vms() if v.id == VM]
        assert vm.alert is not None and "post-thaw hook /bin/exit" in vm.alert


# -- the pre-freeze hook fails ------------------------------------------------------------------


def test_a_failed_pre_hook_with_fail_fails_the_snapshot_and_still_runs_the_post_hook(
    tmp_path: Path,
) -> None:
    ctrl, world = open_world(tmp_path, hooked(pre=FAILS))
    with ctrl, world:
        snap = ctrl.create_vm_snapshot(VM, quiesce=True)
        assert snap.state == "failed"
        assert snap.error is not None and "pre-freeze hook /bin/false failed" in snap.error
        assert ops(world) == [FAILS[0], POST[0]]  # never frozen; released all the same
        assert ctrl.audit_verify().ok
        assert ctrl.reconcile().ok


def test_a_failed_pre_hook_with_continue_takes_a_snapshot_that_is_not_app_consistent(
    tmp_path: Path,
) -> None:
    ctrl, world = open_world(tmp_path, hooked(pre=FAILS, policy="continue"))
    with ctrl, world:
        snap = ctrl.create_vm_snapshot(VM, quiesce=True)
        assert (snap.state, snap.consistency) == ("ready", "filesystem")
        assert ops(world) == [FAILS[0], "quiesce", "unquiesce", POST[0]]
        assert sorted(h.status for h in snap.hooks) == ["failed", "ok"]


def test_a_pre_hook_past_its_timeout_is_killed_and_counts_as_failed(tmp_path: Path) -> None:
    ctrl, world = open_world(tmp_path, hooked(pre=["/bin/sleep", "60"]))
    with ctrl, world:
        snap = ctrl.create_vm_snapshot(VM, quiesce=True)
        assert snap.state == "failed"
        assert snap.error is not None and "killed at its timeout" in snap.error
        pre = next(h for h in snap.hooks if h.hook == "pre_freeze")
        assert (pre.status, pre.exit_code) == ("timed-out", None)
        assert guest_runs(world) == [["/bin/sleep", "60"], POST]


def test_a_guest_that_cannot_run_commands_fails_the_hook_with_the_agent_s_error(
    tmp_path: Path,
) -> None:
    config = hooked(hypervisor_faults={"kvm1": {"guest_exec": "fail"}})
    ctrl, world = open_world(tmp_path, config)
    with ctrl, world:
        snap = ctrl.create_vm_snapshot(VM, quiesce=True)
        assert snap.state == "failed"
        assert [(h.status, h.error) for h in snap.hooks][-1] == (
            "failed",
            "simulated failure: guest_exec on kvm1",
        )
        # The post hook was tried once, whatever answered.
        assert guest_runs(world) == [["(failed)"], ["(failed)"]]


# -- later failures: the post hook still runs once ----------------------------------------------


def test_a_failed_driver_runs_the_post_hook_once_after_the_thaw(tmp_path: Path) -> None:
    config = hooked(netapp=VendorPool(faults={"take_vm_snapshot": "fail"}))
    ctrl, world = open_world(tmp_path, config)
    with ctrl, world:
        snap = ctrl.create_vm_snapshot(VM, quiesce=True)
        assert snap.state == "failed"
        assert ops(world) == [PRE[0], "quiesce", "unquiesce", POST[0]]
        assert guest_runs(world) == [PRE, POST]
        assert ctrl.audit_verify().ok


def test_a_failed_thaw_still_runs_the_post_hook_once(tmp_path: Path) -> None:
    config = hooked(hypervisor_faults={"kvm1": {"unquiesce": "fail"}})
    ctrl, world = open_world(tmp_path, config)
    with ctrl, world:
        snap = ctrl.create_vm_snapshot(VM, quiesce=True)
        assert snap.state == "failed"
        assert guest_runs(world) == [PRE, POST]
        assert ops(world)[-1] == POST[0]
        [vm] = [v for v in ctrl.list_vms() if v.id == VM]
        assert vm.alert is not None and "may still be frozen" in vm.alert


def _hold_until_thawed(tmp_path: Path) -> Callable[[float], None]:
    def hold(_seconds: float) -> None:
        with SimulatorWorld(tmp_path / STATE_FILE) as world:
            wait_for(lambda: not world.is_frozen(VM), WAIT_S, f"{VM} to be thawed")

    return hold


@pytest.fixture
def held_until_thawed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delayed simulated call lasts until the VM is thawed: the deadline passes first."""
    monkeypatch.setattr(simulator, "_sleep", _hold_until_thawed(tmp_path))


@pytest.mark.usefixtures("held_until_thawed")
def test_the_quiesce_deadline_runs_the_post_hook_once(tmp_path: Path) -> None:
    config = hooked(netapp=VendorPool(delay_s={"take_vm_snapshot": 1}), quiesce_deadline_s=0.05)
    ctrl, world = open_world(tmp_path, config)
    with ctrl, world:
        snap = ctrl.create_vm_snapshot(VM, quiesce=True)
        assert snap.state == "failed"
        assert snap.error is not None and "quiesce deadline" in snap.error
        assert guest_runs(world) == [PRE, POST]
        assert ctrl.audit_verify().ok


class _SlowPreHook:
    """The hooks module's clock: the first hook it times seems to take two minutes."""

    def __init__(self) -> None:
        self.calls = 0

    def monotonic(self) -> float:
        self.calls += 1
        return time.monotonic() + (120.0 if self.calls >= 2 else 0.0)


@pytest.mark.parametrize("count", [False, True])
def test_count_in_deadline_takes_the_pre_hook_s_time_from_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: bool
) -> None:
    monkeypatch.setattr(hooks_module, "time", _SlowPreHook())
    config = hooked(count_in_deadline=count, quiesce_deadline_s=60)
    if count:  # the driver call then runs until the deadline thaws the VM
        config = hooked(
            count_in_deadline=True,
            quiesce_deadline_s=60,
            netapp=VendorPool(delay_s={"take_vm_snapshot": 1}),
        )
        monkeypatch.setattr(simulator, "_sleep", _hold_until_thawed(tmp_path))
    ctrl, world = open_world(tmp_path, config)
    with ctrl, world:
        snap = ctrl.create_vm_snapshot(VM, quiesce=True)
        if count:  # 120 s of pre hook left nothing of the 60 s deadline
            assert snap.state == "failed"
            assert snap.error is not None and "quiesce deadline of 60s exceeded" in snap.error
        else:
            assert (snap.state, snap.consistency) == ("ready", "application")
        assert guest_runs(world) == [PRE, POST]


def test_the_human_timeline_shows_the_hooks_in_the_freeze_picture(tmp_path: Path) -> None:
    from vmsnap import render

    ctrl, world = open_world(tmp_path, hooked())
    with ctrl, world:
        snap = ctrl.create_vm_snapshot(VM, quiesce=True)
        failed = ctrl.create_vm_snapshot(VM, quiesce=True, name="again")
        text = render.frozen_text(ctrl.audit_timeline(vm_id=VM))
    lines = text.splitlines()
    frozen = next(i for i, line in enumerate(lines) if snap.id in line)
    assert (
        "before the freeze: pre_freeze (guest) /usr/local/bin/db-quiesce --flush: ok"
        in (lines[frozen + 1])
    )
    assert (
        "after the thaw: post_thaw (guest) /usr/local/bin/db-resume: ok (exit 0"
        in (lines[frozen + 2])
    )
    assert failed.id in text


def test_a_failed_pre_hook_fails_a_volume_snapshot_and_still_runs_the_post_hook(
    tmp_path: Path,
) -> None:
    ctrl, world = open_world(tmp_path, hooked(pre=FAILS))
    with ctrl, world:
        snap = ctrl.create_volume_snapshot("kvm-data", quiesce=True)
        assert snap.state == "failed"
        assert ops(world) == [FAILS[0], POST[0]]
        assert world.volume_snapshots("kvm-data") == []
        assert ctrl.audit_verify().ok


def test_a_hypervisor_without_guest_commands_refuses_guest_exec() -> None:
    from types import SimpleNamespace

    from vmsnap.domain.exceptions import DriverError
    from vmsnap.domain.ports import Hypervisor
    from vmsnap.domain.values import VmInfo

    # The port's default, for adapters that do not override it.
    hv: Any = SimpleNamespace(name="kvm-lab")
    vm = VmInfo("db-1", "kvm-lab", "Running", ())
    with pytest.raises(DriverError, match="hypervisor kvm-lab cannot run commands inside guests"):
        Hypervisor.guest_exec(hv, vm, ["/bin/true"], timeout_s=1)
