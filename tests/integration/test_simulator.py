from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.support import wait_for
from vmsnap.adapters import simulator_world as simulator
from vmsnap.adapters.simulator import SimulatorHypervisor, SimulatorStorage, SimulatorWorld
from vmsnap.domain.exceptions import ConfigError, DriverError
from vmsnap.domain.values import Capabilities, PoolInfo, SnapshotRef, VmInfo, VolumeInfo

VOL_ROOT = VolumeInfo("vol-1", "vm-1", "primary-1", "ROOT")
VOL_DATA = VolumeInfo("vol-2", "vm-1", "netapp-1")
VOL_LOG = VolumeInfo("vol-3", "vm-1", "netapp-1")
VM = VmInfo("vm-1", "hv-1", "Running", (VOL_ROOT, VOL_DATA, VOL_LOG))
NETAPP = PoolInfo("netapp-1", "NetApp 1", "simulator")
CAPS = Capabilities(volume_snapshot_quiescevm=True, storage_system_snapshot=True)
QUIESCED = SnapshotRef("s1", "vm-1", "vmsnap-s1", quiesce=True)
UNQUIESCED = SnapshotRef("s2", "vm-1", "vmsnap-s2", quiesce=False)
WAIT_S = 60.0  # the most any test waits for another thread or process


@pytest.fixture
def world(tmp_path: Path) -> SimulatorWorld:
    return SimulatorWorld(tmp_path / "sim-state.json")


def hypervisor(world: SimulatorWorld, profile: str = "kvm", **kwargs: Any) -> SimulatorHypervisor:
    return SimulatorHypervisor("hv-1", profile, world, **kwargs)


def storage(world: SimulatorWorld, **kwargs: Any) -> SimulatorStorage:
    return SimulatorStorage(NETAPP, world, CAPS, **kwargs)


def run_python(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=True,
    )
    return done.stdout


SHOW_IN_A_PROCESS = """
import json, sys
from vmsnap.adapters.simulator import SimulatorWorld
print(json.dumps(SimulatorWorld(sys.argv[1]).show()))
"""


# -- profiles --------------------------------------------------------------------------------


def test_vmware_quiesces_the_guest_in_a_temporary_hypervisor_snapshot(
    world: SimulatorWorld,
) -> None:
    result = hypervisor(world, "vmware").quiesce(VM, QUIESCED, memory=False)

    assert (result.frozen, result.quiesced) == (False, True)
    assert result.hypervisor_snapshot == "vmsnap-s1-quiesce"
    assert world.hypervisor_snapshots("vm-1") == ["vmsnap-s1-quiesce"]
    assert not world.is_frozen("vm-1")


def test_vmware_does_not_quiesce_the_guest_when_not_asked(world: SimulatorWorld) -> None:
    result = hypervisor(world, "vmware").quiesce(VM, UNQUIESCED, memory=False)

    assert (result.frozen, result.quiesced) == (False, False)
    assert "crash-consistent" in result.detail


def test_xenserver_ignores_quiesce_and_says_the_snapshot_is_crash_consistent(
    world: SimulatorWorld,
) -> None:
    result = hypervisor(world, "xenserver").quiesce(VM, QUIESCED, memory=False)

    assert (result.frozen, result.quiesced) == (False, False)
    assert "ignores the quiesce option" in result.detail
    assert "crash-consistent" in result.detail
    assert world.hypervisor_snapshots("vm-1") == ["vmsnap-s1-quiesce"]


def test_kvm_freezes_the_guest_on_quiesce_and_thaws_it_on_unquiesce(world: SimulatorWorld) -> None:
    kvm = hypervisor(world, "kvm")

    result = kvm.quiesce(VM, QUIESCED, memory=False)
    assert (result.frozen, result.quiesced) == (True, True)
    assert world.is_frozen("vm-1")

    done = kvm.unquiesce(VM, QUIESCED, thaw=True, release=result.hypervisor_snapshot)
    assert "thawed" in done and "released" in done
    assert world.vm_state("vm-1") == {
        "frozen": False,
        "freeze_count": 1,
        "thaw_count": 1,
        "hypervisor_snapshots": [],
    }


