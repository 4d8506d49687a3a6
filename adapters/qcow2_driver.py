"""
The qcow2 storage driver: a pool is a folder of ``<volume-id>.qcow2`` files, and every
snapshot is a real internal qcow2 snapshot, made with ``qemu-img snapshot`` or, while a
running guest holds the image open, by that guest's QEMU (ADR 0016).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vmsnap.domain.exceptions import DriverError
from vmsnap.domain.ports import Hypervisor, LiveImage, StorageDriver
from vmsnap.domain.values import Capabilities, PoolInfo, SnapshotRef, VmInfo, VolumeInfo

DEFAULT_TIMEOUT_S = 120.0

#: DriverError codes this driver raises (qemu-img has no error codes of its own).
MISSING = "missing"
NOT_QCOW2 = "not-qcow2"
LOCKED = "locked"
EXISTS = "exists"
NO_SNAPSHOT = "no-snapshot"
BAD_NAME = "bad-name"
WRONG_POOL = "wrong-pool"
TIMEOUT = "timeout"
NO_QEMU_IMG = "qemu-img-missing"
FAILED = "qemu-img-failed"
IN_USE = "in-use"

#: The hypervisor that runs a volume's VM, and that VM.
HypervisorFor = Callable[[VolumeInfo], tuple[Hypervisor, VmInfo]]


class Qcow2Driver(StorageDriver):
    """
    A pool whose volumes are qcow2 files in one folder; snapshots are internal qcow2
    snapshots, one snapshot name per vmsnap snapshot.

    qemu-img takes QEMU's image locks: an image opened for writing by another process
    cannot be snapshotted by it. When ``hypervisor_for`` is given and the volume's VM runs
    with the image open (:meth:`Hypervisor.live_image`), that guest's QEMU takes and
    deletes the internal snapshot instead; a revert then is refused (``in-use``: stop the
    VM first). An image locked by anything else fails with a ``locked`` DriverError.

    Args:
        pool: the pool it serves.
        path: the folder holding the pool's ``<volume-id>.qcow2`` files.
        qemu_img: the qemu-img program to run.
        timeout_s: the longest one qemu-img call may take before it is killed.
        hypervisor_for: the hypervisor that runs a volume's VM, and that VM.
    """

    driver = "qcow2"

    def __init__(
        self,
        pool: PoolInfo,
        path: str | os.PathLike[str],
        qemu_img: str = "qemu-img",
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        hypervisor_for: HypervisorFor | None = None,
    ) -> None:
        self.pool = pool
        self.path = Path(path)
        self.qemu_img = qemu_img
        self.timeout_s = timeout_s
        self._hypervisor_for = hypervisor_for

    def __repr__(self) -> str:
        return f"Qcow2Driver({self.pool.id!r}, {str(self.path)!r})"

    def capabilities(self) -> Capabilities:
        """
        Advertise storage snapshots that honour a quiesced VM: the driver captures its
        volumes itself while the VM is quiesced.
        """
        return Capabilities(volume_snapshot_quiescevm=True, storage_system_snapshot=True)

    def volume_path(self, volume_id: str) -> Path:
        """
        Return the file of volume ``volume_id``.

        Raises:
            DriverError: the id cannot name a file inside the pool folder.
        """
        return _volume_file(self.path, volume_id)

    def list_snapshots(self, volume_id: str) -> list[str]:
        """
        Return the names of the internal snapshots of volume ``volume_id``, oldest first.

        Raises:
            DriverError: the file is missing, is not qcow2, or qemu-img failed.
        """
        return _snapshot_names(self._info(volume_id, self.volume_path(volume_id)))

    def held_snapshots(self, volume: VolumeInfo) -> list[str] | None:
        return self.list_snapshots(volume.id)  # qemu-img snapshot -l, through qemu-img info

    def take_vm_snapshot(self, volumes: Sequence[VolumeInfo], snapshot: SnapshotRef) -> bool:
        """
        Snapshot every volume as ``snapshot.name``; on a failure, delete the snapshots this
        call already made, then raise. Answer True: the volumes were captured here, so the
        VM may be unquiesced as far as this driver is concerned.
        """
        _check_name(snapshot.name)
        files = [self._file(v) for v in volumes]
        for volume, file in zip(volumes, files, strict=True):
            if snapshot.name in _snapshot_names(self._info(volume.id, file)):
                raise DriverError(
                    f"volume {volume.id}: {file} already has a snapshot named {snapshot.name}",
                    EXISTS,
                )
        made: list[tuple[VolumeInfo, Path]] = []
        for volume, file in zip(volumes, files, strict=True):
            try:
                self._create(volume, file, snapshot.name)
            except DriverError as e:
                # The failed call may still have made it (killed on timeout): undo it too.
                raise self._rolled_back(e, [*made, (volume, file)], snapshot.name) from None
            made.append((volume, file))
        return True

    def revert_vm_snapshot(self, volumes: Sequence[VolumeInfo], snapshot: SnapshotRef) -> bool:
        """
        Revert every volume to ``snapshot.name``, after checking that all of them have it.
        """
        _check_name(snapshot.name)
        files = [self._file(v) for v in volumes]
        for volume, file in zip(volumes, files, strict=True):
            if snapshot.name not in _snapshot_names(self._info(volume.id, file)):
                raise DriverError(
                    f"volume {volume.id}: {file} has no snapshot named {snapshot.name};"
                    " nothing was reverted",
                    NO_SNAPSHOT,
                )
        for volume, file in zip(volumes, files, strict=True):
            if self._live(volume, file) is not None:
                raise DriverError(
                    f"volume {volume.id}: {file} is open in a running guest: stop the VM"
                    " first (an internal snapshot is reverted with the image at rest);"
                    " nothing was reverted",
                    IN_USE,
                )
        done: list[str] = []
        for volume, file in zip(volumes, files, strict=True):
            try:
                self._snapshot(volume.id, file, "-a", snapshot.name)
            except DriverError as e:
                already = ", ".join(done) or "none"
                raise DriverError(
                    f"{e.message} (volumes already reverted: {already})", e.code
                ) from None
            done.append(volume.id)
        return True

    def delete_vm_snapshot(self, volumes: Sequence[VolumeInfo], snapshot: SnapshotRef) -> bool:
        """
        Delete ``snapshot.name`` from every volume that has it; a volume without it is fine.
        """
        _check_name(snapshot.name)
        for volume in volumes:
            self._delete(volume, self._file(volume), snapshot.name)
        return True

    def take_snapshot(self, volume: VolumeInfo, name: str) -> str:
        """
        Take the internal snapshot ``name`` of one volume; return ``<file name>@<name>``.
        """
        self.take_vm_snapshot([volume], SnapshotRef(id=name, vm_id=volume.vm_id, name=name))
        return f"{self._file(volume).name}@{name}"

    def revert_snapshot(self, volume: VolumeInfo, name: str) -> None:
        """
        Revert one volume to its internal snapshot ``name``.
        """
        self.revert_vm_snapshot([volume], SnapshotRef(id=name, vm_id=volume.vm_id, name=name))

    def delete_snapshot(self, volume: VolumeInfo, name: str) -> None:
        """
        Delete the internal snapshot ``name`` of one volume; deleting one that is gone succeeds.
        """
        _check_name(name)
        self._delete(volume, self._file(volume), name)

    def _file(self, volume: VolumeInfo) -> Path:
        if volume.pool_id != self.pool.id:
            raise DriverError(
                f"volume {volume.id} is on pool {volume.pool_id}, not on {self.pool.id}",
                WRONG_POOL,
            )
        return self.volume_path(volume.id)

    def _live(self, volume: VolumeInfo, file: Path) -> LiveImage | None:
        if self._hypervisor_for is None:
            return None
        hypervisor, vm = self._hypervisor_for(volume)
        return hypervisor.live_image(vm, volume, str(file.absolute()))

    def _create(self, volume: VolumeInfo, file: Path, name: str) -> None:
        live = self._live(volume, file)
        if live is None:
            self._snapshot(volume.id, file, "-c", name)
        else:
            live.create_snapshot(name)

    def _delete(self, volume: VolumeInfo, file: Path, name: str) -> int:
        # qcow2 allows several snapshots with one name; delete them all (bounded).
        count = _snapshot_names(self._info(volume.id, file)).count(name)
        live = self._live(volume, file) if count else None
        for _ in range(count):
            if live is None:
                self._snapshot(volume.id, file, "-d", name)
            else:
                live.delete_snapshot(name)
        return count

    def _rolled_back(
        self, error: DriverError, touched: list[tuple[VolumeInfo, Path]], name: str
    ) -> DriverError:
        undone, stuck = [], []
        for volume, file in reversed(touched):
            try:
                if self._delete(volume, file, name):
                    undone.append(volume.id)
            except DriverError as e:
                stuck.append(f"{volume.id} ({e.message})")
        note = ""
        if undone:
            note += f"; rolled back the snapshot of {', '.join(undone)}"
        if stuck:
            note += f"; could NOT roll back {', '.join(stuck)}"
        return DriverError(error.message + note, error.code)

    def _info(self, volume_id: str, file: Path) -> dict[str, Any]:
        if not file.is_file():
            raise DriverError(f"volume {volume_id}: {file} does not exist", MISSING)
        # -U: read the header even while another process holds the image; the
        # operation itself then meets the lock.
        out = self._run(volume_id, file, ["info", "-U", "--output=json", str(file)])
        try:
            info: dict[str, Any] = json.loads(out)
        except ValueError:
            raise DriverError(
                f"volume {volume_id}: qemu-img info on {file} gave no JSON", FAILED
            ) from None
        if info.get("format") != "qcow2":
            raise DriverError(
                f"volume {volume_id}: {file} is not a qcow2 image (format {info.get('format')})",
                NOT_QCOW2,
            )
        return info

    def _snapshot(self, volume_id: str, file: Path, op: str, name: str) -> None:
        # --image-opts pins the qcow2 format (no probing); commas in paths are doubled.
        opts = "driver=qcow2,file.driver=file,file.filename=" + str(file).replace(",", ",,")
        self._run(volume_id, file, ["snapshot", "--image-opts", op, name, opts])

    def _run(self, volume_id: str, file: Path, args: list[str]) -> str:
        return run_qemu_img(self.qemu_img, args, self.timeout_s, f"volume {volume_id}: {file}")


def create_volume(
    path_folder: str | os.PathLike[str],
    volume_id: str,
    size: str = "16M",
    *,
    qemu_img: str = "qemu-img",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """
    Create an empty qcow2 volume ``<path_folder>/<volume_id>.qcow2`` (for demos and tests).

    Args:
        path_folder: the pool folder; created if missing.
        volume_id: the volume's id, which names the file.
        size: its virtual size, as qemu-img reads it ("16M", "1G").

    Returns:
        The path of the new file.

    Raises:
        DriverError: the file exists already, or qemu-img failed.
    """
    folder = Path(path_folder)
    file = _volume_file(folder, volume_id)
    if file.exists():
        raise DriverError(f"volume {volume_id}: {file} exists already", EXISTS)
    folder.mkdir(parents=True, exist_ok=True)
    args = ["create", "-q", "-f", "qcow2", str(file), size]
    run_qemu_img(qemu_img, args, timeout_s, f"volume {volume_id}: {file}")
    return file


def run_qemu_img(qemu_img: str, args: list[str], timeout_s: float, what: str) -> str:
    """
    Run qemu-img with ``args`` (no shell) and return its standard output.

    Raises:
        DriverError: qemu-img is missing, timed out or failed; the message names ``what``
            and carries qemu-img's own message.
    """
    env = {**os.environ, "LC_ALL": "C"}
    try:
        done = subprocess.run(
            [qemu_img, *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        raise DriverError(f"{what}: qemu-img program {qemu_img!r} not found", NO_QEMU_IMG) from None
    except subprocess.TimeoutExpired:
        raise DriverError(
            f"{what}: qemu-img {args[0]} did not finish within {timeout_s:g}s (killed)", TIMEOUT
        ) from None
    if done.returncode != 0:
        message = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        code = _classify(message)
        if code == LOCKED:
            message = f"image is locked by another process (a running QEMU?): {message}"
        raise DriverError(f"{what}: {message}", code)
    return done.stdout


def _classify(message: str) -> str:
    if "lock" in message and "Failed to get" in message:
        return LOCKED
    if "No such file or directory" in message:
        return MISSING
    if "not in qcow2 format" in message:
        return NOT_QCOW2
    if "snapshot not found" in message or "Failed to load snapshot" in message:
        return NO_SNAPSHOT
    return FAILED


def _volume_file(folder: Path, volume_id: str) -> Path:
    if not volume_id or "/" in volume_id or "\0" in volume_id or volume_id.startswith("."):
        raise DriverError(f"bad volume id {volume_id!r} for a file in {folder}", BAD_NAME)
    return folder / f"{volume_id}.qcow2"


def _snapshot_names(info: dict[str, Any]) -> list[str]:
    return [str(s["name"]) for s in info.get("snapshots", [])]


def _check_name(name: str) -> None:
    # qemu-img finds a snapshot by ID or by name: an all-digit name could hit another
    # snapshot's ID.
    if not name or name.isdigit() or "\0" in name:
        raise DriverError(f"bad qcow2 snapshot name {name!r} (empty, or all digits)", BAD_NAME)
