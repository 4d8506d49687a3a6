from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import NOT_INSTALLED

pytest.importorskip("libvirt", reason=NOT_INSTALLED["libvirt"])

import libvirt

from tests.integration.libvirt_fixtures import LibvirtNode, node_with_vm
from vmsnap.adapters.libvirt_hypervisor import (
    NO_DISK,
    LibvirtHypervisor,
    disk_for,
    snapshot_request,
)
from vmsnap.domain.exceptions import DriverError, InvalidRequest
from vmsnap.domain.values import SnapshotRef, VmInfo, VolumeInfo

SNAP = SnapshotRef(id="s-1", vm_id="vm-1", name="vmsnap-s-1", quiesce=True)
NO_QUIESCE = SnapshotRef(id="s-2", vm_id="vm-1", name="vmsnap-s-2", quiesce=False)


@pytest.fixture
def node(tmp_path: Path) -> LibvirtNode:
    return node_with_vm(tmp_path)


@pytest.fixture
def hv(node: LibvirtNode) -> Iterator[LibvirtHypervisor]:
    with LibvirtHypervisor("kvm-1", node.uri) as hypervisor:
        yield hypervisor


def domain(hv: LibvirtHypervisor, name: str = "vm1") -> Any:
    return hv.connection().lookupByName(name)


def snapshot_names(hv: LibvirtHypervisor, name: str = "vm1") -> set[str]:
    dom = domain(hv, name)
    listed = {s.getName() for s in dom.listAllSnapshots()}
    assert listed == set(dom.snapshotListNames())
    return listed


def snapshot_xml(hv: LibvirtHypervisor, name: str) -> ET.Element:
    return ET.fromstring(domain(hv).snapshotLookupByName(name).getXMLDesc(0))


def snapshot_disks(hv: LibvirtHypervisor, name: str) -> dict[str | None, str | None]:
    disks = snapshot_xml(hv, name).iterfind("./disks/disk")
    return {d.get("name"): d.get("snapshot") for d in disks}


def guest_is_frozen(hv: LibvirtHypervisor) -> bool:
    # The test driver's fsThaw answers how many filesystems it thawed; freeze again after.
    dom = domain(hv)
    thawed = dom.fsThaw()
    if thawed:
        dom.fsFreeze()
    return bool(thawed)


def test_check_vm_accepts_a_domain_the_host_has_falling_back_to_the_vm_id() -> None:
    with LibvirtHypervisor("kvm-1", "test:///default") as hv:
        hv.check_vm(VmInfo("test", "kvm-1", "Running", []))


def test_check_vm_refuses_an_unknown_domain_with_a_clear_message(hv: LibvirtHypervisor) -> None:
    vm = VmInfo("vm-9", "kvm-1", "Running", [], domain="ghost")

    with pytest.raises(InvalidRequest, match=r"kvm-1 .* has no domain named 'ghost'"):
        hv.check_vm(vm)


def test_check_vm_refuses_a_host_that_cannot_be_reached_as_bad_config(tmp_path: Path) -> None:
    hv = LibvirtHypervisor("kvm-1", f"test://{tmp_path}/missing.xml")

    with pytest.raises(InvalidRequest, match="cannot use hypervisor kvm-1"):
        hv.check_vm(VmInfo("vm-1", "kvm-1", "Running", [], domain="vm1"))


def test_the_connection_opens_on_first_use_and_a_closed_one_is_reopened(
    hv: LibvirtHypervisor, node: LibvirtNode
) -> None:
    assert hv._conn is None
    first = hv.connection()
    first.close()

    hv.check_vm(node.vm)

    assert hv.connection() is not first
    assert hv.connection().isAlive() == 1


class _HandsOutADeadConnectionFirst(LibvirtHypervisor):
    # connection() checks isAlive first; this skips that check once, so that the call
    # itself meets the dead connection (as when it dies between the check and the call).
    def __init__(self, uri: str) -> None:
        super().__init__("kvm-1", uri)
        self.dead: Any = None

    def connection(self) -> Any:
        if self.dead is None:
            self.dead = libvirt.open(self.uri)
            self.dead.close()
            self._conn = self.dead
            return self.dead
        return super().connection()


