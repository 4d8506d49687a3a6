"""
Sealing new events into the tamper-evident chain (ADR 0011) as a caller that reads the
log anyway hands them over: the catch-up reads the log once, not twice (ADR 0025).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vmsnap.adapters.chain import GENESIS, PAGE, SQL, create, events_page, link, row_digest


class Sealer:
    """
    Seals events as a caller that reads the log anyway hands them over (the catch-up:
    one read of the log instead of two), then the rest from the log (:meth:`finish`).
    """

    def __init__(self, cursor: Any, dialect: str = "sqlite") -> None:
        self.cursor, self.dialect = cursor, dialect
        if dialect == "sqlite":  # SQLite stores create their own tables as they go
            create(cursor)
        cursor.execute(SQL[dialect]["head"])
        last = cursor.fetchone()
        self.position, self.previous = (
            (0, GENESIS) if last is None else (int(last[0]), bytes(last[1]))
        )

    def add(self, after: int, rows: Sequence[Any]) -> None:
        """
        ``rows``: every event after position ``after``, in log order (a page). Only those
        that follow the last seal directly are sealed here; a gap is left to finish().
        """
        if self.position < after:
            return
        params = []
        position, previous = self.position, self.previous
        for row in rows:
            if int(row[0]) > position:
                position = int(row[0])
                d = row_digest(row)
                previous = link(previous, position, d)
                params.append((position, d, previous))
        if params:
            self.cursor.executemany(SQL[self.dialect]["insert"], params)
        self.position, self.previous = position, previous

    def finish(self, events_table: str) -> int:
        """Seal what is left in the log after the last seal; return the last position."""
        while True:
            rows = events_page(self.cursor, events_table, self.position, self.dialect)
            self.add(self.position, rows)
            if len(rows) < PAGE:
                return self.position
