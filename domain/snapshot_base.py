"""
What VM snapshots and volume snapshots share: the workflow state, the quiesce and
unquiesce bookkeeping, call failures, and the create/delete endings.

``@event`` bodies only assign state; commands check the workflow machine first.
"""

from __future__ import annotations

from typing import Any, ClassVar

from eventsourcing.domain import Aggregate, event

from vmsnap.domain.values import QuiesceResult, SnapshotRef, backend_name
from vmsnap.domain.workflow import ALLOCATED, IN_PROGRESS, Workflow


class SnapshotAggregate(Aggregate):
    workflow: ClassVar[Workflow]

    # Called by each subclass's creation event. (No class-level field annotations here:
    # eventsourcing would take them for arguments of the creation event.)
    def _init_workflow(self, vm_id: str, hypervisor: str, quiesce: bool) -> None:
        self.state: str = ALLOCATED
        self.vm_id: str = vm_id
        self.hypervisor: str = hypervisor
        self.quiesce_requested: bool = quiesce
        self.error: str | None = None
        self.frozen: bool = False
        self.quiesced: bool = False
        self.hypervisor_snapshot: str | None = None

    def _move(self, trigger: str) -> None:
        self.state = self.workflow.table[(trigger, self.state)]

    def check(self, trigger: str) -> None:
        """
        Raise :class:`IllegalTransition` unless ``trigger`` applies in the current state.
        """
        self.workflow.next_state(self.state, trigger)

    @property
    def ref(self) -> SnapshotRef:
        """What drivers are told about this snapshot."""
        sid = str(self.id)
        return SnapshotRef(sid, self.vm_id, backend_name(sid), self.quiesce_requested)

    @property
    def in_progress(self) -> bool:
        return self.state in IN_PROGRESS

    # Create leg -----------------------------------------------------------------

    def start_quiesce(self) -> None:
        self.check("start_quiesce")
        self._quiesce_started()

    @event("QuiesceStarted")
    def _quiesce_started(self) -> None:
        self._move("start_quiesce")

    def record_quiesced(self, result: QuiesceResult) -> None:
        self.check("start_snapshotting")
        self._quiesced(result)

    @event("Quiesced")
    def _quiesced(self, result: QuiesceResult) -> None:
        self.frozen = result.frozen
        self.quiesced = result.quiesced
        self.hypervisor_snapshot = result.hypervisor_snapshot
        self._move("start_snapshotting")

    def record_unquiesce_decision(
        self,
        answers: dict[str, bool],
        need_unquiesce: bool,
        thaw: bool,
        release: str | None,
        reason: str,
    ) -> None:
        self.check("start_unquiesce")
        self._unquiesce_decided(answers, need_unquiesce, thaw, release, reason)

    @event("UnquiesceDecided")
    def _unquiesce_decided(
        self,
        answers: dict[str, bool],
        need_unquiesce: bool,
        thaw: bool,
        release: str | None,
        reason: str,
    ) -> None:
        self._move("start_unquiesce")

    @event("Unquiesced")
    def record_unquiesced(
        self, thawed: bool, released: str | None, reason: str, detail: str
    ) -> None:
        if thawed:
            self.frozen = False
        if released is not None and released == self.hypervisor_snapshot:
            self.hypervisor_snapshot = None

    @event("CallFailed")
    def record_call_failed(
        self,
        target: str,
        op: str,
        error: str,
        code: str | None = None,
        attempt: int = 1,
        pool_id: str | None = None,
    ) -> None:
        """
        A hypervisor or driver call raised; the workflow decides what follows.
        """

    @event("DeadlineExceeded")
    def record_deadline_exceeded(self, target: str, op: str, deadline_s: float) -> None:
        """
        The VM stayed frozen for the whole quiesce deadline while ``op`` still ran: it is
        thawed now, and the snapshot will fail.
        """

    @event("AlertRaised")
    def record_alert(self, kind: str, message: str) -> None:
        """
        Something needs an operator: e.g. a VM that may be left frozen.
        """

    def complete(self, quiesced: bool, consistency: str) -> None:
        self.check("complete")
        self._completed(quiesced, consistency)

    @event("Completed")
    def _completed(self, quiesced: bool, consistency: str) -> None:
        self.quiesced = quiesced
        self._set_consistency(consistency)
        self.error = None
        self._move("complete")

    def _set_consistency(self, consistency: str) -> None:
        """Subclasses that show consistency keep it."""

    def fail(self, error: str) -> None:
        self.check("fail")
        self._failed(error)

    @event("Failed")
    def _failed(self, error: str) -> None:
        self.error = error
        self._move("fail")

    # Delete leg -----------------------------------------------------------------

    def start_delete(self) -> None:
        self.check("start_delete")
        self._delete_started()

    @event("DeleteStarted")
    def _delete_started(self) -> None:
        self._move("start_delete")

    def finish_delete(self) -> None:
        self.check("finish_delete")
        self._removed()

    @event("Removed")
    def _removed(self) -> None:
        self._move("finish_delete")

    def to_state(self) -> dict[str, Any]:
        """The aggregate's fields, for audits and tests."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
