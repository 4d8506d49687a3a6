"""
What VM snapshots and volume snapshots share: the workflow state, the quiesce and
unquiesce bookkeeping, call failures, and the create/delete endings.

Each event is one class that states its whole meaning (ADR 0018): its fields, the
workflow trigger it stands for (``trigger``), whether it froze or thawed the VM
(``freeze_change``), and how it changes the aggregate (``update``). The read side
(projector, verify, timeline) dispatches on these classes, never on their names.
Commands check the workflow machine first; events only assign state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from eventsourcing.domain import Aggregate

from vmsnap.domain.values import (
    CRASH,
    HOOK_FAILED,
    HOOK_OK,
    HOOK_TIMED_OUT,
    NO_ORIGIN,
    POST_THAW,
    PRE_FREEZE,
    HookResult,
    HookSpec,
    Origin,
    QuiesceResult,
    SnapshotRef,
    backend_name,
)
from vmsnap.domain.workflow import (
    ALLOCATED,
    COMPLETE,
    FAIL,
    FINISH_DELETE,
    IN_PROGRESS,
    START_DELETE,
    START_QUIESCE,
    START_SNAPSHOTTING,
    START_UNQUIESCE,
    Workflow,
)


class SnapshotAggregate(Aggregate):
    workflow: ClassVar[Workflow]

    class Event(Aggregate.Event):
        """An event of a VM or volume snapshot."""

        #: The workflow trigger this event stands for; None: it changes no state.
        trigger: ClassVar[str | None] = None

        def apply(self, aggregate: Any) -> None:
            self.update(aggregate)
            if self.trigger is not None:
                aggregate.state = aggregate.workflow.table[(self.trigger, aggregate.state)]

        def update(self, snapshot: Any) -> None:
            """Assign what the event changes besides the workflow state."""

        def freeze_change(self) -> bool | None:
            """True: the VM is frozen from now on; False: it was thawed; None: neither."""
            return None

    class QuiesceStarted(Event):
        """The quiesce call is about to be made."""

        trigger = START_QUIESCE

    class Quiesced(Event):
        """The hypervisor answered the quiesce: frozen, quiesced, its temporary snapshot."""

        trigger = START_SNAPSHOTTING
        result: QuiesceResult

        def update(self, snapshot: Any) -> None:
            snapshot.frozen = self.result.frozen
            snapshot.quiesced = self.result.quiesced
            snapshot.hypervisor_snapshot = self.result.hypervisor_snapshot

        def freeze_change(self) -> bool | None:
            return True if self.result.frozen else None

    class UnquiesceDecided(Event):
        """The AND rule over the drivers' answers, with its inputs and its reason."""

        trigger = START_UNQUIESCE
        answers: dict[str, bool]
        need_unquiesce: bool
        thaw: bool
        release: str | None
        reason: str

    class Unquiesced(Event):
        """The hypervisor thawed the VM and/or released the temporary snapshot."""

        thawed: bool
        released: str | None
        reason: str
        detail: str

        def update(self, snapshot: Any) -> None:
            if self.thawed:
                snapshot.frozen = False
            if self.released is not None and self.released == snapshot.hypervisor_snapshot:
                snapshot.hypervisor_snapshot = None

        def freeze_change(self) -> bool | None:
            return False if self.thawed else None

    class CallFailed(Event):
        """A hypervisor or driver call raised; the workflow decides what follows."""

        target: str
        op: str
        error: str
        code: str | None = None
        attempt: int = 1
        pool_id: str | None = None

    class DeadlineExceeded(Event):
        """
        The VM stayed frozen for the whole quiesce deadline while ``op`` still ran: it is
        thawed now, and the snapshot will fail.
        """

        target: str
        op: str
        deadline_s: float

    class AlertRaised(Event):
        """Something needs an operator: e.g. a VM that may be left frozen."""

        kind: str
        message: str

    class Completed(Event):
        """The snapshot is ready: whether it was quiesced and what consistency it has."""

        trigger = COMPLETE
        quiesced: bool
        consistency: str

        def update(self, snapshot: Any) -> None:
            snapshot.quiesced = self.quiesced
            snapshot.consistency = self.consistency
            snapshot.error = None

    class Failed(Event):
        """The create or delete failed (after compensation): the error says why."""

        trigger = FAIL
        error: str

        def update(self, snapshot: Any) -> None:
            snapshot.error = self.error

    class PostHookOwed(Event):
        """
        The post-thaw hook is owed from now on: saved before the first call it must
        follow (the pre-freeze hook, or the quiesce when there is none). Whatever fails or
        crashes next, it runs once (``recover`` runs it); the command is recorded so that
        recover runs what was owed, not what the config says later.
        """

        run: Sequence[str]
        where: str
        timeout_s: float
        idempotent: bool

        def update(self, snapshot: Any) -> None:
            snapshot.post_hook = HookSpec(self.run, self.where, self.timeout_s, self.idempotent)

    class HookStarted(Event):
        """A hook (``hook``: pre_freeze | post_thaw) is about to be called."""

        hook: str
        run: Sequence[str]
        where: str
        timeout_s: float

        def update(self, snapshot: Any) -> None:
            snapshot.hooks_started.append(self.hook)

    class HookEnded(Event):
        """
        A hook answered: exit code (None: killed at its timeout, or not started and
        ``error`` says why), the first 4 KiB of its output, how long it took.
        """

        hook: str
        exit_code: int | None
        timed_out: bool
        output: str
        duration_ms: int
        error: str | None = None

        @property
        def status(self) -> str:
            if self.timed_out:
                return HOOK_TIMED_OUT
            return HOOK_OK if self.exit_code == 0 and self.error is None else HOOK_FAILED

        def update(self, snapshot: Any) -> None:
            snapshot.hooks_ended.append(self.hook)
            if self.hook == PRE_FREEZE:
                snapshot.pre_hook_ok = self.status == HOOK_OK

    class RecoveryStarted(Event):
        """
        Recovery (``owner``) took this snapshot's operation over from ``previous_owner``,
        saved with the VM's ``Vm.RecoveryClaimed``: its version fences the controller
        that stopped, should it still run.
        """

        owner: str
        previous_owner: str

    class DeleteStarted(Event):
        trigger = START_DELETE
        # Who asked, why, under which request, as on Vm.OperationStarted.
        actor: str | None = None
        reason: str | None = None
        correlation_id: str | None = None

    class Removed(Event):
        trigger = FINISH_DELETE

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
        self.consistency: str = CRASH
        # Hooks (issue 19): the owed post-thaw hook, and the hooks started and ended.
        self.post_hook: HookSpec | None = None
        self.hooks_started: list[str] = []
        self.hooks_ended: list[str] = []
        self.pre_hook_ok: bool | None = None

    def check(self, trigger: str) -> None:
        """
        Raise :class:`IllegalTransition` unless ``trigger`` applies in the current state.
        """
        self.workflow.next_state(self.state, trigger)

    def _transition(self, event_class: type[SnapshotAggregate.Event], **fields: Any) -> None:
        """Record an event that stands for a workflow trigger, once the machine allows it."""
        assert event_class.trigger is not None
        self.check(event_class.trigger)
        self.trigger_event(event_class, **fields)

    @property
    def ref(self) -> SnapshotRef:
        """What drivers are told about this snapshot."""
        sid = str(self.id)
        return SnapshotRef(sid, self.vm_id, backend_name(sid), self.quiesce_requested)

    @property
    def in_progress(self) -> bool:
        return self.state in IN_PROGRESS

    @property
    def post_hook_due(self) -> bool:  # owed, never started
        return self.post_hook is not None and POST_THAW not in self.hooks_started

    @property
    def post_hook_unended(self) -> bool:  # started, its end never recorded (a crash)
        return POST_THAW in self.hooks_started and POST_THAW not in self.hooks_ended

    # Hooks ------------------------------------------------------------------------

    def record_post_hook_owed(self, spec: HookSpec) -> None:
        self.trigger_event(
            SnapshotAggregate.PostHookOwed, **_command(spec), idempotent=spec.idempotent
        )

    def record_hook_started(self, hook: str, spec: HookSpec) -> None:
        self.trigger_event(SnapshotAggregate.HookStarted, hook=hook, **_command(spec))

    def record_hook_ended(
        self, hook: str, result: HookResult | None, *, duration_ms: int, error: str | None = None
    ) -> None:
        self.trigger_event(
            SnapshotAggregate.HookEnded,
            hook=hook,
            exit_code=None if result is None else result.exit_code,
            timed_out=False if result is None else result.timed_out,
            output="" if result is None else result.output,
            duration_ms=duration_ms,
            error=error,
        )

    # Create leg -----------------------------------------------------------------

    def start_quiesce(self) -> None:
        self._transition(SnapshotAggregate.QuiesceStarted)

    def record_quiesced(self, result: QuiesceResult) -> None:
        self._transition(SnapshotAggregate.Quiesced, result=result)

    def record_unquiesce_decision(
        self,
        *,
        answers: dict[str, bool],
        need_unquiesce: bool,
        thaw: bool,
        release: str | None,
        reason: str,
    ) -> None:
        self._transition(
            SnapshotAggregate.UnquiesceDecided,
            answers=answers,
            need_unquiesce=need_unquiesce,
            thaw=thaw,
            release=release,
            reason=reason,
        )

    def record_unquiesced(
        self, *, thawed: bool, released: str | None, reason: str, detail: str
    ) -> None:
        self.trigger_event(
            SnapshotAggregate.Unquiesced,
            thawed=thawed,
            released=released,
            reason=reason,
            detail=detail,
        )

    def record_call_failed(
        self,
        target: str,
        op: str,
        error: str,
        *,
        code: str | None = None,
        attempt: int = 1,
        pool_id: str | None = None,
    ) -> None:
        self.trigger_event(
            SnapshotAggregate.CallFailed,
            target=target,
            op=op,
            error=error,
            code=code,
            attempt=attempt,
            pool_id=pool_id,
        )

    def record_deadline_exceeded(self, target: str, op: str, deadline_s: float) -> None:
        self.trigger_event(
            SnapshotAggregate.DeadlineExceeded, target=target, op=op, deadline_s=deadline_s
        )

    def record_alert(self, kind: str, message: str) -> None:
        self.trigger_event(SnapshotAggregate.AlertRaised, kind=kind, message=message)

    def record_recovery(self, owner: str, previous_owner: str) -> None:
        self.trigger_event(
            SnapshotAggregate.RecoveryStarted, owner=owner, previous_owner=previous_owner
        )

    def complete(self, *, quiesced: bool, consistency: str) -> None:
        self._transition(SnapshotAggregate.Completed, quiesced=quiesced, consistency=consistency)

    def fail(self, error: str) -> None:
        self._transition(SnapshotAggregate.Failed, error=error)

    # Delete leg -----------------------------------------------------------------

    def start_delete(self, origin: Origin = NO_ORIGIN) -> None:
        self._transition(SnapshotAggregate.DeleteStarted, **origin.fields())

    def finish_delete(self) -> None:
        self._transition(SnapshotAggregate.Removed)

    def to_state(self) -> dict[str, Any]:
        """The aggregate's fields, for audits and tests."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


def _command(spec: HookSpec) -> dict[str, Any]:
    """A hook's command as its events record it."""
    return {"run": list(spec.run), "where": spec.where, "timeout_s": spec.timeout_s}
