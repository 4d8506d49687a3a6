"""Stored event topics are the log's format: old logs must keep replaying after refactors."""

from pathlib import Path

import pytest
from eventsourcing.utils import resolve_topic

from vmsnap.demo import run_demo

# Every topic vmsnap has ever stored. Renaming or moving an event class breaks replay of
# old logs unless the old topic is mapped with eventsourcing.utils.register_topic.
STABLE_TOPICS = sorted(
    f"vmsnap.domain.{module}:{name}"
    for module, names in {
        "pool": ["Pool.Registered", "Pool.CapabilitiesChanged"],
        "api_job": ["ApiJob.Submitted", "ApiJob.SnapshotAssigned", "ApiJob.Finished"],
        "api_refusal": ["ApiRefusal.Recorded"],
        "vm": [
            "Vm.Registered",
            "Vm.VolumesObserved",
            "Vm.OperationStarted",
            "Vm.OperationEnded",
            "Vm.CurrentSnapshotChanged",
            "Vm.SnapshotForgotten",
            "Vm.RecoveryClaimed",
            "Vm.OrphanOwed",
            "Vm.OrphanSettled",
            "Vm.OrphanCleanupFailed",
        ],
        "snapshot_base": [
            f"SnapshotAggregate.{e}"
            for e in (
                "QuiesceStarted",
                "Quiesced",
                "UnquiesceDecided",
                "Unquiesced",
                "CallFailed",
                "DeadlineExceeded",
                "AlertRaised",
                "PostHookOwed",
                "HookStarted",
                "HookEnded",
                "RecoveryStarted",
                "Completed",
                "Failed",
                "DeleteStarted",
                "Removed",
            )
        ],
        "vm_snapshot": [
            f"VmSnapshot.{e}"
            for e in (
                "Requested",
                "SnapshottingStarted",
                "HypervisorSnapshotTaken",
                "DriverSnapshotTaken",
                "RevertStarted",
                "HypervisorSnapshotReverted",
                "DriverSnapshotReverted",
                "Reverted",
                "RevertFailed",
                "HypervisorSnapshotDeleted",
                "DriverSnapshotDeleted",
            )
        ],
        "volume_snapshot": [
            f"VolumeSnapshot.{e}"
            for e in (
                "Requested",
                "SnapshottingStarted",
                "VolumeSnapshotTaken",
                "VolumeSnapshotDeleted",
            )
        ],
    }.items()
    for name in names
)


@pytest.mark.parametrize("topic", STABLE_TOPICS)
def test_every_stable_topic_still_resolves_to_an_event_class(topic: str) -> None:
    cls = resolve_topic(topic)
    assert isinstance(cls, type)
    assert topic.endswith(cls.__qualname__)


def test_the_demo_story_stores_only_stable_topics(tmp_path: Path) -> None:
    import sqlite3

    assert run_demo(tmp_path, as_json=True, real_guest=False) == 0
    with sqlite3.connect(tmp_path / "vmsnap.db") as db:
        stored = {row[0] for row in db.execute("SELECT DISTINCT topic FROM stored_events")}
    assert stored, "the demo recorded events"
    assert stored <= set(STABLE_TOPICS), stored - set(STABLE_TOPICS)
