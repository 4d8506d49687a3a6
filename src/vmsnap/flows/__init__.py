"""
The flows: the only place, with the application service, where hypervisors and drivers
are called. ``steps`` records every call and its answer; one module per flow.
"""

from vmsnap.flows.steps import StepFailed, Steps
from vmsnap.flows.vm_snapshot_flow import VmSnapshotFlow
from vmsnap.flows.volume_snapshot_flow import VolumeSnapshotFlow

__all__ = ["StepFailed", "Steps", "VmSnapshotFlow", "VolumeSnapshotFlow"]
