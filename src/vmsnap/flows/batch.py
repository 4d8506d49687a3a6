"""
Driver calls in flight together (ADR 0024): each call runs in its own worker thread and
puts its outcome on one queue the moment it ends, so the calling thread takes the answers
in the order they came and records them itself (the store connection and the aggregate
are not thread-safe). The workers only call the driver; they record nothing.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import attrs

from vmsnap.domain.values import DriverGroup


@attrs.frozen
class Arrival:
    """One call's outcome: its answer, or what it raised."""

    group: DriverGroup
    answer: Any = None
    error: BaseException | None = None


class Batch:
    """
    The calls of one operation's batch that are in flight, and their outcomes as they come.

    Workers are daemon threads: a call that never returns cannot keep the process from
    exiting (the operation then stays in flight, and recovery compensates the group).
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
        name = f"vmsnap-{self.op}-{group.pool_id}"
        threading.Thread(target=run, name=name, daemon=True).start()

    def next(self, timeout_s: float | None) -> Arrival | None:
        """The next outcome, waiting at most ``timeout_s`` (None: until one comes)."""
        try:
            arrival = self._arrivals.get(timeout=timeout_s)
        except queue.Empty:
            return None
        del self.running[arrival.group.pool_id]
        return arrival

    def drain(self) -> list[Arrival]:
        """Wait for every call still running; their outcomes, in the order they came."""
        return [arrival for _ in range(len(self.running)) if (arrival := self.next(None))]
