"""
Fixtures of the real-guest tests: a libvirtd of our own (scripts/libvirtd.sh), the test
guest's kernel and initramfs (scripts/build-test-guest.sh, cached), one booted guest per
test module, reset before each test, and a config that drives it through vmsnap.

Without the Debian packages the tests skip with a loud reason; with
``VMSNAP_REQUIRE_REAL_GUEST=1`` (set by .ci/run) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.realguest.guest import (
    BUILD_GUEST,
    LIBVIRTD,
    VM,
    VOLUMES,
    Guest,
    internal_snapshots,
    missing,
    run,
)
from tests.support import Config
from tests.support import write_config as write_config_file
from vmsnap.adapters.qcow2_driver import Qcow2Driver
from vmsnap.domain.values import SnapshotRef, VolumeInfo

REQUIRE = "VMSNAP_REQUIRE_REAL_GUEST"


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"a real guest is required here ({REQUIRE}=1) but {reason}")
    pytest.skip(f"REAL-GUEST TESTS NOT RUN: {reason}")


@pytest.fixture(scope="session")
def libvirt_uri() -> Iterator[str]:
    reason = missing()
    if reason is not None:
        _unavailable(reason)
    folder = tempfile.mkdtemp(prefix="vmsnap-libvirtd.")
    started = run(LIBVIRTD, "start", folder, check=False)
    if started.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        _unavailable(f"libvirtd did not start: {started.stderr.strip()}")
    try:
        yield started.stdout.strip()
    finally:
        run(LIBVIRTD, "stop", folder, check=False)


@pytest.fixture(scope="session")
def guest_kernel(libvirt_uri: str) -> Path:
    built = run(BUILD_GUEST, check=False)
    if built.returncode != 0:
        _unavailable(f"the test guest could not be built: {built.stderr.strip()}")
    return Path(built.stdout.strip())


@pytest.fixture(scope="module")
def booted_guest(libvirt_uri: str, guest_kernel: Path) -> Iterator[Guest]:
    # Under /tmp and world-readable: libvirtd and QEMU look at these files.
    folder = Path(tempfile.mkdtemp(prefix="vmsnap-guest."))
    folder.chmod(0o755)
    guest = Guest(libvirt_uri, f"vmsnap-test-{uuid.uuid4().hex[:8]}", folder, guest_kernel)
    try:
        guest.boot()
        yield guest
    finally:
        guest.close()
        shutil.rmtree(folder, ignore_errors=True)


def reset(guest: Guest) -> None:
    """
    Bring the module's guest back to: running, agent answering, thawed, images without
    internal snapshots (a test may have killed its agent or left it frozen).
    """
    if guest.running() and not guest.agent_answers():
        guest.destroy()
    if guest.running() and guest.freeze_status() == "frozen":
        guest.dom.fsThaw()
    leftovers = any(internal_snapshots(f) for f in guest.files.values())
    if guest.running() and leftovers:
        guest.destroy()  # internal snapshots are removed with the images at rest
    for file in guest.files.values():
        for name in internal_snapshots(file):
            run("qemu-img", "snapshot", "-d", name, file)
    guest.boot()


@pytest.fixture
def guest(booted_guest: Guest) -> Guest:
    """The module's guest, reset (see :func:`reset`)."""
    reset(booted_guest)
    return booted_guest


@pytest.fixture
def write_config(tmp_path: Path, guest: Guest) -> Callable[..., Path]:
    """
    Write a config for the guest: a libvirt hypervisor on qemu:///system, pools
    ``pool-a`` and ``pool-b`` (qcow2) and the VM ``vm-real`` (with ``hooks``, when
    given); other keyword arguments go to ``[limits]``.
    """

    def write(hooks: dict[str, Any] | None = None, **limits: Any) -> Path:
        volumes = [
            {"id": v, "pool": pool, "type": "ROOT" if dev == "vda" else "DATADISK"}
            for v, (pool, dev) in VOLUMES.items()
        ]
        config = Config(
            hypervisors=[{"name": "kvm", "type": "libvirt", "uri": guest.uri}],
            pools=[
                {"id": pool, "name": pool, "driver": "qcow2", "path": str(path)}
                for pool, path in guest.pools.items()
            ],
            vms=[
                {"id": VM, "hypervisor": "kvm", "domain": guest.name, "volumes": volumes}
                | ({"hooks": hooks} if hooks else {})
            ],
            limits=limits,
        )
        return write_config_file(tmp_path, config)

    return write


@attrs.define
class DriverSpy:
    """
    What the guest agent reported while each qcow2 driver call ran (pool id, status),
    and an optional hook run inside the call before the driver snapshots anything.
    """

    guest: Guest
    seen: list[tuple[str, str]] = attrs.Factory(list)
    hook: Callable[[str], None] | None = None


@pytest.fixture
def spy(guest: Guest, monkeypatch: pytest.MonkeyPatch) -> DriverSpy:
    """Watch every qcow2 snapshot call (VM and volume snapshots both go through it)."""
    spy = DriverSpy(guest)
    original = Qcow2Driver.take_vm_snapshot

    def take(self: Qcow2Driver, volumes: list[VolumeInfo], snapshot: SnapshotRef) -> bool:
        spy.seen.append((self.pool.id, guest.freeze_status()))
        if spy.hook is not None:
            spy.hook(self.pool.id)
        return original(self, volumes, snapshot)

    monkeypatch.setattr(Qcow2Driver, "take_vm_snapshot", take)
    return spy
