"""
The orphan ledger (invariant 10, ADR 0020): record what a backend may hold with nothing
else recording it, and clean it up under a claim of its VM (so that a cleanup never runs
beside another operation on the VM), recording every answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from eventsourcing.persistence import IntegrityError

from vmsnap.domain.vm import SETTLE
from vmsnap.flows.ledger import clean_up

if TYPE_CHECKING:
    from vmsnap.domain.values import Owed, VmInfo
    from vmsnap.domain.vm import Vm
    from vmsnap.service.runtime import Runtime

RACE_RETRIES = 5


def record_owed(rt: Runtime, vm_id: str, owed: Sequence[Owed], reason: str) -> None:
    """
    Record ``owed`` on the VM's record, whoever holds the VM (the record may move under
    us: reload and try again).
    """
    for _ in range(RACE_RETRIES):
        record = rt.vm_aggregate(vm_id)
        for o in owed:
            record.owe(o, reason)
        if not record.pending_events:
            return
        try:
            rt.wiring.log.save(record)
            return
        except IntegrityError:
            continue
    raise IntegrityError(f"could not record what VM {vm_id} owes: its record kept moving")


def settle(rt: Runtime, vm_id: str) -> tuple[bool, str | None]:
    """
    Clean up what the VM owes, under a claim of the VM (with its record's version);
    return whether it ran, and the first failure (the object stays owed) or None.
    """
    record = rt.vm_aggregate(vm_id)
    owed = record.owed_now()
    if not owed or record.in_flight is not None:
        return False, None
    vm = rt.vm_info(vm_id)
    first = sorted(owed.values(), key=lambda o: o.key)[0]
    record.start(SETTLE, first.snapshot_id, rt.owner)
    try:
        rt.wiring.log.save(record)
    except IntegrityError:
        return False, None  # another controller claimed the VM first
    rt.running.add(first.snapshot_id)
    try:
        problem = _clean_up_all(rt, record, vm, owed)
        record.end(first.snapshot_id, "settled" if problem is None else "still owed")
        rt.wiring.log.save(record)
    except IntegrityError:
        return True, None  # judged stopped and taken over meanwhile: the other one goes on
    finally:
        rt.done(first.snapshot_id)
    return True, problem


def _clean_up_all(rt: Runtime, record: Vm, vm: VmInfo, owed: dict[str, Owed]) -> str | None:
    """Clean up each owed object, recording each answer; the first failure, or None."""
    problem: str | None = None
    for key, o in sorted(owed.items()):
        try:
            hypervisor = rt.wiring.hypervisor_of(vm)
            answer = clean_up(o, vm, hypervisor, rt.wiring.drivers)
        except Exception as e:  # every failure is recorded; the object stays owed
            error = f"{type(e).__name__}: {e}" if isinstance(e, KeyError) else str(e)
            record.cleanup_failed(key, error or type(e).__name__)
            problem = problem or f"{o.kind} {o.name} on {o.target}: {error}"
        else:
            record.settle(key, answer)
        rt.wiring.log.save(record)
    return problem
