"""The port through which projections write rows, and an in-memory implementation."""

from __future__ import annotations

from typing import Any, Protocol

Doc = dict[str, Any]

#: table -> the doc fields it is indexed (and queried) by. Rows keep creation order (seq).
TABLES: dict[str, tuple[str, ...]] = {
    "vm_snapshots": ("vm_id", "state"),
    "volume_snapshots": ("volume_id",),
    "vms": (),
    "pools": (),
    "volumes": ("vm_id", "pool_id"),
}


class Rows(Protocol):
    """
    Keyed JSON rows in the view tables of :data:`TABLES`.
    """

    def get(self, table: str, key: str) -> Doc | None: ...

    def put(self, table: str, key: str, doc: Doc, seq: int) -> None:
        """
        Insert or replace; ``seq`` orders rows: the first put of a key keeps its seq.
        """

    def delete(self, table: str, key: str) -> None: ...

    def find(self, table: str, column: str, value: Any) -> list[Doc]:
        """The rows whose indexed ``column`` equals ``value``, in seq order."""


class MemoryRows:
    """
    Rows in dicts: for rebuilding views from the log and comparing them with the stored ones.
    """

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, tuple[int, Doc]]] = {t: {} for t in TABLES}

    def get(self, table: str, key: str) -> Doc | None:
        row = self.tables[table].get(key)
        return None if row is None else dict(row[1])

    def put(self, table: str, key: str, doc: Doc, seq: int) -> None:
        old = self.tables[table].get(key)
        self.tables[table][key] = (seq if old is None else old[0], dict(doc))

    def delete(self, table: str, key: str) -> None:
        self.tables[table].pop(key, None)

    def find(self, table: str, column: str, value: Any) -> list[Doc]:
        rows = sorted(self.tables[table].values(), key=lambda r: r[0])
        return [dict(doc) for _, doc in rows if doc.get(column) == value]

    def dump(self) -> dict[str, dict[str, tuple[int, Doc]]]:
        return {t: dict(rows) for t, rows in self.tables.items()}
