"""
Recorded steps: every hypervisor and driver call of one operation, its answer or its
failure saved as an event before the next step (invariant 1), retries, and the quiesce
deadline. A step that fails raises :class:`StepFailed` after recording the failure; the
flow then compensates.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

from eventsourcing.persistence import IntegrityError

from vmsnap.domain.exceptions import (
    DriverError,
    OperationTakenOver,
    StoreError,
    StoreFailedMidOperation,
)
from vmsnap.domain.ports import Hypervisor, StorageDriver
from vmsnap.domain.rules import decide_unquiesce
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.values import (
    OWED_RELEASE,
    DriverGroup,
    HookResult,
    Owed,
    SnapshotRef,
    VmInfo,
    VolumeInfo,
    temporary_name,
)
from vmsnap.domain.workflow import QUIESCING
from vmsnap.flows.batch import Batch
from vmsnap.flows.ledger import Answered, left_by

T = TypeVar("T")
THAW_ATTEMPTS = 3
STOP_POLL_S = 0.05  # how soon a frozen VM's running call notices the controller stopping

# Why a thaw or release happened (``Unquiesced.reason``).
RULE, MANDATORY, FAILURE, RECOVERY = "rule", "mandatory", "failure", "recovery"
DEADLINE, INTERRUPTED = "deadline", "interrupted"


class StepFailed(Exception):
    """A call failed; its failure is already recorded."""


class Steps:
    """
    Runs one operation's calls for one snapshot, saving every answer as it comes.
    """

    #: Runs ``where = "host"`` hooks (flows/hooks.py); the service sets it.
    host_hooks: Callable[[Sequence[str], float, Mapping[str, str]], HookResult] | None = None

    def __init__(
        self,
        save: Callable[..., object],
        snapshot: SnapshotAggregate,
        vm: VmInfo,
        hypervisor: Hypervisor,
        drivers: dict[str, StorageDriver],
        quiesce_deadline_s: float = 60.0,
        max_parallel: int = 8,
        stopping: threading.Event | None = None,
        reload: Callable[[], SnapshotAggregate] | None = None,
    ) -> None:
        self._store = save
        self.snap = snapshot
        self.vm = vm
        self.hv = hypervisor
        self.drivers = drivers
        self.quiesce_deadline_s = quiesce_deadline_s
        self.max_parallel = max(1, max_parallel)  # driver calls of one batch in flight at once
        # Set when the controller stops (``vmsnap serve`` on SIGTERM): a frozen VM is thawed
        # at once rather than when its running calls return.
        self.stopping = stopping
        self._reload = reload  # the snapshot as stored (after an interrupt, see below)
        self.thaw_by: float | None = None  # monotonic time the frozen VM must be thawed by
        self.answered: list[Answered] = []  # answers of calls, until they are saved
        self.cut_short: str | None = None  # DEADLINE or INTERRUPTED: thawed mid-call

    def save(self, *aggregates: object) -> None:
        """
        Save the operation's new events. A version conflict means recovery took the
        operation over (invariant 9): stop, call nothing more. A store failure after the
        claim leaves the operation in flight for ``vmsnap recover``.
        """
        try:
            self._store(*aggregates)
        except IntegrityError:
            left = self._unsaved()
            raise OperationTakenOver(
                f"snapshot {self.snap.id} on VM {self.vm.id}: recovery took the operation "
                "over (its record changed under it); it stopped before its next call",
                str(self.snap.id),
                owed=left,
            ) from None
        except StoreError as e:
            left = self._unsaved()
            raise StoreFailedMidOperation(
                f"{e}; snapshot {self.snap.id} on VM {self.vm.id} is left in flight: "
                "run 'vmsnap recover'",
                str(self.snap.id),
                owed=left,
            ) from None
        self.answered = []

    def _unsaved(self) -> list[Owed]:
        """What the answered calls not saved yet may have left in their backends."""
        return [owed for call in self.answered for owed in left_by(self.snap, call)]

    def call(
        self,
        target: str,
        op: str,
        fn: Callable[[], T],
        *,
        pool_id: str | None = None,
        attempts: int = 1,
    ) -> T:
        error = ""
        for attempt in range(1, attempts + 1):
            try:
                if self.thaw_by is not None and self.snap.frozen:
                    answer = self._within_deadline(target, op, fn)
                else:
                    answer = fn()
                self.answered = [Answered(target, op, pool_id, answer)]
                return answer
            except Exception as e:  # every failure is recorded, whatever raised it
                code = e.code if isinstance(e, DriverError) else type(e).__name__
                error = str(e) or type(e).__name__
                self.snap.record_call_failed(
                    target, op, error, code=code, attempt=attempt, pool_id=pool_id
                )
                self.save(self.snap)
        raise StepFailed(f"{op} on {target} failed: {error}")

    def call_groups(
        self,
        groups: Iterable[DriverGroup],
        op: str,
        fn: Callable[[StorageDriver, list[VolumeInfo]], T],
        record: Callable[[DriverGroup, T], None],
        *,
        keep_going: bool = False,
    ) -> None:
        """
        Call each driver group's driver once (the seed's grouping), at most
        ``max_parallel`` calls at once (ADR 0024); record and save each answer, or each
        failure, on this thread as it arrives. A failure (unless ``keep_going``) or the
        quiesce deadline stops the batch: no further call starts, a frozen VM is thawed at
        once (recorded), the calls still running are waited for and their answers
        recorded (the compensation then deletes what they took); then StepFailed.
        """
        waiting = deque(groups)
        batch = Batch(op)
        stopped: str | None = None  # why the batch stopped early
        try:
            while waiting or batch.running:
                while waiting and stopped is None and len(batch.running) < self.max_parallel:
                    group = waiting.popleft()
                    driver, volumes = self.drivers[group.pool_id], self.volumes(group.volume_ids)
                    batch.start(group, functools.partial(fn, driver, volumes))
                if not batch.running:
                    break
                arrivals = batch.arrived(self._wait_s())
                if not arrivals:
                    cut = self._cut()  # the deadline passed, or the controller stops
                    if cut is not None:
                        stopped = stopped or self._thaw_now(op, [*batch.running], cut)
                    continue
                failure = batch.record(self.snap, arrivals, record, self.answered)
                self.save(self.snap)  # those that came together, in one transaction
                if failure is not None and not keep_going and stopped is None:
                    stopped = failure
                    if batch.running and self.snap.frozen:
                        # Thaw now, not after the slow calls: the guest waits for nothing.
                        with contextlib.suppress(StepFailed):  # recorded; compensation retries
                            self.unquiesce(self.snap.ref, thaw=True, release=None, reason=FAILURE)
        except (OperationTakenOver, StoreFailedMidOperation) as e:
            # Nothing more can be recorded: what the running calls take is owed instead.
            e.owed = (*e.owed, *batch.owed(self.snap, batch.drain()))
            raise
        if stopped is not None:
            raise StepFailed(stopped)

    def _wait_s(self) -> float | None:
        """
        How long to wait for a call of the frozen VM before looking again at the deadline
        and at a stop; None: the VM is not frozen (or no deadline runs), wait for the call.
        """
        if self.thaw_by is None or not self.snap.frozen:
            return None
        remaining = max(0.0, self.thaw_by - time.monotonic())
        return remaining if self.stopping is None else min(remaining, STOP_POLL_S)

    def _cut(self) -> str | None:
        """Why the frozen VM must be thawed now, calls still running; None: no reason."""
        if self.thaw_by is None or not self.snap.frozen:
            return None
        if time.monotonic() >= self.thaw_by:
            return DEADLINE
        if self.stopping is not None and self.stopping.is_set():
            return INTERRUPTED
        return None

    def _thaw_now(self, op: str, running: list[str], cut: str) -> str:
        """
        Thaw the VM at once with calls still running (recorded: the deadline with each call
        it cut short; the calls go on and are waited for after); return why.
        """
        self.cut_short = cut
        if cut == DEADLINE:
            for target in running:
                self.snap.record_deadline_exceeded(target, op, self.quiesce_deadline_s)
            self.save(self.snap)
        with contextlib.suppress(StepFailed):  # recorded; recover retries a failed thaw
            self.unquiesce(self.snap.ref, thaw=True, release=None, reason=cut)
        return self.cut_message()

    def _within_deadline(self, target: str, op: str, fn: Callable[[], T]) -> T:
        """
        Run a call while the VM is frozen; if the quiesce deadline passes first, thaw the
        VM at once and let the call finish (its answer is still recorded), then fail.
        """
        outcome: list[T] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                outcome.append(fn())
            except BaseException as e:
                errors.append(e)

        worker = threading.Thread(target=run, name=f"vmsnap-{op}-{target}", daemon=True)
        worker.start()
        cut = None
        while worker.is_alive() and cut is None:
            worker.join(self._wait_s())
            cut = self._cut() if worker.is_alive() else None
        if cut is not None:
            try:
                self._thaw_now(op, [target], cut)
            finally:
                worker.join()
        if errors:
            raise errors[0]
        return outcome[0]

    def cut_message(self) -> str:
        if self.cut_short == INTERRUPTED:
            return (
                "interrupted: the controller is stopping; the VM was thawed while a call still ran"
            )
        return (
            f"quiesce deadline of {self.quiesce_deadline_s:g}s exceeded: "
            "the VM was thawed while a call still ran"
        )

    def check_deadline(self) -> None:
        if self.cut_short is not None:
            raise StepFailed(self.cut_message())

    def volumes(self, ids: tuple[str, ...]) -> list[VolumeInfo]:
        by_id = {v.id: v for v in self.vm.volumes}
        return [by_id[i] for i in ids]

    def quiesce(self, ref: SnapshotRef, *, memory: bool) -> None:
        self.snap.start_quiesce()
        self.save(self.snap)
        result = self.call(
            self.hv.name, "quiesce", lambda: self.hv.quiesce(self.vm, ref, memory=memory)
        )
        self.snap.record_quiesced(result)
        self.save(self.snap)
        if result.frozen:
            self.thaw_by = time.monotonic() + self.quiesce_deadline_s

    def decide_and_unquiesce(self, answers: dict[str, bool], *, memory: bool) -> None:
        """
        The AND rule over the drivers' answers, recorded with its inputs, then the
        unquiesce it decides (invariant 3).
        """
        snap = self.snap
        decision = decide_unquiesce(
            answers, frozen=snap.frozen, temp_snapshot=snap.hypervisor_snapshot, memory=memory
        )
        snap.record_unquiesce_decision(
            answers=dict(answers),
            need_unquiesce=decision.need_unquiesce,
            thaw=decision.thaw,
            release=decision.release,
            reason=decision.reason,
        )
        self.save(snap)
        self.unquiesce(
            snap.ref,
            thaw=decision.thaw,
            release=decision.release,
            reason=RULE if decision.release else MANDATORY,
        )

    def unquiesce(self, ref: SnapshotRef, *, thaw: bool, release: str | None, reason: str) -> None:
        """
        Thaw (mandatory when frozen, retried) and/or release the temporary snapshot.
        """
        if not thaw and release is None:
            return
        attempts = THAW_ATTEMPTS if thaw else 1
        deadline, self.thaw_by = self.thaw_by, None  # the unquiesce call itself is not cut short
        try:
            detail = self.call(
                self.hv.name,
                "unquiesce",
                lambda: self.hv.unquiesce(self.vm, ref, thaw=thaw, release=release),
                attempts=attempts,
            )
        except StepFailed:
            # Past the deadline the cleanup is not cut short again (one DeadlineExceeded).
            self.thaw_by = None if self.cut_short else deadline
            if thaw and self.snap.frozen:
                self.snap.record_alert(
                    "vm-frozen",
                    f"VM {self.vm.id} may still be frozen: thaw failed {attempts} times",
                )
                self.save(self.snap)
            raise
        self.snap.record_unquiesced(thawed=thaw, released=release, reason=reason, detail=detail)
        self.save(self.snap)

    @contextlib.contextmanager
    def thaw_on_error(self) -> Iterator[None]:
        """
        If the operation breaks off with an error that is not a recorded call failure (the
        store refused a write, a bug), thaw a frozen VM before the error propagates: the
        freeze must not outlive the failure. Nothing can be recorded here; recover() thaws
        again (thaw is idempotent) and records it.
        """
        try:
            yield
        except (StepFailed, OperationTakenOver):
            raise  # a taken-over operation calls nothing more: recovery owns the VM now
        except KeyboardInterrupt:
            # Ctrl-C, SIGTERM or SIGHUP (the CLI raises it): thaw, recorded, before the
            # process exits; the operation stays in flight and recover() compensates it.
            if self.snap.frozen or self.snap.state == QUIESCING:
                self._thaw_interrupted()
            raise
        except Exception:
            if self.snap.frozen or self.snap.state == QUIESCING:
                with contextlib.suppress(Exception):
                    self.hv.unquiesce(self.vm, self.snap.ref, thaw=True, release=None)
            raise

    def _thaw_interrupted(self) -> None:
        """
        The interrupt may have cut a save short, leaving the aggregate ahead of its record
        (events taken from it, never stored): record the thaw on the snapshot as stored.
        Where that cannot be recorded, thaw all the same; recover() records it.
        """
        self.thaw_by = None
        try:
            if self._reload is not None:
                self.snap = self._reload()
            self.unquiesce(self.snap.ref, thaw=True, release=None, reason=INTERRUPTED)
        except Exception:
            with contextlib.suppress(Exception):
                self.hv.unquiesce(self.vm, self.snap.ref, thaw=True, release=None)

    def release_after_failure(self, reason: str) -> list[Owed]:
        """
        On the failure path of a quiesced flow: thaw a VM that is (or may be) frozen and
        release the quiesce's temporary hypervisor snapshot; record failures and go on.
        """
        snap = self.snap
        # A quiesce call that never answered may have frozen the VM and taken its temporary
        # snapshot: thaw and release (by its fixed name) to be sure; both are idempotent.
        unanswered = snap.state == QUIESCING
        maybe_frozen = snap.frozen or unanswered
        temp = snap.hypervisor_snapshot
        if unanswered and temp is None:
            temp = temporary_name(snap.ref.name)
        try:
            self.unquiesce(snap.ref, thaw=maybe_frozen, release=temp, reason=reason)
        except StepFailed:  # recorded; the caller reports leftovers and owes the release
            if temp is not None:
                return [Owed(OWED_RELEASE, self.hv.name, temp, str(snap.id))]
        return []
