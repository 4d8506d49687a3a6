from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from vmsnap.adapters.qcow2_driver import (
    BAD_NAME,
    EXISTS,
    LOCKED,
    MISSING,
    NO_QEMU_IMG,
    NO_SNAPSHOT,
    NOT_QCOW2,
    TIMEOUT,
    WRONG_POOL,
    Qcow2Driver,
    create_volume,
)
from vmsnap.domain.exceptions import DriverError
from vmsnap.domain.values import PoolInfo, SnapshotRef, VolumeInfo

POOL = PoolInfo("qcow2-1", "Local qcow2", "qcow2")
SNAP = SnapshotRef(id="s-1", vm_id="vm-1", name="vmsnap-s-1", quiesce=True)


@pytest.fixture
def pool_path(tmp_path: Path) -> Path:
    return tmp_path / "volumes"


@pytest.fixture
def driver(pool_path: Path) -> Qcow2Driver:
    return Qcow2Driver(POOL, pool_path)


@pytest.fixture
def volumes(pool_path: Path) -> list[VolumeInfo]:
    for volume_id in ("vol-1", "vol-2"):
        create_volume(pool_path, volume_id)
    return [VolumeInfo("vol-1", "vm-1", POOL.id, "ROOT"), VolumeInfo("vol-2", "vm-1", POOL.id)]


def qemu_img_snapshots(file: Path) -> list[str]:
    out = subprocess.run(
        ["qemu-img", "snapshot", "-l", str(file)], capture_output=True, text=True, check=True
    ).stdout
    # "ID  TAG  VM SIZE  DATE ..." rows after the header; TAG is the second column.
    return [line.split()[1] for line in out.splitlines()[2:] if line.strip()]


def write_pattern(file: Path, pattern: int) -> None:
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern:#x} 0 64k", str(file)],
        capture_output=True,
        check=True,
    )


def holds_pattern(file: Path, pattern: int) -> bool:
    done = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"read -P {pattern:#x} 0 64k", str(file)],
        capture_output=True,
        text=True,
    )
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout


@contextmanager
def held_open_by_another_process(file: Path) -> Iterator[None]:
    # qemu-io opens the image read-write, taking QEMU's image locks as a running QEMU
    # does; it has opened it once it answers a read.
    holder = subprocess.Popen(
        ["qemu-io", "-f", "qcow2", str(file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        holder.stdin.write("read 0 512\n")
        holder.stdin.flush()
        for line in holder.stdout:
            if "bytes at offset" in line:
                break
        else:
            raise AssertionError("qemu-io did not open the image")
        yield
    finally:
        holder.stdin.close()
        try:
            holder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()


def test_the_pool_advertises_storage_snapshots_that_honour_quiesce(driver: Qcow2Driver) -> None:
    caps = driver.capabilities()

    assert driver.driver == "qcow2"
    assert caps.storage_system_snapshot and caps.volume_snapshot_quiescevm


def test_create_volume_makes_an_empty_qcow2_file_named_after_the_volume(tmp_path: Path) -> None:
    file = create_volume(tmp_path / "new", "vol-7", size="8M")

    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(file)], capture_output=True, check=True
        ).stdout
    )
    assert file == tmp_path / "new" / "vol-7.qcow2"
    assert (info["format"], info["virtual-size"]) == ("qcow2", 8 * 1024 * 1024)


def test_create_volume_refuses_to_overwrite_a_volume(pool_path: Path) -> None:
    create_volume(pool_path, "vol-1")

    with pytest.raises(DriverError) as caught:
        create_volume(pool_path, "vol-1")

    assert caught.value.code == EXISTS


def test_take_vm_snapshot_snapshots_every_volume_and_lets_the_vm_be_unquiesced(
    driver: Qcow2Driver, volumes: list[VolumeInfo], pool_path: Path
) -> None:
    answer = driver.take_vm_snapshot(volumes, SNAP)

    assert answer is True
    assert qemu_img_snapshots(pool_path / "vol-1.qcow2") == ["vmsnap-s-1"]
    assert qemu_img_snapshots(pool_path / "vol-2.qcow2") == ["vmsnap-s-1"]


def test_list_snapshots_agrees_with_qemu_img_and_keeps_names_with_spaces(
    driver: Qcow2Driver, volumes: list[VolumeInfo], pool_path: Path
) -> None:
    driver.take_snapshot(volumes[0], "first")
    driver.take_snapshot(volumes[0], "with space")

    assert driver.list_snapshots("vol-1") == ["first", "with space"]
    assert qemu_img_snapshots(pool_path / "vol-1.qcow2")[0] == "first"


