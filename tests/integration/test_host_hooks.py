"""
Host hooks (issue 19) with real processes: the environment they see, their exit code and
output (capped at 4 KiB), and a hook past its timeout killed with its whole process group.
Then through the Controller: a VM whose hooks run on the controller's host.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import attrs
import pytest

from tests.conftest import STATE_FILE, world_config
from tests.support import WAIT_S, wait_for, write_config
from vmsnap import Controller
from vmsnap.adapters.host_hooks import run_host_hook
from vmsnap.adapters.simulator import SimulatorWorld
from vmsnap.domain.exceptions import DriverError

SH = "/bin/sh"
ENV = {"VMSNAP_VM_ID": "db-1", "VMSNAP_SNAPSHOT_ID": "s-1", "VMSNAP_HOOK": "pre_freeze"}


def test_a_host_hook_sees_its_vm_snapshot_and_hook_in_its_environment() -> None:
    script = 'echo "$VMSNAP_VM_ID $VMSNAP_SNAPSHOT_ID $VMSNAP_HOOK"; echo oops >&2; exit 4'
    result = run_host_hook([SH, "-c", script], 10, ENV)
    assert (result.exit_code, result.timed_out) == (4, False)
    assert result.output == "db-1 s-1 pre_freeze\noops\n"


def test_a_host_hook_s_output_is_capped_at_4_kib_and_it_is_not_blocked_by_more() -> None:
    # 1 MiB: far more than a pipe holds, so a hook whose output is not read would hang.
    result = run_host_hook([SH, "-c", "head -c 1048576 /dev/zero | tr '\\0' a"], 30, {})
    assert (result.exit_code, result.output) == (0, "a" * 4096)


def test_undecodable_output_is_kept_with_replacement_characters() -> None:
    result = run_host_hook([SH, "-c", "printf 'ok \\377\\376'"], 10, {})
    assert result.output == "ok \ufffd\ufffd"


def test_a_host_hook_past_its_timeout_is_killed_with_its_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The hook starts a grandchild, records both pids, then waits far past its timeout.
    script = f"sleep 300 & echo $$ $! > {pids}; echo started; wait"
    result = run_host_hook([SH, "-c", script], 0.5, {})
    assert (result.exit_code, result.timed_out) == (None, True)
    assert result.output == "started\n"
    for pid in map(int, pids.read_text().split()):
        wait_for(lambda p=pid: not _alive(p), WAIT_S, f"process {pid} to be killed")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child not yet reaped by its (killed) parent is a zombie: gone for our purpose.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_a_host_hook_that_cannot_be_started_is_a_driver_error(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="cannot be started"):
        run_host_hook([str(tmp_path / "missing")], 10, {})
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(DriverError, match="cannot be started"):
        run_host_hook([str(script)], 10, {})


def test_a_hook_runs_in_its_own_process_group() -> None:
    result = run_host_hook([SH, "-c", "ps -o pgid= -p $$"], 10, {})
    assert int(result.output) != os.getpgid(0)
    assert signal.SIGKILL  # the group is what the timeout kills


def test_a_vm_s_host_hooks_run_around_the_freeze_with_its_ids(tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$VMSNAP_HOOK $VMSNAP_VM_ID $VMSNAP_SNAPSHOT_ID" >> {log}\n')
    hook.chmod(0o755)
    config = world_config()
    hooks = {
        "pre_freeze": {"run": [str(hook)], "where": "host", "timeout_s": 10},
        "post_thaw": {"run": [str(hook)], "where": "host"},
    }
    vms = [{**v, "hooks": hooks} if v["id"] == "vm-kvm" else v for v in config.vms]
    path = write_config(tmp_path, attrs.evolve(config, vms=vms))
    with Controller.from_config(path) as ctrl, SimulatorWorld(tmp_path / STATE_FILE) as world:
        snap = ctrl.create_vm_snapshot("vm-kvm", quiesce=True)
        assert (snap.state, snap.consistency) == ("ready", "application")
        assert [c for c in world.calls("vm-kvm") if c["op"] == "guest_exec"] == []
    assert log.read_text().splitlines() == [
        f"pre_freeze vm-kvm {snap.id}",
        f"post_thaw vm-kvm {snap.id}",
    ]