def test_kvm_does_not_freeze_the_guest_when_quiesce_is_not_asked(world: SimulatorWorld) -> None:
    result = hypervisor(world, "kvm").quiesce(VM, UNQUIESCED, memory=False)

    assert (result.frozen, result.quiesced) == (False, False)
    assert not world.is_frozen("vm-1")
    assert world.vm_state("vm-1") == {
        "frozen": False,
        "freeze_count": 0,
        "thaw_count": 0,
        "hypervisor_snapshots": ["vmsnap-s2-quiesce"],
    }


def test_unquiesce_without_release_keeps_the_temporary_snapshot(world: SimulatorWorld) -> None:
    kvm = hypervisor(world, "kvm")
    kvm.quiesce(VM, QUIESCED, memory=False)

    kvm.unquiesce(VM, QUIESCED, thaw=True, release=None)

    assert not world.is_frozen("vm-1")
    assert world.hypervisor_snapshots("vm-1") == ["vmsnap-s1-quiesce"]


def test_releasing_a_temporary_snapshot_twice_is_harmless(world: SimulatorWorld) -> None:
    vmware = hypervisor(world, "vmware")
    vmware.quiesce(VM, QUIESCED, memory=False)
    vmware.unquiesce(VM, QUIESCED, thaw=False, release="vmsnap-s1-quiesce")

    done = vmware.unquiesce(VM, QUIESCED, thaw=False, release="vmsnap-s1-quiesce")

    assert "already gone" in done
    assert world.hypervisor_snapshots("vm-1") == []
    assert [c["ok"] for c in world.calls()] == [True, True, True]


def test_quiescing_a_frozen_vm_fails_and_leaves_it_as_it_was(world: SimulatorWorld) -> None:
    kvm = hypervisor(world, "kvm")
    kvm.quiesce(VM, QUIESCED, memory=False)

    with pytest.raises(DriverError, match="vm vm-1 is already frozen"):
        kvm.quiesce(VM, SnapshotRef("s3", "vm-1", "vmsnap-s3", quiesce=True), memory=False)

    assert world.hypervisor_snapshots("vm-1") == ["vmsnap-s1-quiesce"]
    assert world.vm_state("vm-1") == {
        "frozen": True,
        "freeze_count": 1,
        "thaw_count": 0,
        "hypervisor_snapshots": ["vmsnap-s1-quiesce"],
    }
    last = world.calls()[-1]
    assert (last["op"], last["ok"], last["error"]) == (
        "quiesce",
        False,
        "vm vm-1 is already frozen",
    )


@pytest.mark.parametrize(
    ("profile", "quiesced"), [("vmware", True), ("xenserver", False), ("kvm", True)]
)
def test_a_hypervisor_vm_snapshot_is_quiesced_where_the_profile_honours_it(
    world: SimulatorWorld, profile: str, quiesced: bool
) -> None:
    taken = hypervisor(world, profile).take_vm_snapshot(VM, QUIESCED, memory=True)

    assert (taken.name, taken.quiesced, taken.memory) == ("vmsnap-s1", quiesced, True)
    assert world.hypervisor_snapshots("vm-1") == ["vmsnap-s1"]
    assert world.calls()[-1]["result"]["quiesced"] is quiesced


def test_a_kvm_vm_snapshot_with_quiesce_freezes_and_thaws_inside_the_call(
    world: SimulatorWorld,
) -> None:
    hypervisor(world, "kvm").take_vm_snapshot(VM, QUIESCED, memory=False)

    assert world.vm_state("vm-1") == {
        "frozen": False,
        "freeze_count": 1,
        "thaw_count": 1,
        "hypervisor_snapshots": ["vmsnap-s1"],
    }


def test_an_unknown_profile_is_a_config_error(world: SimulatorWorld) -> None:
    with pytest.raises(ConfigError, match="profile"):
        SimulatorHypervisor("hv-1", "hyperv", world)


# -- hypervisor snapshots, volume snapshots and storage ------------------------------------


def test_reverting_to_a_missing_hypervisor_snapshot_fails_and_is_logged(
    world: SimulatorWorld,
) -> None:
    with pytest.raises(DriverError, match="no hypervisor snapshot nope") as caught:
        hypervisor(world).revert_vm_snapshot(VM, "nope")

    assert caught.value.code == "NOT_FOUND"
    assert world.calls()[-1]["ok"] is False


def test_reverting_to_an_existing_hypervisor_snapshot_succeeds(world: SimulatorWorld) -> None:
    kvm = hypervisor(world)
    kvm.take_vm_snapshot(VM, UNQUIESCED, memory=False)

    kvm.revert_vm_snapshot(VM, "vmsnap-s2")

    assert [(c["op"], c["ok"]) for c in world.calls()] == [
        ("take_vm_snapshot", True),
        ("revert_vm_snapshot", True),
    ]


