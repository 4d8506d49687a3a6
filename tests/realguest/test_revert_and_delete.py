"""
Revert and delete of VM snapshots of a real QEMU guest: a revert is refused while the
guest runs (nothing recorded, CLI exit 2) and restores every disk once it is shut off;
a delete, running or stopped, leaves no internal snapshot, overlay or libvirt snapshot
metadata behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.realguest.guest import VM, WAIT_S, Guest, internal_snapshots
from vmsnap import Controller, InvalidRequest
from vmsnap.domain.values import backend_name

pytestmark = pytest.mark.slow


def pool_files(guest: Guest) -> list[str]:
    return sorted(p.name for pool in guest.pools.values() for p in pool.iterdir())


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "vmsnap", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env=env,
        check=False,
    )


def test_a_revert_is_refused_while_the_guest_runs_and_restores_every_disk_once_it_is_off(
    guest: Guest, write_config: Callable[..., Path]
) -> None:
    config = write_config()
    guest.write("/mnt/vda/state.txt", "root-1")
    guest.write("/mnt/vdb/state.txt", "data-1")
    with Controller.from_config(config) as vmsnap:
        snap = vmsnap.create_vm_snapshot(VM, quiesce=True)
        assert snap.state == "ready", snap.error
        events = len(vmsnap.audit_timeline(snapshot_id=snap.id))
    guest.write("/mnt/vda/state.txt", "root-2")
    guest.write("/mnt/vdb/state.txt", "data-2")

    refused = cli(config, "vm-snapshots", "revert", snap.id)
    assert refused.returncode == 2, refused.stderr
    assert "stop the VM first" in refused.stderr
    with Controller.from_config(config) as vmsnap:
        with pytest.raises(InvalidRequest, match="stop the VM first"):
            vmsnap.revert_vm_snapshot(snap.id)
        assert len(vmsnap.audit_timeline(snapshot_id=snap.id)) == events  # nothing recorded
        assert guest.sh("cat /mnt/vda/state.txt") == "root-2\n"

        guest.shut_off()
        reverted = vmsnap.revert_vm_snapshot(snap.id)

    assert reverted.state == "ready" and reverted.error is None, reverted.error
    guest.boot()
    assert guest.sh("cat /mnt/vda/state.txt") == "root-1\n"
    assert guest.sh("cat /mnt/vdb/state.txt") == "data-1\n"


def test_a_delete_leaves_nothing_behind_whether_the_guest_runs_or_not(
    guest: Guest, write_config: Callable[..., Path]
) -> None:
    files_before = pool_files(guest)
    with Controller.from_config(write_config()) as vmsnap:
        first = vmsnap.create_vm_snapshot(VM, quiesce=True)
        second = vmsnap.create_vm_snapshot(VM, quiesce=True)
        guest.write("/mnt/vda/current.txt", "current")

        gone = vmsnap.delete_vm_snapshot(first.id)
        assert gone.state == "removed", gone.error
        for file in guest.files.values():
            assert internal_snapshots(file) == [backend_name(second.id)]
        assert guest.dom.snapshotNum(0) == 0  # no libvirt snapshot metadata
        assert pool_files(guest) == files_before  # no overlay files
        # The guest keeps running on its current data.
        assert guest.running()
        assert guest.sh("cat /mnt/vda/current.txt") == "current\n"
        guest.write("/mnt/vda/current.txt", "still writable")

        guest.shut_off()
        gone = vmsnap.delete_vm_snapshot(second.id)

    assert gone.state == "removed", gone.error
    for file in guest.files.values():
        assert internal_snapshots(file) == []
    assert guest.dom.snapshotNum(0) == 0
    assert pool_files(guest) == files_before
