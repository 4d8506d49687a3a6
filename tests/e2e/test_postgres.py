"""
Several ``vmsnap`` processes against one PostgreSQL database: the migration step, at most
one operation per VM (the others exit 3), distinct VMs side by side, and recovery by
another process of what a killed one left in flight.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.support import NOT_INSTALLED, wait_for, write_config

pytest.importorskip("psycopg", reason=NOT_INSTALLED["psycopg"])

import psycopg

from tests.e2e import test_concurrency as concurrency
from tests.e2e import test_crash_recovery as crash
from tests.e2e.conftest import assert_error_line
from vmsnap.adapters.simulator import SimulatorWorld

PROCESSES = concurrency.PROCESSES
VMS = concurrency.VMS


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("VMSNAP_")}


def vmsnap(config: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmsnap", "--config", str(config), "--store", url, *args],
        cwd=config.parent,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=concurrency.CMD_TIMEOUT_S,
        check=False,
    )


def _stored(url: str, event: str) -> bool:
    """Whether an event of this type is in the store."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM vmsnap_events WHERE topic LIKE %s", (f"%{event}",)
        ).fetchone()
    return bool(row and row[0])


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = write_config(tmp_path, concurrency.concurrency_config(take_delay_s=1))
    SimulatorWorld(tmp_path / concurrency.STATE).close()
    return path


@pytest.fixture
def store(config: Path, pg_url: str) -> str:
    migrated = vmsnap(config, pg_url, "store", "migrate", "--json")
    assert migrated.returncode == 0, migrated.stderr
    assert json.loads(migrated.stdout)["events"] == 0
    return pg_url


def test_a_command_on_a_store_never_migrated_exits_2_and_says_to_migrate(
    config: Path, pg_url: str
) -> None:
    result = vmsnap(config, pg_url, "vm-snapshots", "list", "--json")
    assert result.returncode == 2
    assert result.stdout == ""
    assert_error_line(result.stderr)
    assert "not migrated" in result.stderr and "vmsnap store migrate" in result.stderr


def test_several_migrations_at_once_all_succeed_and_leave_one_usable_store(
    config: Path, pg_url: str
) -> None:
    results = concurrency.run_together(
        config, [["--store", pg_url, "store", "migrate", "--json"]] * PROCESSES
    )
    assert [code for code, _, _ in results] == [0] * PROCESSES, results
    listed = vmsnap(config, pg_url, "vm-snapshots", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


@pytest.mark.slow
def test_concurrent_creates_on_one_vm_let_exactly_one_run_and_refuse_the_others_with_3(
    config: Path, store: str
) -> None:
    create = ["--store", store, "vm-snapshots", "create", "--vm", VMS[0], "--quiesce", "--json"]
    results = concurrency.run_together(config, [create] * PROCESSES)

    codes = sorted(code for code, _, _ in results)
    assert codes == [0] + [3] * (PROCESSES - 1), results
    for code, out, err in results:
        if code == 3:
            assert out == ""
            assert_error_line(err)
    winner = next(json.loads(out) for code, out, _ in results if code == 0)
    assert winner["state"] == "ready"
    with SimulatorWorld(config.parent / concurrency.STATE) as world:
        takes = Counter(
            c["target"] for c in world.calls(VMS[0]) if c["op"] == "take_vm_snapshot" and c["ok"]
        )
    assert takes == Counter(concurrency.VENDOR_POOLS)
    listed = vmsnap(config, store, "vm-snapshots", "list", "--all", "--json")
    assert [s["id"] for s in json.loads(listed.stdout)] == [winner["id"]]


@pytest.mark.slow
def test_concurrent_creates_on_distinct_vms_all_succeed_and_each_is_listed_once(
    config: Path, store: str
) -> None:
    results = concurrency.run_together(
        config,
        [
            ["--store", store, "vm-snapshots", "create", "--vm", vm, "--quiesce", "--json"]
            for vm in VMS
        ],
    )

    assert [code for code, _, _ in results] == [0] * PROCESSES, results
    created = [json.loads(out) for _, out, _ in results]
    assert [s["vm_id"] for s in created] == VMS
    assert all(s["state"] == "ready" for s in created)
    listed = vmsnap(config, store, "vm-snapshots", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    ids = Counter(s["id"] for s in json.loads(listed.stdout))
    assert ids == Counter(s["id"] for s in created)
    verified = vmsnap(config, store, "audit", "verify", "--json")
    assert verified.returncode == 0, verified.stdout
    assert json.loads(verified.stdout)["problems"] == []


@pytest.mark.slow
def test_a_controller_killed_inside_a_driver_call_is_recovered_by_another_process(
    tmp_path: Path, pg_url: str
) -> None:
    slow = write_config(
        tmp_path, crash.crash_config(pool_delay={"take_vm_snapshot": crash.HANG_S}), "slow.toml"
    )
    healthy = write_config(tmp_path, crash.crash_config(), "healthy.toml")
    assert vmsnap(healthy, pg_url, "store", "migrate").returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmsnap", "--config", str(slow), "--store", pg_url, *crash.CREATE],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: (tmp_path / crash.STATE).exists(),
            crash.WAIT_S,
            "the simulated world",
            process=proc,
        )
        with SimulatorWorld(tmp_path / crash.STATE) as world:
            # Inside the vendor's call: the quiesce is done and recorded (Snapshot.Quiesced).
            wait_for(
                lambda: world.is_frozen(crash.VM) and _stored(pg_url, "Quiesced"),
                crash.WAIT_S,
                "the controller inside the vendor's take_vm_snapshot",
                process=proc,
            )
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=concurrency.CMD_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=concurrency.CMD_TIMEOUT_S)

    vms = json.loads(vmsnap(healthy, pg_url, "vms", "list", "--json").stdout)
    assert [v["in_flight"] for v in vms if v["id"] == crash.VM] != [None]
    recovered = vmsnap(healthy, pg_url, "recover", "--json")
    assert recovered.returncode == 0, recovered.stderr
    touched = json.loads(recovered.stdout)["recovered"]
    assert [s["state"] for s in touched] == ["failed"]
    with SimulatorWorld(tmp_path / crash.STATE) as world:
        assert world.is_frozen(crash.VM) is False
        assert crash._orphans(world, touched[0]["id"]) == []
    again = vmsnap(healthy, pg_url, "recover", "--json")
    assert json.loads(again.stdout)["recovered"] == []
    assert vmsnap(healthy, pg_url, "audit", "verify").returncode == 0
