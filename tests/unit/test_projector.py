"""The projector (projections/projector.py) over MemoryRows, fed real aggregate events."""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import Aggregate
from hypothesis import given

from tests.strategies import (
    VM_SNAPSHOT_COMMANDS,
    make_vm_snapshot,
    make_volume_snapshot,
    vm_snapshot_commands,
)
from vmsnap.domain.exceptions import IllegalTransition
from vmsnap.domain.pool import Pool
from vmsnap.domain.values import Capabilities, DriverGroup, QuiesceResult, VolumeInfo
from vmsnap.domain.vm import Vm
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.projections.projector import project
from vmsnap.projections.rows import MemoryRows


class Feed:
    """Projects the pending events of aggregates, numbering them as a log would."""

    def __init__(self) -> None:
        self.rows = MemoryRows()
        self.position = 0
        self.events: list[Any] = []

    def __call__(self, *aggregates: Aggregate) -> None:
        for agg in aggregates:
            for event in agg.collect_events():
                self.position += 1
                self.events.append(event)
                project(event, self.rows, self.position)

    def snapshot(self, snap: Aggregate) -> dict[str, Any]:
        doc = self.rows.get("vm_snapshots", str(snap.id))
        assert doc is not None
        return doc


def _created(feed: Feed, vm: Vm, parent: VmSnapshot | None = None, name: str = "s") -> VmSnapshot:
    """A VM snapshot created, claimed, taken and made current, as the Controller does it."""
    parent_id = None if parent is None else str(parent.id)
    snap = make_vm_snapshot(vm.vm_id, name=name, parent_id=parent_id)
    vm.start("create", str(snap.id), "host:1:t", name, parent_id)
    feed(vm, snap)
    snap.start_snapshotting()
    snap.complete(quiesced=True, consistency="filesystem")
    vm.end(str(snap.id), "ready")
    vm.set_current(str(snap.id))
    feed(snap, vm)
    return snap


# -- VM snapshot rows -----------------------------------------------------------------------


def test_a_requested_vm_snapshot_row_has_the_contract_fields() -> None:
    feed = Feed()
    snap = make_vm_snapshot(memory=True, quiesce=True, parent_id="p-1")

    feed(snap)

    doc = feed.snapshot(snap)
    assert doc["id"] == str(snap.id)
    assert doc["vm_id"] == "vm-1"
    assert doc["name"] == "snap"
    assert doc["description"] == "made by a test"
    assert doc["type"] == "DiskAndMemory"
    assert doc["state"] == "allocated"
    assert doc["quiesce_requested"] is True
    assert doc["quiesced"] is False
    assert doc["consistency"] == "crash"
    assert doc["strategy"] == "storage"
    assert doc["error"] is None
    assert doc["volumes"] == [
        {"volume_id": "vol-1", "pool_id": "primary-1"},
        {"volume_id": "vol-2", "pool_id": "netapp-1"},
    ]
    assert doc["parent_id"] == "p-1"
    assert doc["current"] is False


def test_a_disk_only_snapshot_row_has_type_disk() -> None:
    feed = Feed()
    snap = make_vm_snapshot(memory=False)

    feed(snap)

    assert feed.snapshot(snap)["type"] == "Disk"


def test_the_row_follows_the_storage_create_leg_step_by_step() -> None:
    feed = Feed()
    snap = make_vm_snapshot()
    feed(snap)

    seen = []
    snap.start_quiesce()
    feed(snap)
    seen.append(feed.snapshot(snap)["state"])
    snap.record_quiesced(QuiesceResult(True, True, "temp", "frozen"))
    feed(snap)
    seen.append(feed.snapshot(snap)["state"])
    snap.record_driver_snapshot(
        DriverGroup("netapp-1", "simulator", ["vol-2"]), need_unquiesce=True
    )
    snap.record_call_failed("pure-1", "take_vm_snapshot", "boom")
    feed(snap)
    seen.append(feed.snapshot(snap)["state"])
    snap.record_unquiesce_decision(
        answers={"netapp-1": True}, need_unquiesce=True, thaw=True, release="temp", reason="rule"
    )
    feed(snap)
    seen.append(feed.snapshot(snap)["state"])
    snap.record_unquiesced(thawed=True, released="temp", reason="rule", detail="thawed")
    feed(snap)
    seen.append(feed.snapshot(snap)["state"])
    snap.complete(quiesced=True, consistency="filesystem")
    feed(snap)
    seen.append(feed.snapshot(snap)["state"])

    assert seen == [
        "quiescing",
        "snapshotting",
        "snapshotting",
        "unquiescing",
        "unquiescing",
        "ready",
    ]
    doc = feed.snapshot(snap)
    assert (doc["quiesced"], doc["consistency"], doc["error"]) == (True, "filesystem", None)


def test_a_failure_sets_the_state_and_the_error() -> None:
    feed = Feed()
    snap = make_vm_snapshot()
    snap.start_quiesce()
    snap.fail("quiesce on hv-1 failed: boom")
    feed(snap)

    doc = feed.snapshot(snap)
    assert doc["state"] == "failed"
    assert doc["error"] == "quiesce on hv-1 failed: boom"