def test_deleting_a_hypervisor_snapshot_twice_succeeds(world: SimulatorWorld) -> None:
    kvm = hypervisor(world)
    kvm.take_vm_snapshot(VM, UNQUIESCED, memory=False)

    kvm.delete_vm_snapshot(VM, "vmsnap-s2")
    kvm.delete_vm_snapshot(VM, "vmsnap-s2")

    assert world.hypervisor_snapshots("vm-1") == []
    assert all(c["ok"] for c in world.calls())


def test_volume_snapshots_through_the_hypervisor_are_kept_per_volume(world: SimulatorWorld) -> None:
    kvm = hypervisor(world)

    assert kvm.take_volume_snapshot(VM, VOL_ROOT, "a") == "a"
    kvm.take_volume_snapshot(VM, VOL_ROOT, "b")
    kvm.delete_volume_snapshot(VM, VOL_ROOT, "a")
    kvm.delete_volume_snapshot(VM, VOL_ROOT, "a")

    assert world.volume_snapshots("vol-1") == ["b"]
    assert [c["op"] for c in world.calls()] == [
        "take_volume_snapshot",
        "take_volume_snapshot",
        "delete_volume_snapshot",
        "delete_volume_snapshot",
    ]
    assert {(c["target"], c["vm_id"], tuple(c["volumes"])) for c in world.calls()} == {
        ("hv-1", "vm-1", ("vol-1",))
    }


@pytest.mark.parametrize("need_unquiesce", [True, False])
def test_storage_answers_the_configured_need_unquiesce(
    world: SimulatorWorld, need_unquiesce: bool
) -> None:
    netapp = storage(world, need_unquiesce=need_unquiesce)

    assert netapp.take_vm_snapshot([VOL_DATA, VOL_LOG], QUIESCED) is need_unquiesce
    assert world.volume_snapshots("vol-2") == ["vmsnap-s1"]
    assert world.volume_snapshots("vol-3") == ["vmsnap-s1"]
    assert world.calls() == [
        {
            "op": "take_vm_snapshot",
            "target": "netapp-1",
            "vm_id": "vm-1",
            "volumes": ["vol-2", "vol-3"],
            "ok": True,
            "result": need_unquiesce,
            "error": None,
        }
    ]


def test_storage_reports_its_configured_capabilities_without_a_call(world: SimulatorWorld) -> None:
    netapp = storage(world)

    assert netapp.capabilities() == CAPS
    assert (netapp.driver, netapp.pool) == ("simulator", NETAPP)
    assert world.calls() == []


def test_storage_revert_fails_when_a_volume_lacks_the_snapshot(world: SimulatorWorld) -> None:
    netapp = storage(world)
    netapp.take_vm_snapshot([VOL_DATA], QUIESCED)

    with pytest.raises(DriverError, match="volume vol-3 has no snapshot vmsnap-s1"):
        netapp.revert_vm_snapshot([VOL_DATA, VOL_LOG], QUIESCED)

    assert netapp.revert_vm_snapshot([VOL_DATA], QUIESCED) is True
    assert [c["ok"] for c in world.calls()] == [True, False, True]


def test_storage_deletes_are_idempotent(world: SimulatorWorld) -> None:
    netapp = storage(world)
    netapp.take_vm_snapshot([VOL_DATA, VOL_LOG], QUIESCED)
    netapp.take_snapshot(VOL_DATA, "vol-snap")

    assert netapp.delete_vm_snapshot([VOL_DATA, VOL_LOG], QUIESCED) is True
    assert netapp.delete_vm_snapshot([VOL_DATA, VOL_LOG], QUIESCED) is True
    netapp.delete_snapshot(VOL_DATA, "vol-snap")
    netapp.delete_snapshot(VOL_DATA, "vol-snap")

    assert world.volume_snapshots("vol-2") == []
    assert world.volume_snapshots("vol-3") == []
    assert all(c["ok"] for c in world.calls())


def test_taking_a_snapshot_that_exists_keeps_the_one_there(world: SimulatorWorld) -> None:
    netapp = storage(world)
    netapp.take_snapshot(VOL_DATA, "a")
    netapp.take_snapshot(VOL_DATA, "b")

    netapp.take_snapshot(VOL_DATA, "a")

    assert world.volume_snapshots("vol-2") == ["a", "b"]


