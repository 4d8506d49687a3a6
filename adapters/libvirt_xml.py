"""
The XML of libvirt domain snapshots and disks (pure functions, ADR 0007 and 0016): the
``<domainsnapshot>`` request vmsnap sends, and which disk of a domain holds a volume.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Collection, Sequence
from pathlib import PurePosixPath
from typing import Any

import attrs
import libvirt

from vmsnap.domain.values import VolumeInfo

FLAG_NAMES = (
    (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY, "DISK_ONLY"),
    (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE, "QUIESCE"),
    (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC, "ATOMIC"),
)


def snapshot_request(
    name: str,
    *,
    active: bool,
    memory: bool,
    quiesce: bool,
    disk_only: bool,
    disk: str | None = None,
    disks: Sequence[str] = (),
    only: Collection[str] | None = None,
    description: str | None = None,
) -> tuple[int, str]:
    """
    Return the flags and the ``<domainsnapshot>`` XML vmsnap gives ``snapshotCreateXML``.

    Args:
        name: the snapshot's name.
        active: whether the domain runs.
        memory: save the running guest's memory (an internal full-system snapshot).
        quiesce: ask for QUIESCE (guest freeze and thaw around the snapshot).
        disk_only: whether the driver has disk-only snapshots (QEMU does; the test driver
            does not, and then takes internal snapshots of every disk).
        disk: capture only this disk (target dev), for a volume snapshot.
        disks: every disk of the domain (the others are marked ``snapshot='no'``).
        only: capture only these disks (target devs), e.g. those no storage driver
            captures itself; ``disk`` is the same as ``only=[disk]``.
        description: the snapshot's ``<description>`` (it marks volume snapshots).
    """
    if disk is not None:
        only = [disk]
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    if description is not None:
        ET.SubElement(root, "description").text = description
    flags = 0
    external = active and not memory and disk_only
    if external:
        # A running QEMU guest: disk-only means external overlays (libvirt names them).
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
    elif not (active and memory):
        ET.SubElement(root, "memory", snapshot="no")
    if quiesce:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE
    if only is not None:
        element = ET.SubElement(root, "disks")
        kind = "external" if external else "internal"
        for name_ in only:
            ET.SubElement(element, "disk", name=name_, snapshot=kind)
        if disk_only:
            for other in disks:
                if other not in only:
                    ET.SubElement(element, "disk", name=other, snapshot="no")
    return flags, ET.tostring(root, encoding="unicode")


def disk_for(domain_xml: str, volume: VolumeInfo) -> str | None:
    """
    Return the target dev of the disk that holds ``volume`` in a domain's XML, or None.

    A disk whose ``<serial>`` is the volume id wins; otherwise the first disk whose source
    file (or block device, network name, pool volume) is named ``<volume-id>[.ext]``,
    whose alias is ``ua-<volume-id>``, or whose target dev is the volume id.
    """
    disks = _disks(domain_xml)
    for d in disks:
        if d.serial == volume.id:
            return d.target
    return next((d.target for d in disks if volume.id in d.keys), None)


def disk_targets(domain_xml: str) -> list[str]:
    """
    Return the target devs of a domain's disks (``device='disk'``), in order.
    """
    return [d.target for d in _disks(domain_xml)]


@attrs.frozen
class _Disk:
    target: str
    serial: str | None
    keys: frozenset[str]


def _disks(domain_xml: str) -> list[_Disk]:
    out = []
    for disk in ET.fromstring(domain_xml).iterfind("./devices/disk"):
        target = disk.find("target")
        dev = "" if target is None else str(target.get("dev", ""))
        if disk.get("device", "disk") != "disk" or not dev:
            continue
        keys = {dev}
        source = disk.find("source")
        if source is not None:
            for attr in ("file", "dev", "name", "volume"):
                if source.get(attr):
                    keys.add(PurePosixPath(str(source.get(attr))).stem)
        alias = disk.find("alias")
        alias_name = "" if alias is None else str(alias.get("name", ""))
        if alias_name.startswith("ua-"):
            keys.add(alias_name[3:])
        out.append(_Disk(dev, disk.findtext("serial"), frozenset(keys)))
    return out


def describe(snap: Any, how: str) -> str:
    root = ET.fromstring(snap.getXMLDesc(0))
    memory = root.find("memory")
    disks = ",".join(f"{d.get('name')}={d.get('snapshot')}" for d in root.iterfind("./disks/disk"))
    return (
        f"snapshot {snap.getName()} ({how}): libvirt recorded state={root.findtext('state')}"
        f" memory={None if memory is None else memory.get('snapshot')} disks {disks or 'none'}"
    )


def flag_names(flags: int) -> str:
    names = [label for flag, label in FLAG_NAMES if flags & flag]
    return "flags " + ("|".join(names) if names else "none")


def description_of(snapshot_xml: str) -> str:
    """
    Return the ``<description>`` of a ``<domainsnapshot>`` XML ("" when it has none).
    """
    element = ET.fromstring(snapshot_xml).find("description")
    return (element.text or "") if element is not None else ""


def named_snapshots(dom: Any) -> list[tuple[str, str]]:
    """
    The name and the ``<description>`` of each snapshot of the libvirt domain ``dom``.
    """
    return [
        (str(s.getName()), description_of(str(s.getXMLDesc(0)))) for s in dom.listAllSnapshots(0)
    ]