def test_a_failed_revert_leaves_the_row_ready_with_its_error_until_the_next_revert() -> None:
    feed = Feed()
    snap = make_vm_snapshot()
    snap.start_snapshotting()
    snap.complete(quiesced=False, consistency="crash")
    snap.start_revert()
    snap.fail_revert("revert_vm_snapshot on netapp-1 failed")
    feed(snap)

    doc = feed.snapshot(snap)
    assert (doc["state"], doc["error"]) == ("ready", "revert_vm_snapshot on netapp-1 failed")

    snap.start_revert()
    feed(snap)
    assert (feed.snapshot(snap)["state"], feed.snapshot(snap)["error"]) == ("reverting", None)


@given(vm_snapshot_commands)
def test_the_row_state_equals_the_aggregate_state_after_every_event(commands: list[str]) -> None:
    feed = Feed()
    snap = make_vm_snapshot()
    feed(snap)
    for command in commands:
        try:
            VM_SNAPSHOT_COMMANDS[command][1](snap)
        except IllegalTransition:
            continue
        feed(snap)
        doc = feed.snapshot(snap)
        assert doc["state"] == snap.state
        assert doc["error"] == snap.error


@given(vm_snapshot_commands)
def test_projecting_the_same_events_twice_gives_the_same_rows(commands: list[str]) -> None:
    feed = Feed()
    snap = make_vm_snapshot()
    feed(snap)
    for command in commands:
        try:
            VM_SNAPSHOT_COMMANDS[command][1](snap)
        except IllegalTransition:
            continue
        feed(snap)

    again = MemoryRows()
    for position, event in enumerate(feed.events, start=1):
        project(event, again, position)

    assert again.dump() == feed.rows.dump()


def test_events_of_a_snapshot_never_requested_in_this_log_make_no_row() -> None:
    feed = Feed()
    snap = make_vm_snapshot()
    snap.collect_events()  # its Requested event is not in this log
    snap.start_quiesce()

    feed(snap)

    assert feed.rows.get("vm_snapshots", str(snap.id)) is None


# -- the snapshot tree: current flag and parents ---------------------------------------------


def test_the_current_flag_moves_to_the_newest_snapshot_and_back_on_revert() -> None:
    feed = Feed()
    vm = Vm("vm-1")
    first = _created(feed, vm)
    assert feed.snapshot(first)["current"] is True

    second = _created(feed, vm, parent=first, name="s2")
    assert feed.snapshot(first)["current"] is False
    assert feed.snapshot(second)["current"] is True
    assert feed.snapshot(second)["parent_id"] == str(first.id)

    vm.set_current(str(first.id))  # a revert to the first
    feed(vm)
    assert feed.snapshot(first)["current"] is True
    assert feed.snapshot(second)["current"] is False
    assert feed.rows.get("vms", "vm-1")["current"] == str(first.id)  # type: ignore[index]


def test_forgetting_a_snapshot_reparents_its_children_and_moves_current_to_its_parent() -> None:
    feed = Feed()
    vm = Vm("vm-1")
    a = _created(feed, vm, name="a")
    b = _created(feed, vm, parent=a, name="b")
    c = _created(feed, vm, parent=b, name="c")
    vm.set_current(str(b.id))
    feed(vm)

    vm.start("delete", str(b.id), "host:1:t")
    b.start_delete()
    b.finish_delete()
    vm.end(str(b.id), "removed")
    vm.forget(str(b.id))
    feed(b, vm)

    assert feed.snapshot(b)["state"] == "removed"
    assert feed.snapshot(c)["parent_id"] == str(a.id)
    assert feed.snapshot(a)["current"] is True
    assert feed.snapshot(b)["current"] is False
    assert feed.snapshot(c)["current"] is False
    assert feed.rows.get("vms", "vm-1")["current"] == str(a.id)  # type: ignore[index]


def test_forgetting_the_root_current_snapshot_leaves_no_current_one() -> None:
    feed = Feed()
    vm = Vm("vm-1")
    a = _created(feed, vm, name="a")
    b = _created(feed, vm, parent=a, name="b")
    vm.set_current(str(a.id))
    vm.forget(str(a.id))
    feed(vm)

    assert feed.snapshot(a)["current"] is False
    assert feed.snapshot(b)["parent_id"] is None
    assert feed.rows.get("vms", "vm-1")["current"] is None  # type: ignore[index]


def test_the_vm_row_shows_the_operation_in_flight_until_it_ends() -> None:
    feed = Feed()
    vm = Vm("vm-1")
    vm.start("create", "sid-1", "host:1:tok", "n", None)
    feed(vm)

    row = feed.rows.get("vms", "vm-1")
    assert row is not None
    assert (row["in_flight"], row["operation"], row["owner"]) == ("sid-1", "create", "host:1:tok")

    vm.end("sid-1", "ready")
    feed(vm)
    row = feed.rows.get("vms", "vm-1")
    assert row is not None
    assert (row["in_flight"], row["operation"], row["owner"]) == (None, None, None)


