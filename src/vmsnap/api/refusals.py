"""
Refusals of unauthenticated requests: counted and logged, at most one log line per
interval, never stored per request, so that a flood of them costs the log nothing
(ADR 0022). Refusals of authenticated requests (a replay) keep their audit record.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

LOG = logging.getLogger("vmsnap.api")
INTERVAL_S = 60.0


class RefusalCounter:
    """
    Counts refusals by reason. The first refusal after a quiet interval is logged at
    once; the others of the interval are summed into the next line.
    """

    def __init__(
        self,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self._interval = interval_s
        self._clock = clock
        self._log = log or LOG.warning
        self._lock = threading.Lock()
        self.total: Counter[str] = Counter()
        self._pending: Counter[str] = Counter()
        self._last: float | None = None
        self.lines = 0

    def refused(self, reason: str, remote: str | None) -> None:
        with self._lock:
            self.total[reason] += 1
            self._pending[reason] += 1
            now = self._clock()
            if self._last is not None and now - self._last < self._interval:
                return
            self._last = now
            summary = ", ".join(f"{r} {n}" for r, n in sorted(self._pending.items()))
            self._pending.clear()
            self.lines += 1
        self._log(f"refused unauthenticated API requests: {summary} (last from {remote})")
