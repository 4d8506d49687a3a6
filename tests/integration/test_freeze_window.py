"""
``frozen_ms`` (CONTRACT.md, second round): how long the guest stayed frozen, from the
hypervisor's answer that it froze to its answer that it thawed, on the snapshot's view.
"""

from __future__ import annotations

from datetime import datetime

from vmsnap import Controller
from vmsnap.domain.snapshot_base import SnapshotAggregate


def _freeze_window_ms(ctrl: Controller, snapshot_id: str) -> float:
    events = ctrl.audit_timeline(snapshot_id=snapshot_id)
    changes = [
        (datetime.fromisoformat(e.timestamp), e.event.freeze_change())
        for e in events
        if isinstance(e.event, SnapshotAggregate.Event) and e.event.freeze_change() is not None
    ]
    assert [c for _, c in changes] == [True, False], "one freeze, one thaw"
    return round((changes[1][0] - changes[0][0]).total_seconds() * 1000, 3)


def test_a_frozen_guest_s_snapshot_shows_its_freeze_window(controller: Controller) -> None:
    snap = controller.create_vm_snapshot("vm-kvm", quiesce=True)

    assert snap.frozen_ms is not None
    assert snap.frozen_ms == _freeze_window_ms(controller, snap.id)
    assert snap.to_dict()["frozen_ms"] == snap.frozen_ms
    assert controller.audit_verify().ok  # a rebuild gives the same rows


def test_a_quiesced_volume_snapshot_shows_its_freeze_window(controller: Controller) -> None:
    snap = controller.create_volume_snapshot("kvm-data", quiesce=True)

    assert snap.frozen_ms == _freeze_window_ms(controller, snap.id)


def test_nothing_frozen_means_no_freeze_window(controller: Controller) -> None:
    vmware = controller.create_vm_snapshot("vm-vmware", quiesce=True)  # a temporary snapshot
    unquiesced = controller.create_vm_snapshot("vm-kvm", quiesce=False)

    assert vmware.frozen_ms is None
    assert unquiesced.frozen_ms is None
    assert controller.get_vm_snapshot(unquiesced.id).to_dict()["frozen_ms"] is None
