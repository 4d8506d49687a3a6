"""
A bounded write-behind cache in front of another :class:`~vmsnap.projections.rows.Rows`:
a replay touches the same few rows event after event (a snapshot's row, its VM's), so
keeping the most recent rows as dicts saves most reads, writes and JSON round trips,
while memory stays bounded by ``capacity``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from vmsnap.projections.rows import Doc, Rows


class _Entry:
    __slots__ = ("dirty", "doc", "replace", "seq")

    def __init__(self, seq: int, doc: Doc | None, dirty: bool, replace: bool = False) -> None:
        self.seq = seq
        self.doc = doc  # None: deleted
        self.dirty = dirty
        self.replace = replace  # deleted, then put again: the backing row starts anew


class CachedRows:
    """
    Rows that reach ``backing`` when evicted or flushed; ``find`` flushes first.
    """

    def __init__(self, backing: Rows, capacity: int = 5000) -> None:
        self.backing = backing
        self.capacity = capacity
        self.entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def get(self, table: str, key: str) -> Doc | None:
        entry = self.entries.get((table, key))
        if entry is None:
            doc = self.backing.get(table, key)
            self._keep((table, key), _Entry(0, doc, False))
            return doc
        self.entries.move_to_end((table, key))
        return None if entry.doc is None else dict(entry.doc)

    def put(self, table: str, key: str, doc: Doc, seq: int) -> None:
        entry = self.entries.get((table, key))
        replace = entry is not None and (entry.replace or (entry.doc is None and entry.dirty))
        if entry is not None and entry.doc is not None and entry.seq:
            seq = entry.seq  # the first put of a key keeps its seq
        self._keep((table, key), _Entry(seq, dict(doc), True, replace))

    def delete(self, table: str, key: str) -> None:
        self._keep((table, key), _Entry(0, None, True))

    def find(self, table: str, column: str, value: Any) -> list[Doc]:
        self.flush()
        return self.backing.find(table, column, value)

    def flush(self) -> None:
        for key, entry in self.entries.items():
            self._write(key, entry)

    def _keep(self, key: tuple[str, str], entry: _Entry) -> None:
        self.entries[key] = entry
        self.entries.move_to_end(key)
        while len(self.entries) > self.capacity:
            self._write(*self.entries.popitem(last=False))

    def _write(self, key: tuple[str, str], entry: _Entry) -> None:
        if not entry.dirty:
            return
        table, k = key
        if entry.doc is None or entry.replace:
            self.backing.delete(table, k)
        if entry.doc is not None:
            self.backing.put(table, k, entry.doc, entry.seq)
        entry.dirty = entry.replace = False
