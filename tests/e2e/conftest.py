"""
Helpers for the end-to-end tests: they run the real ``vmsnap`` command in subprocesses
against config files written into a temporary folder (CONTRACT.md).

The world :func:`e2e_config` describes (write it with :func:`tests.support.write_config`):

- hypervisors ``esx1`` (vmware), ``xen1`` (xenserver), ``kvm1`` (kvm), all simulated;
- pools ``primary-1`` (the ``default`` driver: advertises nothing), ``netapp-1`` (simulator,
  both capabilities), ``pure-1`` (simulator, STORAGE_SYSTEM_SNAPSHOT only) and ``plain-1``
  (simulator, advertises nothing);
- VMs ``vm-1`` (esx1; vol-1 on primary-1, vol-2 on netapp-1, vol-3 on pure-1), ``vm-plain``
  (esx1; only pools without STORAGE_SYSTEM_SNAPSHOT), ``vm-xen`` (xen1), ``vm-kvm`` (kvm1)
  and ``vm-off`` (esx1, Stopped).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from tests.support import Config, vm_tables

TIMEOUT_S = 120  # the longest one command may take before the test fails
STATE_FILE = "sim-state.db"
STORE_FILE = "vmsnap.db"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"

SNAPSHOT_FIELDS = {
    "id",
    "vm_id",
    "name",
    "description",
    "type",
    "state",
    "quiesce_requested",
    "quiesced",
    "consistency",
    "strategy",
    "error",
    "volumes",
    "parent_id",
    "current",
}
VOLUME_SNAPSHOT_FIELDS = {
    "id",
    "volume_id",
    "pool_id",
    "state",
    "quiesce_requested",
    "quiesced",
    "error",
}
POOL_FIELDS = {"id", "name", "driver", "caps"}
CAP_NAMES = {"VOLUME_SNAPSHOT_QUIESCEVM", "STORAGE_SYSTEM_SNAPSHOT"}
VOLUME_FIELDS = {"id", "vm_id", "pool_id", "quiescevm", "supportsstoragesnapshot"}
EVENT_FIELDS = {"position", "originator_id", "version", "type", "timestamp", "data"}
CALL_FIELDS = {"op", "target", "vm_id", "volumes", "ok", "result"}
SIM_VM_FIELDS = {"frozen", "freeze_count", "thaw_count", "hypervisor_snapshots"}

ALL_CAPS = {"VOLUME_SNAPSHOT_QUIESCEVM": True, "STORAGE_SYSTEM_SNAPSHOT": True}
STORAGE_ONLY = {"VOLUME_SNAPSHOT_QUIESCEVM": False, "STORAGE_SYSTEM_SNAPSHOT": True}
NO_CAPS = {"VOLUME_SNAPSHOT_QUIESCEVM": False, "STORAGE_SYSTEM_SNAPSHOT": False}

HYPERVISORS = (("esx1", "vmware"), ("xen1", "xenserver"), ("kvm1", "kvm"))
VENDOR_POOLS = (
    ("netapp-1", "NetApp 1", ALL_CAPS),
    ("pure-1", "Pure 1", STORAGE_ONLY),
    ("plain-1", "Plain 1", NO_CAPS),
)
# vm id -> (hypervisor, power state, [(volume id, pool id, type)])
VMS: dict[str, tuple[str, str, list[tuple[str, str, str]]]] = {
    "vm-1": (
        "esx1",
        "Running",
        [
            ("vol-1", "primary-1", "ROOT"),
            ("vol-2", "netapp-1", "DATADISK"),
            ("vol-3", "pure-1", "DATADISK"),
        ],
    ),
    "vm-plain": (
        "esx1",
        "Running",
        [("vol-p1", "primary-1", "ROOT"), ("vol-p2", "plain-1", "DATADISK")],
    ),
    "vm-xen": ("xen1", "Running", [("vol-x1", "netapp-1", "ROOT")]),
    "vm-kvm": (
        "kvm1",
        "Running",
        [("vol-k1", "primary-1", "ROOT"), ("vol-k2", "netapp-1", "DATADISK")],
    ),
    "vm-off": ("esx1", "Stopped", [("vol-o1", "primary-1", "ROOT")]),
}


def e2e_config(
    *,
    store: str | None = f"sqlite:///{STORE_FILE}",
    max_vm_snapshots_per_vm: int = 10,
    primary_name: str = "Primary NFS",
    netapp_faults: Mapping[str, str] | None = None,
    netapp_delay_s: Mapping[str, float] | None = None,
    state: str = STATE_FILE,
) -> Config:
    """
    The test world as a config; ``store=None`` leaves out the ``[store]`` table.
    """
    hypervisors = [
        {"name": name, "type": "simulator", "profile": profile, "state": state}
        for name, profile in HYPERVISORS
    ]
    pools: list[Mapping[str, Any]] = [
        {"id": "primary-1", "name": primary_name, "driver": "default"}
    ]
    for pool_id, name, caps in VENDOR_POOLS:
        netapp = pool_id == "netapp-1"
        pools.append(
            {
                "id": pool_id,
                "name": name,
                "driver": "simulator",
                "state": state,
                "capabilities": caps,
                "need_unquiesce": True,
                "faults": dict(netapp_faults or {}) if netapp else {},
                "delay_s": dict(netapp_delay_s or {}) if netapp else {},
            }
        )
    vms = vm_tables(VMS)
    return Config(
        hypervisors=hypervisors,
        pools=pools,
        vms=vms,
        store=store,
        limits={"max_vm_snapshots_per_vm": max_vm_snapshots_per_vm, "quiesce_deadline_s": 60},
    )


class Result(NamedTuple):
    """What one ``vmsnap`` process did: ``code, stdout, stderr = run(...)``."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """The whole standard output parsed as one JSON document."""
        return json.loads(self.stdout)


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: ours without VMSNAP_* settings, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("VMSNAP_")}
    base.update(env or {})
    return base


def vmsnap_command(*args: str | os.PathLike[str], console_script: bool = False) -> list[str]:
    """The command line: ``python -m vmsnap ARGS``, or the ``vmsnap`` console script."""
    if console_script:
        beside = Path(sys.executable).parent / "vmsnap"
        exe = str(beside) if beside.exists() else shutil.which("vmsnap")
        assert exe, "the vmsnap console script is not installed"
        return [exe, *map(str, args)]
    return [sys.executable, "-m", "vmsnap", *map(str, args)]


def run(
    *args: str | os.PathLike[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    console_script: bool = False,
) -> Result:
    """Run ``vmsnap ARGS`` in ``cwd`` and return (exit code, stdout, stderr)."""
    done = subprocess.run(
        vmsnap_command(*args, console_script=console_script),
        cwd=cwd,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def start(
    *args: str | os.PathLike[str], cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``vmsnap ARGS`` in the background."""
    return subprocess.Popen(
        vmsnap_command(*args),
        cwd=cwd,
        env=child_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Call(NamedTuple):
    """One command for :func:`run_concurrently`."""

    args: Sequence[str | os.PathLike[str]]
    cwd: Path
    env: Mapping[str, str] | None = None


def run_concurrently(calls: Sequence[Call]) -> list[Result]:
    """
    Run independent ``vmsnap`` commands at the same time (the suite stays fast on several
    cores); return their results in the same order.
    """
    procs = [start(*c.args, cwd=c.cwd, env=c.env) for c in calls]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT_S)
            results.append(Result(p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return results


def ok_json(result: Result) -> Any:
    """Assert that the command succeeded and printed exactly one JSON document; return it."""
    assert result.code == 0, f"exit {result.code}: {result.stderr}"
    return result.json()


def assert_error_line(stderr: str) -> None:
    """Standard error is exactly one line starting with ``error: ``, without a traceback."""
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one error line, got: {stderr!r}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in stderr


def assert_refused(result: Result) -> None:
    """Exit 2, nothing on standard output, one ``error: `` line on standard error."""
    assert result.code == 2, f"exit {result.code}: {result.stdout!r} {result.stderr!r}"
    assert result.stdout == ""
    assert_error_line(result.stderr)


def export(config: Path, cwd: Path, *extra: str) -> list[dict[str, Any]]:
    """Every stored event, from ``audit export`` (one JSON document per line)."""
    result = run("--config", config, "audit", "export", *extra, cwd=cwd)
    assert result.code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def calls_of(world: Mapping[str, Any], vm_id: str) -> list[dict[str, Any]]:
    """The simulated calls made for ``vm_id``, in order."""
    return [c for c in world["calls"] if c["vm_id"] == vm_id]


def names(items: Sequence[Mapping[str, Any]]) -> list[str]:
    return [i["name"] for i in items]