# -- faults ----------------------------------------------------------------------------------


HYPERVISOR_CALLS = {
    "quiesce": lambda hv: hv.quiesce(VM, QUIESCED, memory=False),
    "unquiesce": lambda hv: hv.unquiesce(VM, QUIESCED, thaw=True, release="vmsnap-s1-quiesce"),
    "take_vm_snapshot": lambda hv: hv.take_vm_snapshot(VM, QUIESCED, memory=False),
    "revert_vm_snapshot": lambda hv: hv.revert_vm_snapshot(VM, "vmsnap-s1"),
    "delete_vm_snapshot": lambda hv: hv.delete_vm_snapshot(VM, "vmsnap-s1"),
    "take_volume_snapshot": lambda hv: hv.take_volume_snapshot(VM, VOL_ROOT, "v"),
    "delete_volume_snapshot": lambda hv: hv.delete_volume_snapshot(VM, VOL_ROOT, "v"),
}

STORAGE_CALLS = {
    "take_vm_snapshot": lambda s: s.take_vm_snapshot([VOL_DATA], QUIESCED),
    "revert_vm_snapshot": lambda s: s.revert_vm_snapshot([VOL_DATA], QUIESCED),
    "delete_vm_snapshot": lambda s: s.delete_vm_snapshot([VOL_DATA], QUIESCED),
    "take_snapshot": lambda s: s.take_snapshot(VOL_DATA, "v"),
    "delete_snapshot": lambda s: s.delete_snapshot(VOL_DATA, "v"),
}


def world_without_calls(world: SimulatorWorld) -> dict[str, Any]:
    shown = world.show()
    del shown["calls"]
    return shown


@pytest.mark.parametrize("op", sorted(HYPERVISOR_CALLS))
def test_a_hypervisor_fault_fails_the_call_logs_it_and_changes_nothing(
    world: SimulatorWorld, op: str
) -> None:
    # A world where every call has something to act on: a frozen VM, its snapshots.
    healthy = hypervisor(world, "kvm")
    healthy.quiesce(VM, QUIESCED, memory=False)
    healthy.take_vm_snapshot(VM, UNQUIESCED, memory=False)
    healthy.take_volume_snapshot(VM, VOL_ROOT, "v")
    before = world_without_calls(world)
    logged = len(world.calls())

    with pytest.raises(DriverError, match=f"simulated failure: {op} on hv-1") as caught:
        HYPERVISOR_CALLS[op](hypervisor(world, "kvm", faults={op: "fail"}))

    assert caught.value.code == "SIMULATED"
    assert world_without_calls(world) == before
    calls = world.calls()
    assert len(calls) == logged + 1
    assert calls[-1] == {
        "op": op,
        "target": "hv-1",
        "vm_id": "vm-1",
        "volumes": ["vol-1"] if "volume" in op else [],
        "ok": False,
        "result": None,
        "error": f"simulated failure: {op} on hv-1",
    }


@pytest.mark.parametrize("op", sorted(STORAGE_CALLS))
def test_a_storage_fault_fails_the_call_logs_it_and_changes_nothing(
    world: SimulatorWorld, op: str
) -> None:
    healthy = storage(world)
    healthy.take_vm_snapshot([VOL_DATA], QUIESCED)
    healthy.take_snapshot(VOL_DATA, "v")
    before = world_without_calls(world)

    with pytest.raises(DriverError, match=f"simulated failure: {op} on netapp-1"):
        STORAGE_CALLS[op](storage(world, faults={op: "fail"}))

    assert world_without_calls(world) == before
    last = world.calls()[-1]
    assert (last["op"], last["target"], last["vm_id"], last["volumes"], last["ok"]) == (
        op,
        "netapp-1",
        "vm-1",
        ["vol-2"],
        False,
    )


def test_a_fault_on_one_operation_leaves_the_others_working(world: SimulatorWorld) -> None:
    netapp = storage(world, faults={"delete_snapshot": "fail"})

    assert netapp.take_snapshot(VOL_DATA, "v") == "v"
    with pytest.raises(DriverError):
        netapp.delete_snapshot(VOL_DATA, "v")

    assert world.volume_snapshots("vol-2") == ["v"]


# -- show() and the queries --------------------------------------------------------------------


