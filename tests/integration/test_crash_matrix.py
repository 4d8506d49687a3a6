"""
Crash matrix, in process: a Controller dies at every hypervisor or driver call of a
create, revert and delete (before the call, and after it did its work but before its
answer was recorded); a new Controller started with recovery enabled must end the
operation, leave the VM thawed, and leave no backend snapshot behind that no snapshot owns.

(The SIGKILL tests of a real ``vmsnap`` process are in tests/e2e/test_crash_recovery.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.conftest import STATE_FILE, world_config
from tests.crash import SimulatedCrash, die_at_call
from tests.support import write_config
from vmsnap import Controller
from vmsnap.adapters.simulator import SimulatorWorld
from vmsnap.config import load

MAX_CALLS = 12  # more than any operation here makes


def backend_names(world: SimulatorWorld, sid: str) -> list[str]:
    """Every hypervisor or volume snapshot in the world that belongs to snapshot ``sid``."""
    shown = world.show()
    names = [n for vm in shown["vms"].values() for n in vm["hypervisor_snapshots"]]
    names += [n for vol in shown["volumes"].values() for n in vol["snapshots"]]
    return [n for n in names if sid in n]


def frozen_vms(world: SimulatorWorld) -> list[str]:
    return [vm for vm, state in world.show()["vms"].items() if state["frozen"]]


Prepare = Callable[[Controller], str | None]  # returns the snapshot the operation acts on
Act = Callable[[Controller, str | None], Any]

SCENARIOS: dict[str, tuple[Prepare, Act, str]] = {
    # name: (prepare, operation, state after recovery)
    "create, storage strategy on kvm (freezes)": (
        lambda c: None,
        lambda c, _: c.create_vm_snapshot("vm-kvm", quiesce=True),
        "failed",
    ),
    "create, storage strategy on vmware (temporary snapshot)": (
        lambda c: None,
        lambda c, _: c.create_vm_snapshot("vm-san", quiesce=True),
        "failed",
    ),
    "create, hypervisor strategy": (
        lambda c: None,
        lambda c, _: c.create_vm_snapshot("vm-plain", quiesce=True),
        "failed",
    ),
    "quiesced volume snapshot on kvm": (
        lambda c: None,
        lambda c, _: c.create_volume_snapshot("kvm-data", quiesce=True),
        "failed",
    ),
    "revert": (
        lambda c: c.create_vm_snapshot("vm-kvm", quiesce=True).id,
        lambda c, sid: c.revert_vm_snapshot(sid),  # type: ignore[arg-type]
        "ready",
    ),
    "delete": (
        lambda c: c.create_vm_snapshot("vm-kvm", quiesce=True).id,
        lambda c, sid: c.delete_vm_snapshot(sid),  # type: ignore[arg-type]
        "removed",
    ),
    "delete of a volume snapshot": (
        lambda c: c.create_volume_snapshot("kvm-data", quiesce=True).id,
        lambda c, sid: c.delete_volume_snapshot(sid),  # type: ignore[arg-type]
        "removed",
    ),
}


def _in_flight(ctrl: Controller) -> str:
    [vm] = [v for v in ctrl.list_vms() if v.in_flight is not None]
    assert vm.in_flight is not None
    return vm.in_flight


def _state(ctrl: Controller, sid: str) -> tuple[str, str | None]:
    try:
        view: Any = ctrl.get_vm_snapshot(sid)
    except LookupError:
        view = ctrl.get_volume_snapshot(sid)
    return view.state, view.error


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("after", [False, True], ids=["before-the-call", "after-the-call"])
def test_a_controller_that_dies_at_any_call_is_recovered_cleanly(
    tmp_path: Path, scenario: str, after: bool
) -> None:
    prepare, act, recovered_state = SCENARIOS[scenario]
    crashes = 0
    for n in range(1, MAX_CALLS + 1):
        folder = tmp_path / f"call-{n}"
        folder.mkdir()
        config = write_config(folder, world_config())
        with Controller.from_config(config) as setup:
            target = prepare(setup)
        dying = Controller.from_config(config)
        countdown = die_at_call(dying, n, after=after)
        try:
            act(dying, target)
        except SimulatedCrash:
            sid = _in_flight(dying)
        finally:
            dying.close()  # the process is gone: its claim is now an orphan
        if countdown.fired is None:
            break  # the operation makes fewer than n calls: every call has been tried
        crashes += 1
        with (
            Controller.from_config(config, recover=True) as restarted,
            SimulatorWorld(folder / STATE_FILE) as world,
        ):
            where = f"died in call {n} ({countdown.fired}, {'after' if after else 'before'})"
            state, error = _state(restarted, sid)
            assert state == recovered_state, where
            if recovered_state != "removed":
                assert error is not None and "recovered after the controller" in error, where
            assert frozen_vms(world) == [], where
            assert [v.id for v in restarted.list_vms() if v.in_flight or v.frozen] == [], where
            if state in ("failed", "removed"):
                assert backend_names(world, sid) == [], where
            report = restarted.audit_verify()
            assert report.ok, (where, report.problems)
            assert restarted.recover() == [], "a second recover found work to do"
            reconciled = restarted.reconcile()
            assert reconciled.ok, (where, reconciled.to_dict())
    assert crashes >= 1


def test_a_claim_from_another_host_is_recovered_only_after_the_operation_timeout(
    tmp_path: Path,
) -> None:
    config = load(write_config(tmp_path, world_config()))
    dying = Controller(config)
    dying._runtime.owner = "another-host:4242:cafe"  # a controller on another machine
    die_at_call(dying, 2, after=True)
    with pytest.raises(SimulatedCrash):
        dying.create_vm_snapshot("vm-kvm", quiesce=True)
    dying.close()

    with Controller(config) as patient:
        assert patient.recover() == []  # the other host may still be working on it
        [claimed] = [v for v in patient.list_vms() if v.in_flight]
        assert claimed.in_flight_since is not None

    expired = attrs.evolve(config, limits=attrs.evolve(config.limits, operation_timeout_s=0))
    with Controller(expired) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        [recovered] = ctrl.recover()
        assert recovered.state == "failed"
        assert frozen_vms(world) == []
        assert backend_names(world, recovered.id) == []