def test_a_call_that_meets_a_dead_connection_is_retried_once_on_a_new_one(
    node: LibvirtNode,
) -> None:
    with _HandsOutADeadConnectionFirst(node.uri) as hv:
        result = hv.quiesce(node.vm, SNAP, memory=False)

        assert result.frozen
        assert hv.connection() is not hv.dead
        assert guest_is_frozen(hv)


def test_quiesce_freezes_the_guest_and_takes_a_temporary_snapshot(
    hv: LibvirtHypervisor, node: LibvirtNode
) -> None:
    result = hv.quiesce(node.vm, SNAP, memory=False)

    assert (result.frozen, result.quiesced) == (True, True)
    assert result.hypervisor_snapshot == "vmsnap-s-1-quiesce"
    assert "fsFreeze froze 2 filesystems" in result.detail
    assert snapshot_names(hv) == {"vmsnap-s-1-quiesce"}
    assert guest_is_frozen(hv)


def test_unquiesce_thaws_the_guest_and_releases_the_temporary_snapshot(
    hv: LibvirtHypervisor, node: LibvirtNode
) -> None:
    result = hv.quiesce(node.vm, SNAP, memory=False)

    said = hv.unquiesce(node.vm, SNAP, thaw=True, release=result.hypervisor_snapshot)

    assert "fsThaw thawed 2 filesystems" in said
    assert "vmsnap-s-1-quiesce released" in said
    assert not guest_is_frozen(hv)
    assert snapshot_names(hv) == set()


def test_unquiesce_can_thaw_and_keep_the_temporary_snapshot(
    hv: LibvirtHypervisor, node: LibvirtNode
) -> None:
    hv.quiesce(node.vm, SNAP, memory=False)

    said = hv.unquiesce(node.vm, SNAP, thaw=True, release=None)

    assert said == "fsThaw thawed 2 filesystems"
    assert not guest_is_frozen(hv)
    assert snapshot_names(hv) == {"vmsnap-s-1-quiesce"}


def test_releasing_a_temporary_snapshot_that_is_gone_succeeds(
    hv: LibvirtHypervisor, node: LibvirtNode
) -> None:
    said = hv.unquiesce(node.vm, SNAP, thaw=False, release="vmsnap-s-1-quiesce")

    assert said == "temporary snapshot vmsnap-s-1-quiesce was gone"


def test_quiesce_without_the_quiesce_option_takes_the_snapshot_without_freezing(
    hv: LibvirtHypervisor, node: LibvirtNode
) -> None:
    result = hv.quiesce(node.vm, NO_QUIESCE, memory=False)

    assert (result.frozen, result.quiesced) == (False, False)
    assert "crash-consistent" in result.detail
    assert not guest_is_frozen(hv)
    assert snapshot_names(hv) == {"vmsnap-s-2-quiesce"}


def test_quiesce_of_a_shut_off_domain_freezes_nothing_and_says_so(tmp_path: Path) -> None:
    node = node_with_vm(tmp_path, running=False)
    with LibvirtHypervisor("kvm-1", node.uri) as hv:
        result = hv.quiesce(node.vm, SNAP, memory=False)

        assert (result.frozen, result.quiesced) == (False, False)
        assert "domain is not running" in result.detail
        assert snapshot_xml(hv, "vmsnap-s-1-quiesce").findtext("state") == "shutoff"


def test_a_failed_temporary_snapshot_thaws_the_guest_before_raising(
    hv: LibvirtHypervisor, node: LibvirtNode
) -> None:
    domain(hv).snapshotCreateXML(
        "<domainsnapshot><name>vmsnap-s-1-quiesce</name></domainsnapshot>", 0
    )

    with pytest.raises(DriverError) as caught:
        hv.quiesce(node.vm, SNAP, memory=False)

    assert caught.value.code == str(libvirt.VIR_ERR_OPERATION_FAILED)
    assert "already exists" in caught.value.message
    assert "guest thawed (fsThaw thawed 2 filesystems)" in caught.value.message
    assert not guest_is_frozen(hv)


def test_thawing_a_domain_that_stopped_meanwhile_succeeds(
    hv: LibvirtHypervisor, node: LibvirtNode
) -> None:
    hv.quiesce(node.vm, SNAP, memory=False)
    domain(hv).destroy()

    said = hv.unquiesce(node.vm, SNAP, thaw=True, release=None)

    assert said == "domain is not running: nothing to thaw"