def test_revert_vm_snapshot_restores_the_data_of_every_volume(
    driver: Qcow2Driver, volumes: list[VolumeInfo], pool_path: Path
) -> None:
    files = [pool_path / "vol-1.qcow2", pool_path / "vol-2.qcow2"]
    for file in files:
        write_pattern(file, 0xAA)
    driver.take_vm_snapshot(volumes, SNAP)
    for file in files:
        write_pattern(file, 0xBB)

    assert driver.revert_vm_snapshot(volumes, SNAP) is True

    assert all(holds_pattern(file, 0xAA) for file in files)
    assert qemu_img_snapshots(files[0]) == ["vmsnap-s-1"]


def test_revert_checks_every_volume_first_and_reverts_none_when_one_lacks_the_snapshot(
    driver: Qcow2Driver, volumes: list[VolumeInfo], pool_path: Path
) -> None:
    vol1 = pool_path / "vol-1.qcow2"
    write_pattern(vol1, 0xAA)
    driver.take_snapshot(volumes[0], SNAP.name)
    write_pattern(vol1, 0xBB)

    with pytest.raises(DriverError) as caught:
        driver.revert_vm_snapshot(volumes, SNAP)

    assert caught.value.code == NO_SNAPSHOT
    assert str(pool_path / "vol-2.qcow2") in caught.value.message
    assert holds_pattern(vol1, 0xBB)


def test_delete_vm_snapshot_deletes_it_everywhere_and_deleting_again_succeeds(
    driver: Qcow2Driver, volumes: list[VolumeInfo], pool_path: Path
) -> None:
    driver.take_vm_snapshot(volumes, SNAP)
    driver.take_snapshot(volumes[1], "keep")

    assert driver.delete_vm_snapshot(volumes, SNAP) is True
    assert driver.delete_vm_snapshot(volumes, SNAP) is True

    assert qemu_img_snapshots(pool_path / "vol-1.qcow2") == []
    assert qemu_img_snapshots(pool_path / "vol-2.qcow2") == ["keep"]


def test_a_volume_snapshot_is_taken_and_deleted_on_its_volume_only(
    driver: Qcow2Driver, volumes: list[VolumeInfo], pool_path: Path
) -> None:
    ref = driver.take_snapshot(volumes[1], "vmsnap-v-1")

    assert ref == "vol-2.qcow2@vmsnap-v-1"
    assert qemu_img_snapshots(pool_path / "vol-2.qcow2") == ["vmsnap-v-1"]
    assert qemu_img_snapshots(pool_path / "vol-1.qcow2") == []

    driver.delete_snapshot(volumes[1], "vmsnap-v-1")
    driver.delete_snapshot(volumes[1], "vmsnap-v-1")

    assert qemu_img_snapshots(pool_path / "vol-2.qcow2") == []


def test_a_volume_snapshot_can_be_reverted(
    driver: Qcow2Driver, volumes: list[VolumeInfo], pool_path: Path
) -> None:
    vol2 = pool_path / "vol-2.qcow2"
    write_pattern(vol2, 0x11)
    driver.take_snapshot(volumes[1], "vmsnap-v-1")
    write_pattern(vol2, 0x22)

    driver.revert_snapshot(volumes[1], "vmsnap-v-1")

    assert holds_pattern(vol2, 0x11)


def test_a_missing_volume_file_is_a_driver_error_naming_the_file(
    driver: Qcow2Driver, pool_path: Path
) -> None:
    pool_path.mkdir()
    ghost = VolumeInfo("vol-9", "vm-1", POOL.id)

    with pytest.raises(DriverError) as caught:
        driver.take_vm_snapshot([ghost], SNAP)

    assert caught.value.code == MISSING
    assert f"{pool_path / 'vol-9.qcow2'} does not exist" in caught.value.message


def test_a_file_that_is_not_qcow2_is_a_driver_error_naming_the_file_and_format(
    driver: Qcow2Driver, pool_path: Path
) -> None:
    pool_path.mkdir()
    (pool_path / "vol-raw.qcow2").write_bytes(b"\0" * 65536)
    raw = VolumeInfo("vol-raw", "vm-1", POOL.id)

    with pytest.raises(DriverError) as caught:
        driver.take_snapshot(raw, "vmsnap-v-1")

    assert caught.value.code == NOT_QCOW2
    assert f"{pool_path / 'vol-raw.qcow2'} is not a qcow2 image (format raw)" in (
        caught.value.message
    )


