"""
The demo's real-guest chapter (ADR 0016): a quiesced VM snapshot of a running QEMU guest
through libvirt ``qemu:///system`` and its guest agent, a revert with the guest shut off,
and a delete. It boots the tests' guest (``scripts/build-test-guest.sh``) under a libvirtd
of its own (``scripts/libvirtd.sh``), so it runs from a source checkout, as root, with the
Debian packages ``.ci/run`` installs; :func:`available` says why not otherwise.

The CLI's demo calls ``available()`` and then ``tell(folder)``, as for
``vmsnap.demo_libvirt``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from vmsnap.controller import Controller
from vmsnap.demo_libvirt import snapshots_listing


def _checkout() -> Path | None:
    # A strict editable install links this file from src/vmsnap/ of the checkout.
    root = Path(__file__).resolve().parents[2]
    found = (root / "scripts" / "build-test-guest.sh").is_file()
    return root if found and (root / "tests" / "realguest" / "guest.py").is_file() else None


def available() -> str | None:
    """
    Return why the chapter cannot run here, or None when it can.
    """
    root = _checkout()
    if root is None:
        return "needs a source checkout of vmsnap (scripts/ and tests/realguest/)"
    if str(root) not in sys.path:
        sys.path.append(str(root))
    from tests.realguest.guest import missing

    return missing()


def _config(folder: Path, guest: Any) -> Path:
    from tests.realguest.guest import VOLUMES
    from tests.toml_text import toml_table

    parts = [toml_table("[store]", {"url": "sqlite:///vmsnap-real-guest.db"})]
    hypervisor = {"name": "kvm", "type": "libvirt", "uri": guest.uri}
    parts.append(toml_table("[[hypervisors]]", hypervisor))
    for pool, path in guest.pools.items():
        fields = {"id": pool, "name": pool, "driver": "qcow2", "path": str(path)}
        parts.append(toml_table("[[pools]]", fields))
    volumes = [{"id": v, "pool": p, "type": "DATADISK"} for v, (p, _) in VOLUMES.items()]
    vm = {"id": "vm-real", "hypervisor": "kvm", "domain": guest.name, "volumes": volumes}
    parts.append(toml_table("[[vms]]", vm))
    for name in ("vmsnap-real-guest.db", "vmsnap-real-guest.db-wal", "vmsnap-real-guest.db-shm"):
        (folder / name).unlink(missing_ok=True)
    config = folder / "vmsnap-real-guest.toml"
    config.write_text("\n".join(parts), encoding="utf-8")
    return config


def _on_disk(guest: Any) -> str:
    return snapshots_listing(guest.files.items(), none="(no internal snapshot)")


def tell(folder: Path) -> list[tuple[str, str]]:
    """
    Boot the test guest, snapshot it quiesced, revert with it shut off, delete; return
    the story. The guest and its libvirtd are gone afterwards.
    """
    story = []
    from tests.realguest.guest import running_guest

    with running_guest("demo", folder) as guest:
        guest.write("/mnt/vda/motd", "before the snapshot")
        with Controller.from_config(_config(folder, guest)) as c:
            snap = c.create_vm_snapshot("vm-real", name="nightly", quiesce=True)
            story.append(
                (
                    "A quiesced snapshot of a running QEMU guest",
                    f"state={snap.state} quiesced={snap.quiesced} consistency="
                    f"{snap.consistency} (guest-ping, fsFreeze, the running QEMU takes one"
                    f" internal snapshot per disk, fsThaw)\n{_on_disk(guest)}",
                )
            )
            guest.write("/mnt/vda/motd", "after the snapshot")
            guest.shut_off()
            reverted = c.revert_vm_snapshot(snap.id)
            guest.boot()
            motd = guest.sh("cat /mnt/vda/motd").strip()
            story.append(
                (
                    "Revert it with the guest shut off, boot again",
                    f"state={reverted.state}; the guest reads /mnt/vda/motd: {motd!r}",
                )
            )
            deleted = c.delete_vm_snapshot(snap.id)
            story.append(
                (
                    "Delete it while the guest runs (QMP)",
                    f"state={deleted.state}\n{_on_disk(guest)}",
                )
            )
    return story
