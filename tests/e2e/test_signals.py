"""
SIGINT, SIGTERM and SIGHUP to a ``vmsnap`` process while it holds a guest frozen: the
guest is thawed, and the thaw recorded (reason ``interrupted``), before the process exits
130; ``recover`` then compensates the operation, and ``reconcile`` finds nothing.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_crash_recovery import (
    CMD_TIMEOUT_S,
    CREATE,
    HANG_S,
    STATE,
    VM,
    WAIT_S,
    _env,
    crash_config,
    vmsnap,
)
from tests.support import wait_for, write_config
from vmsnap import Controller
from vmsnap.adapters.simulator import SimulatorWorld


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=str)
def test_a_signal_during_a_freeze_thaws_the_guest_recorded_before_the_process_exits(
    tmp_path: Path, sig: signal.Signals
) -> None:
    slow = write_config(tmp_path, crash_config(pool_delay={"take_vm_snapshot": HANG_S}), "s.toml")
    healthy = write_config(tmp_path, crash_config(), "healthy.toml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmsnap", "--config", str(slow), *CREATE],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (tmp_path / STATE).exists(), WAIT_S, "the world", process=proc)
        with SimulatorWorld(tmp_path / STATE) as world:
            wait_for(
                lambda: world.vm_state(VM) is not None and world.is_frozen(VM),
                WAIT_S,
                "the guest frozen",
                process=proc,
            )
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=CMD_TIMEOUT_S)
            assert proc.returncode == 130, err
            assert err.startswith("error: interrupted")
            assert not world.is_frozen(VM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=CMD_TIMEOUT_S)
    with Controller.from_config(healthy) as ctrl:
        [sid] = [v.in_flight for v in ctrl.list_vms() if v.id == VM]
        assert sid is not None
        thaws = [e for e in ctrl.audit_timeline(snapshot_id=sid) if e.type == "Snapshot.Unquiesced"]
        assert [e.data["reason"] for e in thaws] == ["interrupted"]
    assert vmsnap(healthy, "recover").returncode == 0
    assert vmsnap(healthy, "reconcile").returncode == 0
