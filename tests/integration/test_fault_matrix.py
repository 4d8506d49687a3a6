"""
Fault matrix: every simulated operation made to fail during create, revert and delete.

A healthy Controller and a faulty one (a second config file injecting one fault) share
one SQLite store and one simulated world, so a healthy snapshot can be made first and
then reverted or deleted by the faulty controller.

The world written here:

- hypervisors ``kvm1`` (kvm: quiesce freezes the guest) and ``esx1`` (vmware);
- pools ``primary-1`` (default driver), ``netapp-1`` and ``pure-1`` (simulator vendors);
- ``vm-kvm`` (kvm1; primary-1, netapp-1, pure-1): storage strategy, frozen while
  snapshotting, keeps the temporary hypervisor snapshot (the default driver answers False);
- ``vm-esx`` (esx1; netapp-1, pure-1): storage strategy, every driver answers True, so
  the temporary hypervisor snapshot is released;
- ``vm-plain`` (esx1; primary-1 only): the hypervisor strategy.

Storage faults are injected on ``pure-1``, the last group in the sorted driver groups, so
that ``netapp-1`` has already taken its snapshot when ``pure-1`` fails.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support import Config, write_config
from vmsnap import Controller
from vmsnap.adapters.simulator import SimulatorWorld

STATE = "world.db"
STORE = "store.db"
FAULTY_POOL = "pure-1"
HYPERVISORS = {"kvm1": "kvm", "esx1": "vmware"}
VMS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "vm-kvm": ("kvm1", [("k-root", "primary-1"), ("k-data", "netapp-1"), ("k-db", "pure-1")]),
    "vm-esx": ("esx1", [("e-data", "netapp-1"), ("e-db", "pure-1")]),
    "vm-plain": ("esx1", [("p-root", "primary-1")]),
}
CAPS = {"VOLUME_SNAPSHOT_QUIESCEVM": True, "STORAGE_SYSTEM_SNAPSHOT": True}

HV_OPS = ("quiesce", "unquiesce", "take_vm_snapshot", "revert_vm_snapshot", "delete_vm_snapshot")
STORAGE_OPS = ("take_vm_snapshot", "revert_vm_snapshot", "delete_vm_snapshot")
FAULTS = [("hypervisor", op) for op in HV_OPS] + [("storage", op) for op in STORAGE_OPS]

# (vm, operation) -> the (kind, op) calls that operation makes, as the strategy says.
INVOLVED: dict[tuple[str, str], set[tuple[str, str]]] = {
    ("vm-kvm", "create"): {
        ("hypervisor", "quiesce"),
        ("storage", "take_vm_snapshot"),
        ("hypervisor", "unquiesce"),  # thaw is mandatory on a frozen VM
    },
    ("vm-kvm", "revert"): {("hypervisor", "revert_vm_snapshot"), ("storage", "revert_vm_snapshot")},
    ("vm-kvm", "delete"): {("hypervisor", "delete_vm_snapshot"), ("storage", "delete_vm_snapshot")},
    ("vm-esx", "create"): {
        ("hypervisor", "quiesce"),
        ("storage", "take_vm_snapshot"),
        ("hypervisor", "unquiesce"),  # releases the temporary snapshot: all answered True
    },
    ("vm-esx", "revert"): {("storage", "revert_vm_snapshot")},
    ("vm-esx", "delete"): {("storage", "delete_vm_snapshot")},
    ("vm-plain", "create"): {("hypervisor", "take_vm_snapshot")},
    ("vm-plain", "revert"): {("hypervisor", "revert_vm_snapshot")},
    ("vm-plain", "delete"): {("hypervisor", "delete_vm_snapshot")},
}


def matrix_config(
    hv_faults: Mapping[str, str] | None = None,
    pool_faults: Mapping[str, Mapping[str, str]] | None = None,
) -> Config:
    """The world above; ``hv_faults`` for every hypervisor, ``pool_faults``: pool id -> faults."""
    hypervisors = [
        {
            "name": name,
            "type": "simulator",
            "profile": profile,
            "state": STATE,
            "faults": dict(hv_faults or {}),
        }
        for name, profile in HYPERVISORS.items()
    ]
    pools: list[Mapping[str, Any]] = [{"id": "primary-1", "name": "Primary", "driver": "default"}]
    for pool_id in ("netapp-1", "pure-1"):
        pools.append(
            {
                "id": pool_id,
                "name": pool_id,
                "driver": "simulator",
                "state": STATE,
                "capabilities": CAPS,
                "need_unquiesce": True,
                "faults": dict((pool_faults or {}).get(pool_id, {})),
            }
        )
    vms = [
        {
            "id": vm_id,
            "hypervisor": hv,
            "power_state": "Running",
            "volumes": [{"id": v, "pool": p, "type": "DATADISK"} for v, p in volumes],
        }
        for vm_id, (hv, volumes) in VMS.items()
    ]
    return Config(
        hypervisors=hypervisors,
        pools=pools,
        vms=vms,
        store=f"sqlite:///{STORE}",
        limits={"max_vm_snapshots_per_vm": 10, "quiesce_deadline_s": 60},
    )


def leftovers(world: SimulatorWorld, vm_id: str, snapshot_id: str) -> set[str]:
    """Every backend object of the snapshot still in the world: 'hv:NAME' or 'VOLUME:NAME'."""
    prefix = f"vmsnap-{snapshot_id}"
    found = {f"hv:{n}" for n in world.hypervisor_snapshots(vm_id) if n.startswith(prefix)}
    for vol, _pool in VMS[vm_id][1]:
        found |= {f"{vol}:{n}" for n in world.volume_snapshots(vol) if n.startswith(prefix)}
    return found


def event_types(ctrl: Controller, snapshot_id: str) -> list[str]:
    return [e.type for e in ctrl.audit_timeline(snapshot_id=snapshot_id)]


class Rig:
    def __init__(self, folder: Path, kind: str, op: str) -> None:
        hv_faults = {op: "fail"} if kind == "hypervisor" else None
        pool_faults = {FAULTY_POOL: {op: "fail"}} if kind == "storage" else None
        self.healthy = Controller.from_config(write_config(folder, matrix_config(), "healthy.toml"))
        self.faulty = Controller.from_config(
            write_config(folder, matrix_config(hv_faults, pool_faults), "faulty.toml")
        )
        self.world = SimulatorWorld(folder / STATE)

    def close(self) -> None:
        self.world.close()
        self.faulty.close()
        self.healthy.close()


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator[Any]:
    rigs: list[Rig] = []

    def make(kind: str, op: str) -> Rig:
        rigs.append(Rig(tmp_path, kind, op))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()


def _failed_call_logged(world: SimulatorWorld, vm_id: str, kind: str, op: str) -> bool:
    hv = VMS[vm_id][0]
    target = hv if kind == "hypervisor" else FAULTY_POOL
    return any(c["op"] == op and c["target"] == target and not c["ok"] for c in world.calls(vm_id))


@pytest.mark.parametrize("vm_id", sorted(VMS))
@pytest.mark.parametrize("operation", ["create", "revert", "delete"])
@pytest.mark.parametrize(("kind", "op"), FAULTS, ids=[f"{k}-{o}" for k, o in FAULTS])
def test_a_failing_call_ends_in_the_documented_state_without_frozen_vm_or_orphan(
    rig_factory: Any, vm_id: str, operation: str, kind: str, op: str
) -> None:
    rig: Rig = rig_factory(kind, op)
    hits = (kind, op) in INVOLVED[(vm_id, operation)]
    if operation == "create":
        snap = rig.faulty.create_vm_snapshot(vm_id, quiesce=True)
    else:
        healthy = rig.healthy.create_vm_snapshot(vm_id, quiesce=True)
        assert healthy.state == "ready", healthy.error
        if operation == "revert":
            snap = rig.faulty.revert_vm_snapshot(healthy.id)
        else:
            snap = rig.faulty.delete_vm_snapshot(healthy.id)

    assert _failed_call_logged(rig.world, vm_id, kind, op) == hits
    left_frozen = hits and operation == "create" and vm_id == "vm-kvm" and op == "unquiesce"

    if not hits:
        expected = {"create": "ready", "revert": "ready", "delete": "removed"}[operation]
        assert (snap.state, snap.error) == (expected, None)
    elif operation == "create":
        assert snap.state == "failed"
        assert snap.error and op in snap.error
    elif operation == "revert":
        assert snap.state == "ready"
        assert snap.error and op in snap.error
    else:
        assert snap.state == "failed"
        assert snap.error and op in snap.error
        again = rig.healthy.delete_vm_snapshot(snap.id)
        assert again.state == "removed"
        assert leftovers(rig.world, vm_id, snap.id) == set()

    if operation == "create" and snap.state == "failed":
        remaining = leftovers(rig.world, vm_id, snap.id)
        if op == "unquiesce":
            # The release of the temporary snapshot is the failing call itself.
            assert "not cleaned up" in (snap.error or "")
            assert remaining == {f"hv:vmsnap-{snap.id}-quiesce"}
        else:
            assert "not cleaned up" not in (snap.error or "")
            assert remaining == set()

    if left_frozen:
        assert rig.world.is_frozen(vm_id)
        assert any(t.endswith("AlertRaised") for t in event_types(rig.healthy, snap.id))
        assert [v.id for v in rig.healthy.list_vms(frozen=True)] == [vm_id]
        rig.healthy.recover()
        assert not rig.world.is_frozen(vm_id)
        assert rig.healthy.list_vms(frozen=True) == []
    else:
        assert not rig.world.is_frozen(vm_id)
        assert rig.healthy.list_vms(frozen=True) == []
        assert not any(t.endswith("AlertRaised") for t in event_types(rig.healthy, snap.id))
    report = rig.healthy.audit_verify()
    assert report.ok, report.problems
    _nothing_left_after_recover(rig.healthy)


def _nothing_left_after_recover(healthy: Controller) -> None:
    # What a failed cleanup left is owed (invariant 10): a healthy recover removes it,
    # and then no backend holds anything under vmsnap's names that the log does not own.
    assert healthy.recover_report().unrecovered == ()
    reconciled = healthy.reconcile()
    assert reconciled.ok, reconciled.to_dict()
    assert healthy.audit_verify().ok


def test_a_failed_compensating_delete_leaves_exactly_that_snapshot_and_says_so(
    tmp_path: Path,
) -> None:
    # take_vm_snapshot fails on pure-1 after netapp-1 took its snapshot; the compensating
    # delete on netapp-1 fails too, so exactly netapp-1's snapshot is left, and reported.
    faults_by_pool = write_config(
        tmp_path,
        matrix_config(
            pool_faults={
                "netapp-1": {"delete_vm_snapshot": "fail"},
                "pure-1": {"take_vm_snapshot": "fail"},
            },
        ),
        "double.toml",
    )
    with (
        Controller.from_config(faults_by_pool) as faulty,
        Controller.from_config(write_config(tmp_path, matrix_config(), "healthy.toml")) as healthy,
        SimulatorWorld(tmp_path / STATE) as world,
    ):
        snap = faulty.create_vm_snapshot("vm-esx", quiesce=True)
        assert snap.state == "failed"
        assert "not cleaned up" in (snap.error or "")
        assert "netapp-1" in (snap.error or "")
        assert leftovers(world, "vm-esx", snap.id) == {f"e-data:vmsnap-{snap.id}"}
        assert not world.is_frozen("vm-esx")
        assert healthy.audit_verify().ok
        # What was left is owed: reconcile says so until a recover (or --clean) removes it.
        owed = healthy.reconcile()
        assert [(f.owed.kind, f.owed.target) for f in owed.owed] == [
            ("driver-vm-snapshot", "netapp-1")
        ]
        assert not owed.ok
        # The failed snapshot can be deleted later by a healthy controller: nothing is left.
        assert healthy.delete_vm_snapshot(snap.id).state == "removed"
        assert leftovers(world, "vm-esx", snap.id) == set()
        assert healthy.reconcile(clean=True).ok
        assert healthy.reconcile().ok