def test_show_lists_the_world_in_the_contract_shape(world: SimulatorWorld) -> None:
    kvm = hypervisor(world, "kvm")
    kvm.check_vm(VM)
    result = kvm.quiesce(VM, QUIESCED, memory=False)
    storage(world).take_vm_snapshot([VOL_DATA], QUIESCED)
    kvm.unquiesce(VM, QUIESCED, thaw=True, release=result.hypervisor_snapshot)

    shown = world.show()

    assert json.loads(json.dumps(shown)) == shown
    assert shown["vms"] == {
        "vm-1": {
            "frozen": False,
            "freeze_count": 1,
            "thaw_count": 1,
            "hypervisor_snapshots": [],
        }
    }
    assert shown["volumes"] == {"vol-2": {"snapshots": ["vmsnap-s1"]}}
    assert [c["op"] for c in shown["calls"]] == ["quiesce", "take_vm_snapshot", "unquiesce"]
    for call in shown["calls"]:
        assert set(call) == {"op", "target", "vm_id", "volumes", "ok", "result", "error"}
        assert call["vm_id"] == "vm-1"
        assert call["ok"] is True
    assert shown["calls"][0]["result"] == {
        "frozen": True,
        "quiesced": True,
        "hypervisor_snapshot": "vmsnap-s1-quiesce",
        "detail": result.detail,
    }
    assert shown["calls"][1]["result"] is True


def test_checking_a_vm_registers_it_without_logging_a_call(world: SimulatorWorld) -> None:
    hypervisor(world).check_vm(VM)
    hypervisor(world).check_vm(VM)

    assert world.show() == {
        "vms": {
            "vm-1": {
                "frozen": False,
                "freeze_count": 0,
                "thaw_count": 0,
                "hypervisor_snapshots": [],
            }
        },
        "volumes": {},
        "calls": [],
    }


def test_a_volume_stays_listed_after_its_last_snapshot_is_deleted(world: SimulatorWorld) -> None:
    netapp = storage(world)
    netapp.take_snapshot(VOL_DATA, "v")
    netapp.delete_snapshot(VOL_DATA, "v")

    assert world.show()["volumes"] == {"vol-2": {"snapshots": []}}


def test_an_unknown_vm_is_not_frozen_and_has_no_snapshots(world: SimulatorWorld) -> None:
    assert world.is_frozen("ghost") is False
    assert world.hypervisor_snapshots("ghost") == []
    assert world.volume_snapshots("ghost") == []
    assert world.vm_state("ghost") is None


def test_calls_can_be_read_for_one_vm(world: SimulatorWorld) -> None:
    other = VmInfo("vm-2", "hv-1", "Running", ())
    kvm = hypervisor(world)
    kvm.take_vm_snapshot(VM, UNQUIESCED, memory=False)
    kvm.take_vm_snapshot(other, UNQUIESCED, memory=False)
    kvm.delete_vm_snapshot(VM, "vmsnap-s2")

    assert [c["op"] for c in world.calls(vm_id="vm-1")] == [
        "take_vm_snapshot",
        "delete_vm_snapshot",
    ]
    assert [c["vm_id"] for c in world.calls(vm_id="vm-2")] == ["vm-2"]


# -- the file ----------------------------------------------------------------------------------


def test_a_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        SimulatorWorld(tmp_path / "missing" / "sim-state.json")


def test_a_file_that_is_not_a_simulator_world_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "sim-state.json"
    path.write_text('{"vms": {}}\n' * 100)

    with pytest.raises(ConfigError, match="cannot be used as a simulator world"):
        SimulatorWorld(path)


def test_a_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        SimulatorWorld(tmp_path)


def test_a_world_reopened_after_close_keeps_its_state(tmp_path: Path) -> None:
    with SimulatorWorld(tmp_path / "w.db") as world:
        storage(world).take_snapshot(VOL_DATA, "v")

    assert SimulatorWorld(tmp_path / "w.db").volume_snapshots("vol-2") == ["v"]
    world.close()
    assert world.volume_snapshots("vol-2") == ["v"]


def test_two_worlds_on_the_same_file_see_the_same_world(tmp_path: Path) -> None:
    first = SimulatorWorld(tmp_path / "w.db")
    second = SimulatorWorld(tmp_path / "w.db")

    hypervisor(first, "kvm").quiesce(VM, QUIESCED, memory=False)
    assert second.is_frozen("vm-1")
    hypervisor(second, "kvm").unquiesce(VM, QUIESCED, thaw=True, release=None)

    assert first.show() == second.show()
    assert first.vm_state("vm-1") == {
        "frozen": False,
        "freeze_count": 1,
        "thaw_count": 1,
        "hypervisor_snapshots": ["vmsnap-s1-quiesce"],
    }