# -- pools and volumes ---------------------------------------------------------------------


def test_pool_rows_show_what_the_pool_advertised_last() -> None:
    feed = Feed()
    pool = Pool("netapp-1", "NetApp 1", "simulator", Capabilities(True, False))
    feed(pool)
    assert feed.rows.get("pools", "netapp-1")["caps"] == {  # type: ignore[index]
        "VOLUME_SNAPSHOT_QUIESCEVM": True,
        "STORAGE_SYSTEM_SNAPSHOT": False,
    }

    pool.observe("NetApp One", "simulator", Capabilities(True, True))
    feed(pool)

    row = feed.rows.get("pools", "netapp-1")
    assert row is not None
    assert row["name"] == "NetApp One"
    assert row["caps"] == {"VOLUME_SNAPSHOT_QUIESCEVM": True, "STORAGE_SYSTEM_SNAPSHOT": True}


def test_observing_unchanged_capabilities_records_nothing() -> None:
    pool = Pool("netapp-1", "NetApp 1", "simulator", Capabilities(True, False))
    pool.collect_events()

    pool.observe("NetApp 1", "simulator", Capabilities(True, False))

    assert pool.collect_events() == []


def test_volume_rows_take_their_caps_from_the_pool_events() -> None:
    feed = Feed()
    vm = Vm("vm-1")
    vm.observe_volumes(
        [
            VolumeInfo("vol-1", "vm-1", "primary-1", "ROOT"),
            VolumeInfo("vol-2", "vm-1", "netapp-1"),
        ]
    )
    feed(vm)
    # Seen before their pools: nothing advertised yet.
    assert feed.rows.get("volumes", "vol-2")["quiescevm"] is False  # type: ignore[index]

    netapp = Pool("netapp-1", "NetApp 1", "simulator", Capabilities(True, True))
    primary = Pool("primary-1", "Primary", "default", Capabilities())
    feed(netapp, primary)
    vol1, vol2 = feed.rows.get("volumes", "vol-1"), feed.rows.get("volumes", "vol-2")
    assert vol1 is not None and vol2 is not None
    assert (vol2["quiescevm"], vol2["supportsstoragesnapshot"]) == (True, True)
    assert (vol1["quiescevm"], vol1["supportsstoragesnapshot"]) == (False, False)
    assert (vol2["vm_id"], vol2["pool_id"], vol1["type"]) == ("vm-1", "netapp-1", "ROOT")

    netapp.observe("NetApp 1", "simulator", Capabilities(False, True))
    feed(netapp)
    vol2 = feed.rows.get("volumes", "vol-2")
    assert vol2 is not None
    assert (vol2["quiescevm"], vol2["supportsstoragesnapshot"]) == (False, True)
    assert feed.rows.get("volumes", "vol-1") == vol1


def test_volumes_observed_after_their_pool_get_its_caps_at_once() -> None:
    feed = Feed()
    feed(Pool("netapp-1", "NetApp 1", "simulator", Capabilities(True, False)))
    vm = Vm("vm-1")
    vm.observe_volumes([VolumeInfo("vol-2", "vm-1", "netapp-1")])
    feed(vm)

    row = feed.rows.get("volumes", "vol-2")
    assert row is not None
    assert (row["quiescevm"], row["supportsstoragesnapshot"]) == (True, False)


def test_a_volume_that_left_the_vm_leaves_the_volumes_view() -> None:
    feed = Feed()
    vm = Vm("vm-1")
    vm.observe_volumes([VolumeInfo("vol-1", "vm-1", "p"), VolumeInfo("vol-2", "vm-1", "p")])
    feed(vm)

    vm.observe_volumes([VolumeInfo("vol-1", "vm-1", "p")])
    feed(vm)

    assert feed.rows.get("volumes", "vol-2") is None
    assert feed.rows.get("volumes", "vol-1") is not None


# -- volume snapshot rows ------------------------------------------------------------------


def test_a_volume_snapshot_row_follows_its_workflow() -> None:
    feed = Feed()
    snap = make_volume_snapshot(quiesce=True)
    feed(snap)
    row = feed.rows.get("volume_snapshots", str(snap.id))
    assert row is not None
    assert (row["volume_id"], row["pool_id"], row["state"]) == ("vol-2", "netapp-1", "allocated")
    assert (row["quiesce_requested"], row["quiesced"], row["error"]) == (True, False, None)

    snap.start_quiesce()
    snap.record_quiesced(QuiesceResult(False, True, "temp"))
    snap.record_taken("vmsnap-x")
    snap.record_unquiesce_decision(
        answers={"netapp-1": True}, need_unquiesce=True, thaw=False, release="temp", reason="rule"
    )
    snap.complete(quiesced=True, consistency="filesystem")
    feed(snap)

    row = feed.rows.get("volume_snapshots", str(snap.id))
    assert row is not None
    assert (row["state"], row["quiesced"]) == ("ready", True)
    assert feed.rows.get("vm_snapshots", str(snap.id)) is None
