"""
Helpers that write node XML for libvirt's test driver (``test:///<file>.xml``) whose
domains have disks backed by real qcow2 files.

The test driver parses the file on every ``libvirt.open``: each connection starts from
the file's state, so one file per test keeps tests apart.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from vmsnap.adapters.qcow2_driver import create_volume
from vmsnap.domain.values import VmInfo, VolumeInfo

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
#: virDomainState values the test driver reads from <test:runstate>.
RUNNING = 1
SHUTOFF = 5
TARGETS = ("vda", "vdb", "vdc", "vdd")


@attrs.frozen
class LibvirtNode:
    """
    A test-driver node file and the VM (and its qcow2 volumes) it describes.
    """

    uri: str
    path: Path
    pool_path: Path
    vm: VmInfo

    def volume_file(self, volume_id: str) -> Path:
        return self.pool_path / f"{volume_id}.qcow2"


def domain_xml(
    name: str,
    disks: Mapping[str, Path],
    *,
    running: bool = True,
    serials: Mapping[str, str] | None = None,
) -> ET.Element:
    """
    Build a test-driver domain whose disks (target dev -> qcow2 file) are virtio disks;
    ``serials`` gives a disk's <serial> (target dev -> serial).
    """
    ET.register_namespace("test", TEST_NS)
    dom = ET.Element("domain", type="test")
    ET.SubElement(dom, "name").text = name
    ET.SubElement(dom, "memory").text = "131072"
    ET.SubElement(dom, "vcpu").text = "1"
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64").text = "hvm"
    devices = ET.SubElement(dom, "devices")
    for target, file in disks.items():
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type="qcow2")
        ET.SubElement(disk, "source", file=str(file))
        ET.SubElement(disk, "target", dev=target, bus="virtio")
        if serials and target in serials:
            ET.SubElement(disk, "serial").text = serials[target]
    ET.SubElement(dom, f"{{{TEST_NS}}}runstate").text = str(RUNNING if running else SHUTOFF)
    return dom


def write_node(path: Path, domains: Sequence[ET.Element]) -> str:
    """
    Write a test-driver node file holding ``domains``; return its URI.
    """
    node = ET.Element("node")
    node.extend(domains)
    path.write_text(ET.tostring(node, encoding="unicode"), encoding="utf-8")
    return f"test://{path.resolve()}"


def node_with_vm(
    folder: Path,
    *,
    domain: str = "vm1",
    vm_id: str = "vm-1",
    volumes: Sequence[str] = ("vol-1", "vol-2"),
    running: bool = True,
    pool_id: str = "qcow2-1",
    serials: bool = False,
) -> LibvirtNode:
    """
    Create qcow2 volumes in ``folder/pool`` and a node file ``folder/node.xml`` with one
    domain using them as vda, vdb, ... (the files are named ``<volume-id>.qcow2``, which
    is how the hypervisor finds a volume's disk unless ``serials`` sets <serial>).
    """
    pool = folder / "pool"
    files = {TARGETS[i]: create_volume(pool, vol) for i, vol in enumerate(volumes)}
    serial_map = {TARGETS[i]: vol for i, vol in enumerate(volumes)} if serials else None
    uri = write_node(
        folder / "node.xml", [domain_xml(domain, files, running=running, serials=serial_map)]
    )
    vols = [
        VolumeInfo(vol, vm_id, pool_id, "ROOT" if i == 0 else "DATADISK")
        for i, vol in enumerate(volumes)
    ]
    vm = VmInfo(vm_id, "kvm-1", "Running" if running else "Stopped", vols, domain)
    return LibvirtNode(uri, folder / "node.xml", pool, vm)
