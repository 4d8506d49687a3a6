"""
Several ``vmsnap`` processes against one SQLite store and one simulated world: at most one
operation per VM (the others exit 3), and distinct VMs proceed side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support import Config, write_config
from vmsnap import Controller
from vmsnap.adapters.simulator import SimulatorWorld

STATE = "world.db"
STORE = "store.db"
PROCESSES = 4
CMD_TIMEOUT_S = 60
CAPS = {"VOLUME_SNAPSHOT_QUIESCEVM": True, "STORAGE_SYSTEM_SNAPSHOT": True}
VENDOR_POOLS = ("netapp-1", "pure-1")
VMS = [f"vm-{n}" for n in range(PROCESSES)]


def concurrency_config(take_delay_s: float) -> Config:
    """VMs side by side on one hypervisor, each with a volume on every pool."""
    pools: list[Mapping[str, Any]] = [{"id": "primary-1", "name": "Primary", "driver": "default"}]
    pools += [
        {
            "id": pool,
            "name": pool,
            "driver": "simulator",
            "state": STATE,
            "capabilities": CAPS,
            "need_unquiesce": True,
            "delay_s": {"take_vm_snapshot": take_delay_s},
        }
        for pool in VENDOR_POOLS
    ]
    vms = [
        {
            "id": vm,
            "hypervisor": "esx1",
            "power_state": "Running",
            "volumes": [
                {"id": f"{vm}-{pool}", "pool": pool, "type": "DATADISK"}
                for pool in ("primary-1", *VENDOR_POOLS)
            ],
        }
        for vm in VMS
    ]
    return Config(
        hypervisors=[{"name": "esx1", "type": "simulator", "profile": "vmware", "state": STATE}],
        pools=pools,
        vms=vms,
        store=f"sqlite:///{STORE}",
    )


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("VMSNAP_")}


def _command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "vmsnap", "--config", str(config), *args]


def run_together(config: Path, commands: list[list[str]]) -> list[tuple[int, str, str]]:
    """Start every command at once, then wait for each (bounded)."""
    procs = [
        subprocess.Popen(
            _command(config, *c),
            cwd=config.parent,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in commands
    ]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=CMD_TIMEOUT_S)
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate(timeout=CMD_TIMEOUT_S)
    return results


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = write_config(tmp_path, concurrency_config(take_delay_s=1))
    # Create the store and the world first, so the processes race on the VM, not on setup.
    with Controller.from_config(path) as ctrl:
        ctrl.migrate()
    SimulatorWorld(tmp_path / STATE).close()
    return path


@pytest.mark.slow
def test_concurrent_creates_on_one_vm_let_exactly_one_run_and_refuse_the_others_with_3(
    config: Path,
) -> None:
    create = ["vm-snapshots", "create", "--vm", VMS[0], "--quiesce", "--json"]
    results = run_together(config, [create] * PROCESSES)

    codes = sorted(code for code, _, _ in results)
    assert codes == [0] + [3] * (PROCESSES - 1), results
    for code, out, err in results:
        if code == 3:
            assert out == ""
            lines = err.splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), err
        else:
            assert json.loads(out)["state"] == "ready"
    with SimulatorWorld(config.parent / STATE) as world:
        takes = Counter(
            c["target"] for c in world.calls(VMS[0]) if c["op"] == "take_vm_snapshot" and c["ok"]
        )
    assert takes == Counter(VENDOR_POOLS)


@pytest.mark.slow
def test_concurrent_creates_on_distinct_vms_all_succeed_and_each_is_listed_once(
    config: Path,
) -> None:
    results = run_together(
        config, [["vm-snapshots", "create", "--vm", vm, "--quiesce", "--json"] for vm in VMS]
    )

    assert [code for code, _, _ in results] == [0] * PROCESSES, results
    created = [json.loads(out) for _, out, _ in results]
    assert [s["vm_id"] for s in created] == VMS
    assert all(s["state"] == "ready" for s in created)
    listed = subprocess.run(
        _command(config, "vm-snapshots", "list", "--json"),
        cwd=config.parent,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=CMD_TIMEOUT_S,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    ids = Counter(s["id"] for s in json.loads(listed.stdout))
    assert ids == Counter(s["id"] for s in created)


@pytest.mark.slow
def test_a_controller_opens_while_another_process_writes_to_the_store(config: Path) -> None:
    # A controller process starting while another one records its steps must wait for
    # the store's lock (LOCK_TIMEOUT_S), not fail with "database is locked".
    results: list[tuple[int, str, str]] = []
    errors: list[str] = []
    proc = subprocess.Popen(
        _command(config, "vm-snapshots", "create", "--vm", VMS[1], "--quiesce"),
        cwd=config.parent,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + CMD_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with Controller.from_config(config) as ctrl:
                    ctrl.list_vms()
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
        out, err = proc.communicate(timeout=CMD_TIMEOUT_S)
        results.append((proc.returncode, out, err))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=CMD_TIMEOUT_S)
    assert results[0][0] == 0, results
    assert errors == []
