"""The audit room: timelines, export, verification and time travel. Calls no adapter."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import UUID

from vmsnap.audit import Audit, Point, parse_point
from vmsnap.domain.exceptions import InvalidRequest, NotFound
from vmsnap.domain.vm_snapshot import snapshot_id as parse_id
from vmsnap.projections.projector import VM_SNAPSHOTS, VOLUME_SNAPSHOTS
from vmsnap.service.queries import SnapshotView, vm_snapshot_view
from vmsnap.service.runtime import Runtime
from vmsnap.views import EventView, VerifyReport, VolumeSnapshotView


class Auditing:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.audit = Audit(runtime.wiring.log)

    def timeline(self, *, snapshot_id: str | None, vm_id: str | None) -> list[EventView]:
        if (snapshot_id is None) == (vm_id is None):
            raise InvalidRequest("give a snapshot id or a VM id")
        views = self.rt.views_current()
        if snapshot_id is not None:
            sid = str(parse_id(snapshot_id))
            if views.get(VM_SNAPSHOTS, sid) is None and views.get(VOLUME_SNAPSHOTS, sid) is None:
                raise NotFound(f"no such snapshot: {snapshot_id}")
            ids = [sid]
        else:
            assert vm_id is not None
            vm = self.rt.vm_info(vm_id)
            ids = [d["id"] for d in views.select(VM_SNAPSHOTS, {"vm_id": vm_id})]
            ids += [
                d["id"]
                for vol in vm.volumes
                for d in views.select(VOLUME_SNAPSHOTS, {"volume_id": vol.id})
            ]
        return self.audit.timeline([UUID(i) for i in ids])

    def export(self) -> Iterator[EventView]:
        return self.audit.export()

    def verify(self, expect_head: str | None) -> VerifyReport:
        kept = None if expect_head is None else parse_head(expect_head)
        self.rt.wiring.views.catch_up()
        return self.audit.verify(kept)

    def state(self, snapshot_id: str, at: str | Point) -> SnapshotView:
        point = parse_point(at) if isinstance(at, str) else at
        if isinstance(point, datetime) and point.tzinfo is None:
            point = point.replace(tzinfo=UTC)
        table, doc = self.audit.state_at(parse_id(snapshot_id), point)
        if table == VM_SNAPSHOTS:
            return vm_snapshot_view(doc)
        return VolumeSnapshotView(**doc)


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