def test_take_vm_snapshot_with_quiesce_makes_a_quiesced_domain_snapshot_of_every_disk(
    hv: LibvirtHypervisor, node: LibvirtNode
) -> None:
    snap = hv.take_vm_snapshot(node.vm, SNAP, memory=False)

    assert (snap.name, snap.quiesced, snap.memory) == ("vmsnap-s-1", True, False)
    assert "flags QUIESCE" in snap.detail
    assert snapshot_names(hv) == {"vmsnap-s-1"}
    assert snapshot_disks(hv, "vmsnap-s-1") == {"vda": "internal", "vdb": "internal"}
    assert not guest_is_frozen(hv)


def test_a_memory_snapshot_is_not_quiesced_and_says_why(
    hv: LibvirtHypervisor, node: LibvirtNode
) -> None:
    snap = hv.take_vm_snapshot(node.vm, SNAP, memory=True)

    assert (snap.quiesced, snap.memory) == (False, True)
    assert "memory snapshots cannot be" in snap.detail
    memory = snapshot_xml(hv, "vmsnap-s-1").find("memory")
    assert memory is not None and memory.get("snapshot") == "internal"


def test_revert_vm_snapshot_restores_the_domain_state_of_the_snapshot(
    hv: LibvirtHypervisor, node: LibvirtNode
) -> None:
    hv.take_vm_snapshot(node.vm, NO_QUIESCE, memory=True)
    hv.take_vm_snapshot(node.vm, SNAP, memory=True)
    domain(hv).destroy()

    hv.revert_vm_snapshot(node.vm, "vmsnap-s-2")

    assert domain(hv).isActive() == 1
    assert domain(hv).snapshotCurrent().getName() == "vmsnap-s-2"


def test_delete_vm_snapshot_removes_it_and_deleting_again_succeeds(
    hv: LibvirtHypervisor, node: LibvirtNode
) -> None:
    hv.take_vm_snapshot(node.vm, SNAP, memory=False)
    hv.take_vm_snapshot(node.vm, NO_QUIESCE, memory=False)

    hv.delete_vm_snapshot(node.vm, "vmsnap-s-1")
    hv.delete_vm_snapshot(node.vm, "vmsnap-s-1")

    assert snapshot_names(hv) == {"vmsnap-s-2"}


def test_reverting_to_an_unknown_snapshot_raises_libvirts_error_and_code(
    hv: LibvirtHypervisor, node: LibvirtNode
) -> None:
    with pytest.raises(DriverError) as caught:
        hv.revert_vm_snapshot(node.vm, "nope")

    assert caught.value.code == str(libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT)
    assert "no domain snapshot with matching name 'nope'" in caught.value.message


def test_taking_a_snapshot_name_twice_raises_libvirts_error_and_code(
    hv: LibvirtHypervisor, node: LibvirtNode
) -> None:
    hv.take_vm_snapshot(node.vm, SNAP, memory=False)

    with pytest.raises(DriverError) as caught:
        hv.take_vm_snapshot(node.vm, SNAP, memory=False)

    assert caught.value.code == str(libvirt.VIR_ERR_OPERATION_FAILED)
    assert "vmsnap-s-1 already exists" in caught.value.message


def test_a_domain_that_vanished_after_validation_raises_a_driver_error(
    hv: LibvirtHypervisor, node: LibvirtNode
) -> None:
    dom = domain(hv)
    dom.destroy()
    dom.undefine()

    with pytest.raises(DriverError) as caught:
        hv.take_vm_snapshot(node.vm, SNAP, memory=False)

    assert caught.value.code == str(libvirt.VIR_ERR_NO_DOMAIN)


def test_take_volume_snapshot_takes_a_snapshot_that_holds_the_volumes_disk(
    hv: LibvirtHypervisor, node: LibvirtNode
) -> None:
    vol2 = node.vm.volumes[1]

    ref = hv.take_volume_snapshot(node.vm, vol2, "vmsnap-v-1")

    assert ref == "vmsnap-v-1"
    assert snapshot_names(hv) == {"vmsnap-v-1"}
    # The test driver has only internal snapshots of every disk.
    assert snapshot_disks(hv, "vmsnap-v-1") == {"vda": "internal", "vdb": "internal"}


