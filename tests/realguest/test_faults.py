"""
Faults around a real guest's freeze: a dead guest agent (refused, or crash-consistent by
config), a driver failing while the guest is frozen, the quiesce deadline passing while
frozen, and a controller killed while the guest is frozen (``recover`` thaws it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.realguest.conftest import DriverSpy
from tests.realguest.guest import VM, WAIT_S, Guest, internal_snapshots
from tests.realguest.test_quiesced_snapshots import quiesced_result
from tests.support import wait_for
from vmsnap import Controller, InvalidRequest
from vmsnap.domain.exceptions import DriverError

pytestmark = pytest.mark.slow

#: A controller process whose pool-b snapshot call hangs (it is killed there).
HANGING_CONTROLLER = """
import sys, threading
from vmsnap import Controller
from vmsnap.adapters.qcow2_driver import Qcow2Driver

original = Qcow2Driver.take_vm_snapshot

def take(self, volumes, snapshot):
    if self.pool.id == "pool-b":
        open(sys.argv[2], "w").close()
        threading.Event().wait()  # hangs here until the test kills the process
    return original(self, volumes, snapshot)

Qcow2Driver.take_vm_snapshot = take
with Controller.from_config(sys.argv[1]) as vmsnap:
    vmsnap.create_vm_snapshot("vm-real", quiesce=True)
"""


def assert_clean_and_thawed(guest: Guest) -> None:
    assert guest.freeze_status() == "thawed"
    for file in guest.files.values():
        assert internal_snapshots(file) == [], file
    guest.write("/mnt/vda/alive.txt", "writable")  # a frozen filesystem would block this


def test_a_dead_agent_is_refused_before_anything_is_recorded(
    guest: Guest, write_config: Callable[..., Path]
) -> None:
    guest.kill_agent()
    with Controller.from_config(write_config()) as vmsnap:
        with pytest.raises(InvalidRequest, match="guest-ping"):
            vmsnap.create_vm_snapshot(VM, quiesce=True)
        with pytest.raises(InvalidRequest, match="quiesce_requires_agent"):
            vmsnap.create_volume_snapshot("vol-data", quiesce=True)
        assert vmsnap.list_vm_snapshots(vm_id=VM, include_removed=True) == []
        assert vmsnap.list_volume_snapshots(volume_id="vol-data") == []
        # Without --quiesce no agent is needed.
        assert vmsnap.create_vm_snapshot(VM).state == "ready"


def test_a_dead_agent_gives_a_crash_consistent_snapshot_that_says_why_when_allowed(
    guest: Guest, write_config: Callable[..., Path]
) -> None:
    guest.kill_agent()
    with Controller.from_config(write_config(quiesce_requires_agent=False)) as vmsnap:
        snap = vmsnap.create_vm_snapshot(VM, quiesce=True)
        result = quiesced_result(vmsnap, snap.id)

    assert snap.state == "ready", snap.error
    assert (snap.quiesce_requested, snap.quiesced, snap.consistency) == (True, False, "crash")
    assert result["frozen"] is False
    assert "guest-ping" in result["crash_reason"]


def test_a_driver_failing_while_the_guest_is_frozen_thaws_it_and_leaves_nothing_behind(
    guest: Guest, spy: DriverSpy, write_config: Callable[..., Path]
) -> None:
    def fail_on_pool_b(pool_id: str) -> None:
        if pool_id == "pool-b":
            raise DriverError("injected: the array went away", "injected")

    spy.hook = fail_on_pool_b
    with Controller.from_config(write_config()) as vmsnap:
        snap = vmsnap.create_vm_snapshot(VM, quiesce=True)

    assert snap.state == "failed"
    assert "injected" in (snap.error or "")
    # Both called together while frozen (pool-a's call may start after pool-b's failure
    # already thawed the guest: ADR 0024).
    seen = dict(spy.seen)
    assert set(seen) == {"pool-a", "pool-b"} and seen["pool-b"] == "frozen"
    assert_clean_and_thawed(guest)  # pool-a's snapshot was compensated


def test_a_deadline_passing_while_frozen_thaws_the_guest_while_the_call_still_runs(
    guest: Guest, spy: DriverSpy, write_config: Callable[..., Path]
) -> None:
    def hold_until_thawed(pool_id: str) -> None:
        if pool_id == "pool-b":  # returns only once the deadline thawed the guest
            wait_for(lambda: guest.freeze_status() == "thawed", WAIT_S, "the deadline's thaw")

    spy.hook = hold_until_thawed
    with Controller.from_config(write_config(quiesce_deadline_s=2)) as vmsnap:
        snap = vmsnap.create_vm_snapshot(VM, quiesce=True)

    assert snap.state == "failed"
    assert "deadline" in (snap.error or "")
    assert sorted(spy.seen) == [("pool-a", "frozen"), ("pool-b", "frozen")]  # called together
    assert_clean_and_thawed(guest)


def test_a_controller_killed_while_the_guest_is_frozen_is_thawed_and_cleaned_by_recover(
    guest: Guest, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config()
    marker = tmp_path / "inside-pool-b"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HANGING_CONTROLLER, str(config), str(marker)], env=env
    )
    try:
        wait_for(lambda: marker.exists() or proc.poll() is not None, WAIT_S, "the hanging call")
        assert proc.poll() is None, "the controller ended before it was killed"
        assert guest.freeze_status() == "frozen"
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert guest.freeze_status() == "frozen"  # nobody thawed it: the process is gone

    with Controller.from_config(config) as vmsnap:
        vmsnap.recover()
        snaps = vmsnap.list_vm_snapshots(vm_id=VM, include_removed=True)

    assert [s.state for s in snaps] == ["failed"]
    assert_clean_and_thawed(guest)
