"""
The guest-agent rules of ADR 0016 on libvirt's test driver (the quick path; the real
agent is exercised in tests/realguest): the QEMU-only agent calls are replaced by fakes
and the connection is treated as QEMU's.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import NOT_INSTALLED

pytest.importorskip("libvirt", reason=NOT_INSTALLED["libvirt"])

from tests.integration.libvirt_fixtures import LibvirtNode, node_with_vm
from vmsnap.adapters import libvirt_hypervisor
from vmsnap.adapters.libvirt_hypervisor import LibvirtHypervisor, snapshot_request
from vmsnap.adapters.libvirt_live import AGENT_UNAVAILABLE, STILL_FROZEN
from vmsnap.domain.exceptions import DriverError, InvalidRequest
from vmsnap.domain.values import SnapshotRef

SNAP = SnapshotRef(id="s-1", vm_id="vm-1", name="vmsnap-s-1", quiesce=True)


@pytest.fixture
def node(tmp_path: Path) -> LibvirtNode:
    return node_with_vm(tmp_path)


def as_qemu(node: LibvirtNode, **kwargs: bool) -> Iterator[LibvirtHypervisor]:
    with LibvirtHypervisor("kvm-1", node.uri, captured_by_pool=lambda v: True, **kwargs) as hv:
        hv.connection()
        hv._disk_only = True  # the agent rules apply to QEMU connections only
        yield hv


@pytest.fixture
def hv(node: LibvirtNode) -> Iterator[LibvirtHypervisor]:
    yield from as_qemu(node)


def dead_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        libvirt_hypervisor, "agent_problem", lambda dom, timeout: "guest-ping timed out"
    )


def test_only_the_listed_disks_are_captured_and_the_others_are_marked_no() -> None:
    _, xml = snapshot_request(
        "t", active=True, memory=False, quiesce=False, disk_only=True,
        disks=["vda", "vdb", "vdc"], only=["vdb"],
    )  # fmt: skip
    disks = {d.get("name"): d.get("snapshot") for d in ET.fromstring(xml).iterfind(".//disk")}
    assert disks == {"vda": "no", "vdb": "external", "vdc": "no"}


def test_a_dead_agent_is_reported_by_check_quiesce_and_fails_a_quiesce_that_requires_it(
    hv: LibvirtHypervisor, node: LibvirtNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead_agent(monkeypatch)
    assert hv.check_quiesce(node.vm) == "guest-ping timed out"
    with pytest.raises(DriverError) as raised:
        hv.quiesce(node.vm, SNAP, memory=False)
    assert raised.value.code == AGENT_UNAVAILABLE
    # Nothing was frozen: the test driver thaws nothing.
    assert hv.connection().lookupByName("vm1").fsThaw() == 0


def test_a_dead_agent_gives_an_unfrozen_result_with_its_reason_when_not_required(
    node: LibvirtNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead_agent(monkeypatch)
    for hv in as_qemu(node, require_agent=False):
        result = hv.quiesce(node.vm, SNAP, memory=False)
    assert (result.frozen, result.quiesced, result.filesystems_frozen) == (False, False, None)
    assert result.crash_reason is not None and "guest-ping timed out" in result.crash_reason
    assert result.hypervisor_snapshot is None  # every pool captures its own volumes


def test_the_agent_count_is_recorded_and_a_guest_still_frozen_after_the_thaw_is_an_error(
    hv: LibvirtHypervisor, node: LibvirtNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(libvirt_hypervisor, "agent_problem", lambda dom, timeout: None)
    result = hv.quiesce(node.vm, SNAP, memory=False)
    assert (result.frozen, result.quiesced, result.filesystems_frozen) == (True, True, 2)

    monkeypatch.setattr(libvirt_hypervisor, "freeze_status", lambda dom, timeout: "frozen")
    with pytest.raises(DriverError) as raised:
        hv.unquiesce(node.vm, SNAP, thaw=True, release=None)
    assert raised.value.code == STILL_FROZEN

    hv.quiesce(node.vm, SNAP, memory=False)
    monkeypatch.setattr(libvirt_hypervisor, "freeze_status", lambda dom, timeout: "thawed")
    assert "guest agent reports thawed" in hv.unquiesce(node.vm, SNAP, thaw=True, release=None)


def test_a_disk_only_revert_is_refused_while_the_domain_runs(
    hv: LibvirtHypervisor, node: LibvirtNode
) -> None:
    with pytest.raises(InvalidRequest, match="stop the VM first"):
        hv.check_revert(node.vm, memory=False)
    hv.check_revert(node.vm, memory=True)  # a memory snapshot reverts a running guest