def test_an_image_in_use_by_another_process_is_a_locked_driver_error(
    driver: Qcow2Driver, volumes: list[VolumeInfo], pool_path: Path
) -> None:
    file = pool_path / "vol-1.qcow2"

    with held_open_by_another_process(file), pytest.raises(DriverError) as caught:
        driver.take_snapshot(volumes[0], "vmsnap-v-1")

    assert caught.value.code == LOCKED
    assert str(file) in caught.value.message
    assert 'Failed to get "write" lock' in caught.value.message
    assert qemu_img_snapshots(file) == []


def test_a_failure_mid_take_deletes_the_snapshots_already_made_by_that_call(
    driver: Qcow2Driver, volumes: list[VolumeInfo], pool_path: Path
) -> None:
    with held_open_by_another_process(pool_path / "vol-2.qcow2"):
        with pytest.raises(DriverError) as caught:
            driver.take_vm_snapshot(volumes, SNAP)

        assert caught.value.code == LOCKED
        assert "rolled back the snapshot of vol-1" in caught.value.message
    assert qemu_img_snapshots(pool_path / "vol-1.qcow2") == []
    assert qemu_img_snapshots(pool_path / "vol-2.qcow2") == []


def test_a_name_already_taken_on_one_volume_refuses_the_take_before_touching_any(
    driver: Qcow2Driver, volumes: list[VolumeInfo], pool_path: Path
) -> None:
    driver.take_snapshot(volumes[1], SNAP.name)

    with pytest.raises(DriverError) as caught:
        driver.take_vm_snapshot(volumes, SNAP)

    assert caught.value.code == EXISTS
    assert qemu_img_snapshots(pool_path / "vol-1.qcow2") == []
    assert qemu_img_snapshots(pool_path / "vol-2.qcow2") == [SNAP.name]


def test_a_volume_of_another_pool_is_refused(driver: Qcow2Driver) -> None:
    stranger = VolumeInfo("vol-1", "vm-1", "nfs-1")

    with pytest.raises(DriverError) as caught:
        driver.take_snapshot(stranger, "vmsnap-v-1")

    assert caught.value.code == WRONG_POOL


@pytest.mark.parametrize("volume_id", ["../etc", ".hidden", "a/b", ""])
def test_a_volume_id_that_would_leave_the_pool_folder_is_refused(
    driver: Qcow2Driver, volume_id: str
) -> None:
    with pytest.raises(DriverError) as caught:
        driver.take_snapshot(VolumeInfo(volume_id, "vm-1", POOL.id), "vmsnap-v-1")

    assert caught.value.code == BAD_NAME


def test_an_all_digit_snapshot_name_is_refused_as_it_could_match_a_snapshot_id(
    driver: Qcow2Driver, volumes: list[VolumeInfo]
) -> None:
    with pytest.raises(DriverError) as caught:
        driver.take_snapshot(volumes[0], "1")

    assert caught.value.code == BAD_NAME


def test_a_missing_qemu_img_program_is_a_driver_error(
    volumes: list[VolumeInfo], pool_path: Path
) -> None:
    driver = Qcow2Driver(POOL, pool_path, qemu_img=str(pool_path / "no-such-qemu-img"))

    with pytest.raises(DriverError) as caught:
        driver.take_snapshot(volumes[0], "vmsnap-v-1")

    assert caught.value.code == NO_QEMU_IMG


def test_a_qemu_img_call_that_outlives_its_timeout_is_killed_and_reported(
    volumes: list[VolumeInfo], pool_path: Path, tmp_path: Path
) -> None:
    stuck = tmp_path / "stuck-qemu-img"
    stuck.write_text("#!/bin/sh\nexec sleep 30\n")
    stuck.chmod(0o755)
    driver = Qcow2Driver(POOL, pool_path, qemu_img=str(stuck), timeout_s=0.2)

    with pytest.raises(DriverError) as caught:
        driver.take_snapshot(volumes[0], "vmsnap-v-1")

    assert caught.value.code == TIMEOUT
    assert re.search(r"did not finish within 0\.2s", caught.value.message)
