"""
Driver calls in flight together (ADR 0024): each call runs in its own worker thread and
puts its outcome on one queue the moment it ends, so the calling thread takes the answers
in the order they came and records them itself (the store connection and the aggregate
are not thread-safe). The workers only call the driver; they record nothing.
"""

from __future__ import annotations

import _thread
import queue
from collections.abc import Callable
from typing import Any

import attrs

from vmsnap.domain.exceptions import DriverError
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.values import DriverGroup, Owed
from vmsnap.flows.ledger import Answered, left_by


@attrs.frozen
class Arrival:
    """One call's outcome: its answer, or what it raised."""

    group: DriverGroup
    answer: Any = None
    error: BaseException | None = None


class Batch:
    """
    The calls of one operation's batch that are in flight, and their outcomes as they come.

    Workers are low-level threads (``_thread``), which, like daemon threads, cannot keep
    the process from exiting (a call that never returns leaves the operation in flight,
    and recovery compensates the group). ``threading.Thread.start`` waits until each new
    thread has run: sixteen starts took 15-63 ms on a busy 2-core machine, all inside the
    freeze and spreading the calls out; ``_thread.start_new_thread`` took 0.6 ms.
    """

    def __init__(self, op: str) -> None:
        self.op = op
        self.running: dict[str, DriverGroup] = {}  # pool id -> group, calls not yet answered
        self._arrivals: queue.SimpleQueue[Arrival] = queue.SimpleQueue()

    def start(self, group: DriverGroup, call: Callable[[], Any]) -> None:
        arrivals = self._arrivals

        def run() -> None:
            try:
                answer = call()
            except BaseException as e:  # every outcome goes back to the calling thread
                arrivals.put(Arrival(group, error=e))
            else:
                arrivals.put(Arrival(group, answer))

        self.running[group.pool_id] = group
        _thread.start_new_thread(run, ())

    def next(self, timeout_s: float | None) -> Arrival | None:
        """The next outcome, waiting at most ``timeout_s`` (None: until one comes)."""
        try:
            if timeout_s == 0:
                arrival = self._arrivals.get_nowait()
            else:
                arrival = self._arrivals.get(timeout=timeout_s)
        except queue.Empty:
            return None
        del self.running[arrival.group.pool_id]
        return arrival

    def arrived(self, timeout_s: float | None) -> list[Arrival]:
        """
        The outcomes that came, in order: waits at most ``timeout_s`` for the first (None:
        until it comes; nothing came: []), then takes those already there with it.
        """
        first = self.next(timeout_s)
        if first is None:
            return []
        arrivals = [first]
        while arrival := self.next(0):
            arrivals.append(arrival)
        return arrivals

    def drain(self) -> list[Arrival]:
        """Wait for every call still running; their outcomes, in the order they came."""
        return [arrival for _ in range(len(self.running)) if (arrival := self.next(None))]

    def record(
        self,
        snap: SnapshotAggregate,
        arrivals: list[Arrival],
        record: Callable[[DriverGroup, Any], None],
        answered: list[Answered],
    ) -> str | None:
        """
        Record on ``snap`` the outcomes that came, in the order they came (the caller
        saves them together: those that came together wait for no other write); note each
        answer in ``answered`` until it is saved; return the first failure's message.
        """
        failure = None
        for arrival in arrivals:
            pool_id, e = arrival.group.pool_id, arrival.error
            if e is not None and not isinstance(e, Exception):
                self.drain()  # not a call failure: the process is going down, and as
                raise e  # with a call made in process, nothing more is recorded
            if e is None:
                answered.append(Answered(pool_id, self.op, pool_id, arrival.answer))
                record(arrival.group, arrival.answer)
                continue
            code = e.code if isinstance(e, DriverError) else type(e).__name__
            error = str(e) or type(e).__name__
            snap.record_call_failed(pool_id, self.op, error, code=code, pool_id=pool_id)
            failure = failure or f"{self.op} on {pool_id} failed: {error}"
        return failure

    def owed(self, snap: SnapshotAggregate, arrivals: list[Arrival]) -> list[Owed]:
        """What the answered calls of ``arrivals`` may hold, none of it recorded."""
        owed: list[Owed] = []
        for a in arrivals:
            if a.error is None:
                owed += left_by(snap, Answered(a.group.pool_id, self.op, a.group.pool_id, a.answer))
        return owed
