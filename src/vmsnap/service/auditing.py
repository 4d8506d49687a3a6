"""
The audit room: timelines, export, verification and time travel. Calls no adapter and
writes nothing (ADR 0021).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from vmsnap.adapters.log_reader import LogReader
from vmsnap.audit import Audit, Point, parse_point
from vmsnap.domain.exceptions import InvalidRequest, NotFound
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.vm_snapshot import snapshot_id as parse_id
from vmsnap.domain.volume_snapshot import VolumeSnapshot
from vmsnap.export import ExportedEvent
from vmsnap.projections.projector import VM_SNAPSHOTS
from vmsnap.service.queries import SnapshotView, vm_snapshot_view
from vmsnap.views import EventView, VerifyReport, VolumeSnapshotView


class Auditing:
    """
    The audit room. It reads through a read-only :class:`LogReader` and writes nothing:
    not the views, not a seal (ADR 0021). ``known_vm`` tells a VM of the config that the
    log never saw (an empty timeline) from an unknown one (refused).
    """

    def __init__(self, reader: LogReader, known_vm: Callable[[str], bool]) -> None:
        self.reader = reader
        self.known_vm = known_vm
        self.audit = Audit(reader)

    def timeline(self, *, snapshot_id: str | None, vm_id: str | None) -> list[EventView]:
        if (snapshot_id is None) == (vm_id is None):
            raise InvalidRequest("give a snapshot id or a VM id")
        if snapshot_id is not None:
            events = self.audit.timeline([parse_id(snapshot_id)])
            first = events[0].event if events else None
            if not isinstance(first, VmSnapshot.Requested | VolumeSnapshot.Requested):
                raise NotFound(f"no such snapshot: {snapshot_id}")
            return events
        assert vm_id is not None
        ids = self.audit.snapshots_of_vm(vm_id)
        if ids is None:
            if not self.known_vm(vm_id):
                raise NotFound(f"no such VM: {vm_id}")
            return []
        return self.audit.timeline(ids)

    def export(self) -> Iterator[ExportedEvent]:
        return self.audit.export()

    def verify(self, expect_head: str | None) -> VerifyReport:
        kept = None if expect_head is None else parse_head(expect_head)
        return self.audit.verify(kept)

    def state(self, snapshot_id: str, at: str | Point) -> SnapshotView:
        point = parse_point(at) if isinstance(at, str) else at
        if isinstance(point, datetime) and point.tzinfo is None:
            point = point.replace(tzinfo=UTC)
        table, doc = self.audit.state_at(parse_id(snapshot_id), point)
        if table == VM_SNAPSHOTS:
            return vm_snapshot_view(doc)
        return VolumeSnapshotView(**doc)

    def check_readable(self) -> None:
        self.audit.check_readable()

    def close(self) -> None:
        self.reader.close()


def parse_head(text: str) -> tuple[int, str]:
    """
    Read ``--expect-head POSITION:HASH``.

    Raises:
        InvalidRequest: it is not that.
    """
    position, _, digest = text.strip().partition(":")
    hexdigits = set("0123456789abcdefABCDEF")
    if not position.isdigit() or len(digest) != 64 or not set(digest) <= hexdigits:
        raise InvalidRequest(
            f"--expect-head {text!r} is not POSITION:HASH (a chain_head from audit verify)"
        )
    return int(position), digest.lower()