def test_a_volumes_disk_is_found_by_serial_then_file_name_alias_or_target() -> None:
    xml = """<domain><devices>
      <disk device='cdrom'><source file='/iso/vol-1.iso'/><target dev='sda'/></disk>
      <disk device='disk'><source file='/p/vol-1.qcow2'/><target dev='vda'/></disk>
      <disk device='disk'><source dev='/dev/vg/lv'/><target dev='vdb'/>
        <serial>vol-1</serial></disk>
      <disk device='disk'><source protocol='rbd' name='pool/vol-3'/><target dev='vdc'/></disk>
      <disk device='disk'><source file='/p/x.img'/><target dev='vdd'/>
        <alias name='ua-vol-4'/></disk>
    </devices></domain>"""

    def vol(volume_id: str) -> VolumeInfo:
        return VolumeInfo(volume_id, "vm-1", "p")

    assert disk_for(xml, vol("vol-1")) == "vdb"
    assert disk_for(xml, vol("vol-3")) == "vdc"
    assert disk_for(xml, vol("vol-4")) == "vdd"
    assert disk_for(xml, vol("vdd")) == "vdd"
    assert disk_for(xml, vol("lv")) == "vdb"
    assert disk_for(xml, vol("vol-9")) is None


def test_on_qemu_a_quiesced_snapshot_of_a_running_guest_is_an_atomic_disk_only_one() -> None:
    flags, xml = snapshot_request("s", active=True, memory=False, quiesce=True, disk_only=True)

    assert flags == (
        libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
        | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE
    )
    assert xml == "<domainsnapshot><name>s</name></domainsnapshot>"


def test_on_qemu_a_memory_snapshot_is_an_internal_full_system_one() -> None:
    flags, xml = snapshot_request("s", active=True, memory=True, quiesce=False, disk_only=True)

    assert (flags, xml) == (0, "<domainsnapshot><name>s</name></domainsnapshot>")


def test_on_qemu_a_shut_off_domain_gets_internal_disk_snapshots_without_memory() -> None:
    flags, xml = snapshot_request("s", active=False, memory=True, quiesce=False, disk_only=True)

    assert flags == 0
    assert '<memory snapshot="no" />' in xml


def test_on_qemu_a_volume_snapshot_captures_only_the_volumes_disk() -> None:
    _, xml = snapshot_request(
        "s",
        active=True,
        memory=False,
        quiesce=False,
        disk_only=True,
        disk="vdb",
        disks=["vda", "vdb", "vdc"],
    )

    disks = {d.get("name"): d.get("snapshot") for d in ET.fromstring(xml).iter("disk")}
    assert disks == {"vdb": "external", "vda": "no", "vdc": "no"}


def test_names_are_escaped_in_the_snapshot_request() -> None:
    _, xml = snapshot_request("a<b&c", active=True, memory=False, quiesce=False, disk_only=False)

    assert ET.fromstring(xml).findtext("name") == "a<b&c"


def test_a_volume_is_found_by_its_disk_serial_on_the_test_driver(tmp_path: Path) -> None:
    node = node_with_vm(tmp_path, volumes=("root", "data"), serials=True)
    with LibvirtHypervisor("kvm-1", node.uri) as hv:
        hv.take_volume_snapshot(node.vm, node.vm.volumes[1], "vmsnap-v-1")

        assert snapshot_names(hv) == {"vmsnap-v-1"}


def test_delete_volume_snapshot_removes_it_and_deleting_again_succeeds(
    hv: LibvirtHypervisor, node: LibvirtNode
) -> None:
    vol1 = node.vm.volumes[0]
    hv.take_volume_snapshot(node.vm, vol1, "vmsnap-v-1")

    hv.delete_volume_snapshot(node.vm, vol1, "vmsnap-v-1")
    hv.delete_volume_snapshot(node.vm, vol1, "vmsnap-v-1")

    assert snapshot_names(hv) == set()


def test_a_volume_the_domain_has_no_disk_for_raises_a_driver_error(
    hv: LibvirtHypervisor, node: LibvirtNode
) -> None:
    stranger = VolumeInfo("vol-9", "vm-1", "qcow2-1")

    with pytest.raises(DriverError) as caught:
        hv.take_volume_snapshot(node.vm, stranger, "vmsnap-v-1")

    assert caught.value.code == NO_DISK
    assert "no disk holding volume vol-9" in caught.value.message
    assert snapshot_names(hv) == set()
