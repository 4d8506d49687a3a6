"""The demo's libvirt + qcow2 chapter: libvirt's test driver and real qcow2 files."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from vmsnap.controller import Controller

LIBVIRT_CONFIG = """\
# vmsnap with libvirt (here its test driver; in production uri = "qemu:///system")
# and two qcow2 pools whose volumes are real qcow2 files snapshotted with qemu-img.
[store]
url = "sqlite:///vmsnap-libvirt.db"

[[hypervisors]]
name = "kvm-lab"
type = "libvirt"
uri = "test://{node}"

[[pools]]
id = "qcow2-a"
name = "qcow2 pool A"
driver = "qcow2"
path = "libvirt/pool-a"

[[pools]]
id = "qcow2-b"
name = "qcow2 pool B"
driver = "qcow2"
path = "libvirt/pool-b"

[[vms]]
id = "web-1"
hypervisor = "kvm-lab"
domain = "web1"
volumes = [
  {{ id = "web-root", pool = "qcow2-a", type = "ROOT" }},
  {{ id = "web-data", pool = "qcow2-b", type = "DATADISK" }},
]
"""

NODE = """\
<node><domain type="test" xmlns:test="http://libvirt.org/schemas/domain/test/1.0">
<name>web1</name><memory>131072</memory><vcpu>1</vcpu><os><type arch="x86_64">hvm</type></os>
<devices>
<disk type="file" device="disk"><driver name="qemu" type="qcow2"/>
<source file="{a}"/><target dev="vda" bus="virtio"/></disk>
<disk type="file" device="disk"><driver name="qemu" type="qcow2"/>
<source file="{b}"/><target dev="vdb" bus="virtio"/></disk>
</devices><test:runstate>1</test:runstate></domain></node>
"""


def available() -> str | None:
    """
    Return why the chapter cannot run here, or None when it can.
    """
    if importlib.util.find_spec("libvirt") is None:
        return "libvirt-python is not installed (pip install 'vmsnap[libvirt]')"
    if shutil.which("qemu-img") is None:
        return "qemu-img is not installed (Debian: apt-get install qemu-utils)"
    return None


def write(folder: Path) -> Path:
    """
    Write the qcow2 volumes, the libvirt test-driver node and the config; return the config.
    """
    from vmsnap.adapters.qcow2_driver import create_volume

    base = folder / "libvirt"
    if base.exists():
        shutil.rmtree(base)
    a = create_volume(base / "pool-a", "web-root")
    b = create_volume(base / "pool-b", "web-data")
    node = base / "node.xml"
    node.write_text(NODE.format(a=a, b=b), encoding="utf-8")
    for name in ("vmsnap-libvirt.db", "vmsnap-libvirt.db-wal", "vmsnap-libvirt.db-shm"):
        (folder / name).unlink(missing_ok=True)
    config = folder / "vmsnap-libvirt.toml"
    config.write_text(LIBVIRT_CONFIG.format(node=node.resolve()), encoding="utf-8")
    return config


def snapshots_on_disk(folder: Path) -> str:
    files = sorted((folder / "libvirt").glob("pool-*/*.qcow2"))
    return snapshots_listing(((f"{f.parent.name}/{f.name}", f) for f in files), none="(none)")


def snapshots_listing(files: Iterable[tuple[str, Path]], *, none: str) -> str:
    """One line per qcow2 file: its internal snapshots (read while QEMU may hold it)."""
    lines = []
    for label, file in files:
        out = subprocess.run(
            ["qemu-img", "snapshot", "-l", "-U", str(file)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        names = [ln.split()[1] for ln in out.splitlines()[2:] if ln.split()]
        lines.append(f"{label}: {', '.join(names) or none}")
    return "\n".join(lines)


def tell(folder: Path) -> list[tuple[str, str]]:
    """
    Run a quiesced snapshot, a revert and a delete on libvirt + qcow2; return the story.
    """
    config = write(folder)
    story = []
    with Controller.from_config(config) as c:
        snap = c.create_vm_snapshot("web-1", name="nightly", quiesce=True)
        story.append(
            (
                "A quiesced snapshot of a libvirt domain on two qcow2 pools",
                f"state={snap.state} quiesced={snap.quiesced} strategy={snap.strategy} "
                f"(fsFreeze, one qemu-img snapshot per pool, fsThaw)\n{snapshots_on_disk(folder)}",
            )
        )
        reverted = c.revert_vm_snapshot(snap.id)
        story.append(("Revert it (qemu-img snapshot -a)", f"state={reverted.state}"))
        deleted = c.delete_vm_snapshot(snap.id)
        story.append(
            (
                "Delete it (qemu-img snapshot -d)",
                f"state={deleted.state}\n{snapshots_on_disk(folder)}",
            )
        )
    story.append(("Its config", f"vmsnap --config {config} vm-snapshots list --all"))
    return story
