"""
The stored views against a rebuild from the log (ADR 0012, 0021): table by table, in key
order, every column compared (the indexed ones that ``list`` filters on, too).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from vmsnap.adapters.store import PAGE
from vmsnap.adapters.view_store import TRACKING
from vmsnap.projections.rows import TABLES

# Key order must be code-point order on both sides of the merge in compare_table.
KEY_PAGE = {
    "sqlite": "SELECT key, seq, {cols}doc FROM view_{table} WHERE key>? ORDER BY key LIMIT ?",
    "postgres": (
        'SELECT key, seq, {cols}doc FROM view_{table} WHERE key > %s COLLATE "C" '
        'ORDER BY key COLLATE "C" LIMIT %s'
    ),
}
EXISTS = {
    "sqlite": "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
    "postgres": (
        "SELECT 1 FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_name = %s"
    ),
}

Row = tuple[str, tuple[Any, ...]]  # key, (seq, indexed columns..., doc)


def table_exists(c: Any, dialect: str, name: str) -> bool:
    c.execute(EXISTS[dialect], (name,))
    return c.fetchone() is not None


def tracking_position(c: Any, dialect: str) -> int | None:
    """How far the stored views were brought (and the log sealed); None: not recorded."""
    if not table_exists(c, dialect, TRACKING):
        return None
    c.execute(f"SELECT position FROM {TRACKING} WHERE name='views'")
    row = c.fetchone()
    return None if row is None or type(row[0]) is not int else int(row[0])


def rows_in_key_order(c: Any, table: str, dialect: str = "sqlite") -> Iterator[Row]:
    cols = "".join(f"{col}, " for col in TABLES[table])
    last = ""
    while True:
        c.execute(KEY_PAGE[dialect].format(table=table, cols=cols), (last, PAGE))
        page = c.fetchall()
        for r in page:
            yield str(r[0]), (r[1], *r[2:-1], _doc(r[-1]))
        if len(page) < PAGE:
            return
        last = str(page[-1][0])


def _doc(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return ("not JSON", text)


def _note(keys: list[str], key: str) -> None:
    if len(keys) < 5:  # a few examples; the counts say how many
        keys.append(key)


def compare_table(table: str, stored: Iterator[Row], rebuilt: Iterator[Row]) -> str | None:
    """One sentence when ``table`` differs from its rebuild, else None."""
    only_stored: list[str] = []
    only_rebuilt: list[str] = []
    differ: list[str] = []
    counts = [0, 0, 0]
    a, b = next(stored, None), next(rebuilt, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            counts[0] += 1
            _note(only_stored, a[0])
            a = next(stored, None)
        elif a is None or b[0] < a[0]:
            counts[1] += 1
            _note(only_rebuilt, b[0])
            b = next(rebuilt, None)
        else:
            if a[1] != b[1]:
                counts[2] += 1
                _note(differ, a[0])
            a, b = next(stored, None), next(rebuilt, None)
    if not any(counts):
        return None
    return (
        f"view {table} differs from a rebuild from the log: {counts[0]} row(s) only stored "
        f"{only_stored}, {counts[1]} row(s) only rebuilt {only_rebuilt}, {counts[2]} row(s) "
        f"differ {differ}"
    )


def compare_views(c: Any, dialect: str, temp: Any) -> Iterator[str]:
    """Every stored view table against the rebuild in ``temp``."""
    for table in TABLES:
        if not table_exists(c, dialect, f"view_{table}"):
            yield f"view {table} is missing from the store (its table was dropped)"
            continue
        diff = compare_table(
            table, rows_in_key_order(c, table, dialect), rows_in_key_order(temp, table)
        )
        if diff is not None:
            yield diff