@pytest.mark.slow
def test_another_process_sees_the_same_world(world: SimulatorWorld) -> None:
    storage(world).take_vm_snapshot([VOL_DATA], QUIESCED)
    take_in_a_process = """
import sys
from vmsnap.adapters.simulator import SimulatorHypervisor, SimulatorWorld
from vmsnap.domain.values import SnapshotRef, VmInfo
vm = VmInfo("vm-1", "hv-1", "Running", ())
SimulatorHypervisor("hv-1", "vmware", SimulatorWorld(sys.argv[1])).take_vm_snapshot(
    vm, SnapshotRef("s9", "vm-1", "vmsnap-s9", quiesce=True), memory=False)
"""

    run_python(take_in_a_process, str(world.path))
    seen = json.loads(run_python(SHOW_IN_A_PROCESS, str(world.path)))

    assert world.hypervisor_snapshots("vm-1") == ["vmsnap-s9"]
    assert seen == world.show()
    assert [c["op"] for c in seen["calls"]] == ["take_vm_snapshot", "take_vm_snapshot"]


# -- concurrency -----------------------------------------------------------------------------


@pytest.mark.slow
def test_show_answers_from_another_process_while_a_delayed_call_is_in_flight(
    world: SimulatorWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, release = threading.Event(), threading.Event()

    def held_delay(seconds: float) -> None:
        # Stands for the delay: the call stays in flight until the test lets it go.
        inside.set()
        release.wait(WAIT_S)

    monkeypatch.setattr(simulator, "_sleep", held_delay)
    slow = storage(world, delay_s={"take_snapshot": 5.0})
    errors: list[BaseException] = []

    def call() -> None:
        try:
            slow.take_snapshot(VOL_DATA, "slow")
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=call)
    thread.start()
    try:
        assert inside.wait(WAIT_S)
        seen_meanwhile = json.loads(run_python(SHOW_IN_A_PROCESS, str(world.path)))
        seen_here = world.show()
    finally:
        release.set()
        thread.join(WAIT_S)

    assert seen_meanwhile["calls"] == [] and seen_here["calls"] == []
    assert not thread.is_alive() and errors == []
    assert [c["op"] for c in world.calls()] == ["take_snapshot"]
    assert world.volume_snapshots("vol-2") == ["slow"]


@pytest.mark.slow
def test_show_answers_while_another_process_sleeps_inside_a_delayed_call(
    world: SimulatorWorld, tmp_path: Path
) -> None:
    marker = tmp_path / "inside-the-delay"
    slow_in_a_process = """
import sys, time
from pathlib import Path
from vmsnap.adapters import simulator, simulator_world
from vmsnap.domain.values import Capabilities, PoolInfo, VolumeInfo

def sleep(seconds):
    Path(sys.argv[2]).touch()
    time.sleep(seconds)

simulator_world._sleep = sleep
world = simulator.SimulatorWorld(sys.argv[1])
pool = PoolInfo("netapp-1", "NetApp 1", "simulator")
storage = simulator.SimulatorStorage(pool, world, Capabilities(), delay_s={"take_snapshot": 600})
storage.take_snapshot(VolumeInfo("vol-2", "vm-1", "netapp-1"), "slow")
"""
    storage(world).take_snapshot(VOL_DATA, "before")
    proc = subprocess.Popen([sys.executable, "-c", slow_in_a_process, str(world.path), str(marker)])
    try:
        wait_for(lambda: marker.exists() or proc.poll() is not None, WAIT_S, "the delayed call")
        assert proc.poll() is None, "the delayed call ended early"

        shown = world.show()

        assert proc.poll() is None
        assert [c["op"] for c in shown["calls"]] == ["take_snapshot"]
        assert shown["volumes"] == {"vol-2": {"snapshots": ["before"]}}
    finally:
        proc.kill()
        proc.wait(WAIT_S)


