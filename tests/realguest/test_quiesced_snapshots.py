"""
Quiesced VM and volume snapshots of a running QEMU guest, through vmsnap's Controller, a
libvirt ``qemu:///system`` hypervisor, the guest's real agent and two qcow2 pools whose
images the running QEMU holds open (ADR 0016).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.realguest.conftest import DriverSpy
from tests.realguest.guest import VM, Guest, SnapshotFs, internal_snapshots, snapshot_fs
from vmsnap import Controller
from vmsnap.domain.values import backend_name

pytestmark = pytest.mark.slow


def quiesced_result(vmsnap: Controller, snapshot_id: str) -> dict[str, Any]:
    event = next(
        e for e in vmsnap.audit_timeline(snapshot_id=snapshot_id) if e.type.endswith("Quiesced")
    )
    result: dict[str, Any] = event.data["result"]
    return result


def snapshot_of(guest: Guest, volume: str, snapshot_id: str, into: Path) -> SnapshotFs:
    return snapshot_fs(guest.files[volume], backend_name(snapshot_id), into)


def test_a_quiesced_create_freezes_the_guest_during_every_driver_call_and_captures_a_clean_fs(
    guest: Guest, spy: DriverSpy, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    guest.write("/mnt/vda/before.txt", "root-before")
    guest.write("/mnt/vdb/before.txt", "data-before")

    with Controller.from_config(write_config()) as vmsnap:
        snap = vmsnap.create_vm_snapshot(VM, quiesce=True)
        result = quiesced_result(vmsnap, snap.id)
    guest.write("/mnt/vda/after.txt", "root-after")

    assert snap.state == "ready", snap.error
    assert (snap.quiesced, snap.consistency) == (True, "filesystem")
    # The agent's own answer is recorded: it froze both ext4 disks.
    assert result["filesystems_frozen"] == 2
    assert result["crash_reason"] is None
    assert result["hypervisor_snapshot"] is None  # both pools captured their own volumes
    # Every driver call (all called together) ran while the guest said it was frozen; it
    # is thawed now.
    assert sorted(spy.seen) == [("pool-a", "frozen"), ("pool-b", "frozen")]
    assert guest.freeze_status() == "thawed"
    for volume, text in (("vol-root", "root-before"), ("vol-data", "data-before")):
        fs = snapshot_of(guest, volume, snap.id, tmp_path)
        assert fs.e2fsck().returncode == 0, fs.e2fsck().stdout
        assert not fs.needs_recovery(), "the snapshot's journal was not flushed by a freeze"
        assert fs.read("/before.txt") == text + "\n"
    assert snapshot_of(guest, "vol-root", snap.id, tmp_path).read("/after.txt") is None
    assert guest.sh("cat /mnt/vda/after.txt") == "root-after\n"  # the guest goes on


def test_a_create_without_quiesce_freezes_nothing_and_is_crash_consistent(
    guest: Guest, spy: DriverSpy, write_config: Callable[..., Path]
) -> None:
    with Controller.from_config(write_config()) as vmsnap:
        snap = vmsnap.create_vm_snapshot(VM, quiesce=False)
        result = quiesced_result(vmsnap, snap.id)

    assert snap.state == "ready", snap.error
    assert (snap.quiesced, snap.consistency) == (False, "crash")
    assert sorted(spy.seen) == [("pool-a", "thawed"), ("pool-b", "thawed")]
    assert result["frozen"] is False
    assert result["filesystems_frozen"] is None
    for file in guest.files.values():
        assert internal_snapshots(file) == [backend_name(snap.id)]


def test_a_quiesced_volume_snapshot_freezes_the_guest_and_its_delete_removes_it(
    guest: Guest, spy: DriverSpy, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    guest.write("/mnt/vdb/volume.txt", "in-volume-snapshot")

    with Controller.from_config(write_config()) as vmsnap:
        snap = vmsnap.create_volume_snapshot("vol-data", quiesce=True)
        assert snap.state == "ready", snap.error
        assert snap.quiesced is True
        assert spy.seen == [("pool-b", "frozen")]
        assert guest.freeze_status() == "thawed"
        fs = snapshot_of(guest, "vol-data", snap.id, tmp_path)
        assert fs.e2fsck().returncode == 0
        assert not fs.needs_recovery()
        assert fs.read("/volume.txt") == "in-volume-snapshot\n"
        assert internal_snapshots(guest.files["vol-root"]) == []

        deleted = vmsnap.delete_volume_snapshot(snap.id)

    assert deleted.state == "removed", deleted.error
    assert internal_snapshots(guest.files["vol-data"]) == []
    assert guest.running()
