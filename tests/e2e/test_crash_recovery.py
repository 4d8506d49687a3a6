"""
A controller process killed (SIGKILL) inside a step of a quiesced create, then
``vmsnap recover``: the snapshot ends failed, the VM is thawed, nothing is orphaned, the
audit holds, and a second recovery changes nothing.

The killed process runs with a config that delays one step; recovery and every later
command use a healthy config on the same store and world.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support import Config, wait_for, write_config
from vmsnap import Controller
from vmsnap.adapters.simulator import SimulatorWorld

STATE = "world.db"
STORE = "store.db"
VM = "vm-kvm"
VOLUMES = (("k-root", "primary-1"), ("k-data", "netapp-1"))
WAIT_S = 30.0
CMD_TIMEOUT_S = 60
CREATE = ("vm-snapshots", "create", "--vm", VM, "--quiesce")
HANG_S = 120  # the delayed call outlives the test: the process is always killed inside it


def crash_config(
    hv_delay: Mapping[str, float] | None = None,
    pool_delay: Mapping[str, float] | None = None,
) -> Config:
    """One KVM VM with a volume on the default pool and one on a vendor pool."""
    caps = {"VOLUME_SNAPSHOT_QUIESCEVM": True, "STORAGE_SYSTEM_SNAPSHOT": True}
    return Config(
        hypervisors=[
            {
                "name": "kvm1",
                "type": "simulator",
                "profile": "kvm",
                "state": STATE,
                "delay_s": dict(hv_delay or {}),
            }
        ],
        pools=[
            {"id": "primary-1", "name": "Primary", "driver": "default"},
            {
                "id": "netapp-1",
                "name": "NetApp",
                "driver": "simulator",
                "state": STATE,
                "capabilities": caps,
                "need_unquiesce": True,
                "delay_s": dict(pool_delay or {}),
            },
        ],
        vms=[
            {
                "id": VM,
                "hypervisor": "kvm1",
                "power_state": "Running",
                "volumes": [{"id": v, "pool": p, "type": "DATADISK"} for v, p in VOLUMES],
            }
        ],
        store=f"sqlite:///{STORE}",
        limits={"quiesce_deadline_s": 600},
    )


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("VMSNAP_")}


def vmsnap(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmsnap", "--config", str(config), *args],
        cwd=config.parent,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=CMD_TIMEOUT_S,
        check=False,
    )


def _stored(folder: Path, event: str) -> bool:
    """Whether an event of this type is in the store (read only: the child is not disturbed)."""
    uri = f"file:{folder / STORE}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=WAIT_S)) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM stored_events WHERE topic LIKE ?", (f"%{event}",)
        ).fetchone()
    return bool(rows[0])


def _logged_ok(world: SimulatorWorld, op: str, target: str) -> bool:
    return any(c["op"] == op and c["target"] == target and c["ok"] for c in world.calls(VM))


# step -> (hypervisor delays, pool delays, "the process is inside the step" condition)
STEPS: dict[str, tuple[dict[str, float], dict[str, float], Any]] = {
    "quiesce": (
        {"quiesce": HANG_S},
        {},
        lambda world, folder: _stored(folder, "QuiesceStarted"),
    ),
    "vendor-take_vm_snapshot": (
        {},
        {"take_vm_snapshot": HANG_S},
        lambda world, folder: _logged_ok(world, "quiesce", "kvm1") and world.is_frozen(VM),
    ),
    "unquiesce": (
        {"unquiesce": HANG_S},
        {},
        lambda world, folder: (
            _logged_ok(world, "take_vm_snapshot", "netapp-1")
            and _stored(folder, "UnquiesceDecided")
        ),
    ),
}


def _orphans(world: SimulatorWorld, snapshot_id: str) -> list[str]:
    prefix = f"vmsnap-{snapshot_id}"
    names = [n for n in world.hypervisor_snapshots(VM) if n.startswith(prefix)]
    for vol, _pool in VOLUMES:
        names += [f"{vol}:{n}" for n in world.volume_snapshots(vol) if n.startswith(prefix)]
    return names


def _killed_inside(folder: Path, step: str) -> Path:
    """
    Run a quiesced create that hangs in ``step``, SIGKILL it there; return a healthy
    config on the same store and world.
    """
    hv_delay, pool_delay, inside = STEPS[step]
    slow = write_config(folder, crash_config(hv_delay, pool_delay), "slow.toml")
    healthy = write_config(folder, crash_config(), "healthy.toml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmsnap", "--config", str(slow), *CREATE],
        cwd=folder,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (folder / STATE).exists(), WAIT_S, "the simulated world", process=proc)
        with SimulatorWorld(folder / STATE) as world:
            # The child registers the VM in the world once it has opened the store.
            wait_for(
                lambda: world.vm_state(VM) is not None, WAIT_S, "the create to start", process=proc
            )
            wait_for(
                lambda: inside(world, folder),
                WAIT_S,
                f"the controller inside {step}",
                process=proc,
            )
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=CMD_TIMEOUT_S)
            assert proc.returncode == -signal.SIGKILL
        with Controller.from_config(healthy) as ctrl:
            in_flight = [v.in_flight for v in ctrl.list_vms() if v.id == VM]
            assert in_flight[0] is not None, "the killed create left no operation in flight"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=CMD_TIMEOUT_S)
    return healthy


@pytest.mark.slow
@pytest.mark.parametrize("step", sorted(STEPS))
def test_a_controller_killed_inside_a_step_is_recovered_to_failed_thawed_and_clean(
    tmp_path: Path, step: str
) -> None:
    healthy = _killed_inside(tmp_path, step)

    recovered = vmsnap(healthy, "recover", "--json")
    assert recovered.returncode == 0, recovered.stderr
    touched = json.loads(recovered.stdout)["recovered"]
    assert [s["state"] for s in touched] == ["failed"]

    listed = vmsnap(healthy, "vm-snapshots", "list", "--vm", VM, "--all", "--json")
    assert listed.returncode == 0, listed.stderr
    snaps = json.loads(listed.stdout)
    assert [(s["id"], s["state"]) for s in snaps] == [(touched[0]["id"], "failed")]
    assert snaps[0]["error"]

    with SimulatorWorld(tmp_path / STATE) as world:
        assert world.is_frozen(VM) is False
        assert _orphans(world, snaps[0]["id"]) == []
        calls_after_first = world.calls()

    assert vmsnap(healthy, "audit", "verify", "--json").returncode == 0
    frozen = vmsnap(healthy, "vms", "list", "--frozen", "--json")
    assert frozen.returncode == 0, frozen.stderr
    assert json.loads(frozen.stdout) == []

    events_before = vmsnap(healthy, "audit", "export").stdout
    again = vmsnap(healthy, "recover", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["recovered"] == []
    assert vmsnap(healthy, "audit", "export").stdout == events_before
    with SimulatorWorld(tmp_path / STATE) as world:
        assert world.calls() == calls_after_first


@pytest.mark.slow
def test_a_command_started_with_recover_first_releases_what_a_killed_controller_held(
    tmp_path: Path,
) -> None:
    healthy = _killed_inside(tmp_path, "vendor-take_vm_snapshot")
    # Without recovery the VM is still claimed by the dead process.
    assert vmsnap(healthy, *CREATE, "--json").returncode == 3

    started = vmsnap(healthy, "--recover", *CREATE, "--json")

    assert started.returncode == 0, started.stderr
    new = json.loads(started.stdout)
    listed = vmsnap(healthy, "vm-snapshots", "list", "--vm", VM, "--all", "--json")
    states = {s["id"]: s["state"] for s in json.loads(listed.stdout)}
    assert states.pop(new["id"]) == "ready"
    assert list(states.values()) == ["failed"]
    with SimulatorWorld(tmp_path / STATE) as world:
        assert world.is_frozen(VM) is False
        [old] = states
        assert _orphans(world, old) == []