def test_threads_sharing_a_world_have_every_call_logged_and_counted(world: SimulatorWorld) -> None:
    threads_n, rounds = 8, 10
    start = threading.Barrier(threads_n)
    errors: list[BaseException] = []
    netapp = storage(world)

    def work(i: int) -> None:
        # Half the threads share the fixture's world, half open their own on the same file.
        own = world if i % 2 else SimulatorWorld(world.path)
        kvm = hypervisor(own, "kvm")
        vm = VmInfo(f"vm-{i}", "hv-1", "Running", ())
        try:
            start.wait(WAIT_S)
            for r in range(rounds):
                ref = SnapshotRef(f"{i}-{r}", vm.id, f"s-{i}-{r}", quiesce=True)
                result = kvm.quiesce(vm, ref, memory=False)
                netapp.take_snapshot(VOL_DATA, f"s-{i}-{r}")
                kvm.unquiesce(vm, ref, thaw=True, release=result.hypervisor_snapshot)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)

    assert errors == []
    shown = world.show()
    assert len(shown["calls"]) == threads_n * rounds * 3
    assert all(c["ok"] for c in shown["calls"])
    assert len(shown["volumes"]["vol-2"]["snapshots"]) == threads_n * rounds
    for i in range(threads_n):
        assert shown["vms"][f"vm-{i}"] == {
            "frozen": False,
            "freeze_count": rounds,
            "thaw_count": rounds,
            "hypervisor_snapshots": [],
        }


@pytest.mark.slow
def test_processes_creating_and_using_one_world_at_once_lose_no_call(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    processes_n, rounds = 4, 20
    take_in_a_process = """
import sys
from vmsnap.adapters.simulator import SimulatorStorage, SimulatorWorld
from vmsnap.domain.values import Capabilities, PoolInfo, VolumeInfo
world = SimulatorWorld(sys.argv[1])
pool = PoolInfo("netapp-1", "NetApp 1", "simulator")
storage = SimulatorStorage(pool, world, Capabilities())
for r in range(int(sys.argv[3])):
    storage.take_snapshot(VolumeInfo("vol-2", "vm-1", "netapp-1"), f"p{sys.argv[2]}-{r}")
"""
    procs = [
        subprocess.Popen([sys.executable, "-c", take_in_a_process, str(path), str(p), str(rounds)])
        for p in range(processes_n)
    ]
    codes = [proc.wait(WAIT_S) for proc in procs]

    assert codes == [0] * processes_n
    world = SimulatorWorld(path)
    assert len(world.calls()) == processes_n * rounds
    assert sorted(world.volume_snapshots("vol-2")) == sorted(
        f"p{p}-{r}" for p in range(processes_n) for r in range(rounds)
    )


# -- a property: the world agrees with a plain model -----------------------------------------


NAMES = st.sampled_from(["a", "b", "c"])
VOLUMES = st.sampled_from([VOL_DATA, VOL_LOG])


class SimulatedStorageMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp()
        self.world = SimulatorWorld(Path(self.folder) / "sim-state.json")
        self.storage = storage(self.world)
        self.model: dict[str, list[str]] = {VOL_DATA.id: [], VOL_LOG.id: []}
        self.calls = 0

    @rule(volume=VOLUMES, name=NAMES)
    def take(self, volume: VolumeInfo, name: str) -> None:
        self.storage.take_snapshot(volume, name)
        if name not in self.model[volume.id]:
            self.model[volume.id].append(name)
        self.calls += 1

    @rule(volume=VOLUMES, name=NAMES)
    def delete(self, volume: VolumeInfo, name: str) -> None:
        self.storage.delete_snapshot(volume, name)
        if name in self.model[volume.id]:
            self.model[volume.id].remove(name)
        self.calls += 1

    @rule(name=NAMES)
    def revert_both(self, name: str) -> None:
        ref = SnapshotRef("x", "vm-1", name)
        expected = all(name in names for names in self.model.values())
        try:
            reverted = self.storage.revert_vm_snapshot([VOL_DATA, VOL_LOG], ref)
        except DriverError:
            reverted = False
        assert reverted is expected
        self.calls += 1

    @invariant()
    def the_world_matches_the_model(self) -> None:
        for volume_id, names in self.model.items():
            assert self.world.volume_snapshots(volume_id) == names
        assert len(self.world.calls()) == self.calls

    def teardown(self) -> None:
        self.world.close()
        shutil.rmtree(self.folder, ignore_errors=True)


TestSimulatedStorageAgreesWithAPlainModel = SimulatedStorageMachine.TestCase
TestSimulatedStorageAgreesWithAPlainModel.settings = settings(
    max_examples=25, stateful_step_count=15, deadline=None
)
