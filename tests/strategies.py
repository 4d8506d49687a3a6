"""
Shared hypothesis strategies, and builders of in-memory aggregates for property tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from vmsnap.domain.values import (
    Capabilities,
    DriverGroup,
    QuiesceResult,
    VolumeInfo,
    VolumeRef,
)
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.volume_snapshot import VolumeSnapshot
from vmsnap.domain.workflow import VM_SNAPSHOT_STATES, VM_SNAPSHOT_WORKFLOW

POOL_IDS = ("primary-1", "netapp-1", "pure-1", "plain-1", "qcow-1")
DRIVER_NAMES = ("default", "simulator", "qcow2")

#: Names for VMs, volumes and pools: short, printable, no surprises for a file name.
identifiers = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
pool_ids = st.sampled_from(POOL_IDS)
states = st.sampled_from(VM_SNAPSHOT_STATES)
triggers = st.sampled_from(sorted({t for (t, _) in VM_SNAPSHOT_WORKFLOW.table} | {"bogus"}))
capabilities = st.builds(Capabilities, st.booleans(), st.booleans())

#: Drivers' answers to take_vm_snapshot, keyed by pool id.
answers = st.dictionaries(pool_ids, st.booleans(), max_size=len(POOL_IDS))


@st.composite
def volume_lists(draw: st.DrawFn, vm_id: str = "vm-1", min_size: int = 0) -> list[VolumeInfo]:
    """A VM's volumes: unique ids, each on one of a few pools."""
    ids = draw(st.lists(identifiers, min_size=min_size, max_size=8, unique=True))
    return [
        VolumeInfo(f"vol-{i}", vm_id, draw(pool_ids), draw(st.sampled_from(["ROOT", "DATADISK"])))
        for i in ids
    ]


@st.composite
def volumes_with_caps(
    draw: st.DrawFn, min_size: int = 0
) -> tuple[list[VolumeInfo], dict[str, Capabilities]]:
    """A VM's volumes and what each of their pools advertises."""
    volumes = draw(volume_lists(min_size=min_size))
    caps = {p: draw(capabilities) for p in sorted({v.pool_id for v in volumes})}
    return volumes, caps


drivers_by_pool = st.fixed_dictionaries({p: st.sampled_from(DRIVER_NAMES) for p in POOL_IDS})

quiesce_results = st.builds(
    QuiesceResult,
    frozen=st.booleans(),
    quiesced=st.booleans(),
    hypervisor_snapshot=st.none() | st.just("temp-quiesce"),
    detail=st.just("simulated"),
)


def make_vm_snapshot(
    vm_id: str = "vm-1",
    *,
    name: str = "snap",
    parent_id: str | None = None,
    memory: bool = False,
    quiesce: bool = True,
    strategy: str = "storage",
) -> VmSnapshot:
    """A VmSnapshot aggregate in memory, in state allocated (its Requested event pending)."""
    return VmSnapshot(
        vm_id=vm_id,
        name=name,
        description="made by a test",
        memory=memory,
        quiesce_requested=quiesce,
        strategy=strategy,
        strategy_reason="chosen by a test",
        hypervisor="hv-1",
        profile="vmware",
        volumes=[VolumeRef("vol-1", "primary-1"), VolumeRef("vol-2", "netapp-1")],
        groups=[
            DriverGroup("netapp-1", "simulator", ["vol-2"]),
            DriverGroup("primary-1", "default", ["vol-1"]),
        ],
        caps={
            "netapp-1": Capabilities(True, True).to_dict(),
            "primary-1": Capabilities().to_dict(),
        },
        parent_id=parent_id,
    )


def make_volume_snapshot(quiesce: bool = True) -> VolumeSnapshot:
    return VolumeSnapshot(
        volume_id="vol-2",
        vm_id="vm-1",
        pool_id="netapp-1",
        driver="simulator",
        quiesce_requested=quiesce,
        hypervisor="hv-1",
        caps=Capabilities(True, True).to_dict(),
    )


Command = Callable[[Any], None]

#: command name -> (the workflow trigger it asks for, how to send it to an aggregate).
VM_SNAPSHOT_COMMANDS: dict[str, tuple[str, Command]] = {
    "start_quiesce": ("start_quiesce", lambda a: a.start_quiesce()),
    "record_quiesced": (
        "start_snapshotting",
        lambda a: a.record_quiesced(QuiesceResult(True, True, "temp-quiesce", "frozen")),
    ),
    "start_snapshotting": ("start_snapshotting", lambda a: a.start_snapshotting()),
    "record_unquiesce_decision": (
        "start_unquiesce",
        lambda a: a.record_unquiesce_decision(
            answers={"netapp-1": True, "primary-1": False},
            need_unquiesce=False,
            thaw=True,
            release=None,
            reason="kept",
        ),
    ),
    "complete": ("complete", lambda a: a.complete(quiesced=True, consistency="filesystem")),
    "fail": ("fail", lambda a: a.fail("boom")),
    "start_revert": ("start_revert", lambda a: a.start_revert()),
    "finish_revert": ("finish_revert", lambda a: a.finish_revert()),
    "fail_revert": ("fail_revert", lambda a: a.fail_revert("revert boom")),
    "start_delete": ("start_delete", lambda a: a.start_delete()),
    "finish_delete": ("finish_delete", lambda a: a.finish_delete()),
}

#: The commands a VolumeSnapshot has (no revert leg).
VOLUME_SNAPSHOT_COMMANDS = {
    name: cmd for name, cmd in VM_SNAPSHOT_COMMANDS.items() if "revert" not in name
}

vm_snapshot_commands = st.lists(st.sampled_from(sorted(VM_SNAPSHOT_COMMANDS)), max_size=25)
volume_snapshot_commands = st.lists(st.sampled_from(sorted(VOLUME_SNAPSHOT_COMMANDS)), max_size=25)


def stub_vm_snapshot(
    vm_id: str, name: str, *, quiesce: bool, hypervisor: str = "kvm1"
) -> VmSnapshot:
    """
    A storage-strategy VmSnapshot of a KVM VM with no driver groups (allocated, Requested
    pending): a claimed operation whose recovery has nothing to delete, only a freeze.
    """
    return VmSnapshot(
        vm_id=vm_id,
        name=name,
        description=None,
        memory=False,
        quiesce_requested=quiesce,
        strategy="storage",
        strategy_reason="test",
        hypervisor=hypervisor,
        profile="kvm",
        volumes=[],
        groups=[],
        caps={},
        parent_id=None,
    )
