"""
``audit export`` (ADR 0021): every stored event in log order, as the timeline shows it,
plus what an offline audit needs to check it without the store: the stored form (topic
and state bytes, base64), the event's digest and its chain hash as sealed.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from vmsnap.adapters.chain import Seal, events_page, has_chain, row_digest, seals
from vmsnap.adapters.json_text import dumps
from vmsnap.adapters.log_reader import LogReader
from vmsnap.adapters.store import PAGE
from vmsnap.views import EventView


@attrs.frozen
class ExportedEvent:
    """
    One line of the export: the event (``view``), its stored topic and state bytes, its
    digest as sealed (recomputed when it is not sealed) and its chain hash (None: not
    sealed yet).
    """

    view: EventView
    topic: str
    state: bytes
    digest: bytes
    hash: bytes | None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.view.to_dict(),
            "stored": {"topic": self.topic, "state": base64.b64encode(self.state).decode()},
            "digest": self.digest.hex(),
            "hash": None if self.hash is None else self.hash.hex(),
        }

    def json_line(self) -> str:
        """``json.dumps(self.to_dict()) + "\\n"``: the same text, made faster (ADR 0025)."""
        return dumps(self.to_dict()) + "\n"

    def __getattr__(self, name: str) -> Any:
        # The EventView's fields and decoded event, so an export reads as a timeline does.
        if name == "view":
            raise AttributeError(name)
        return getattr(self.view, name)


def exported(
    reader: LogReader, c: Any, view: Callable[[Any], EventView]
) -> Iterator[ExportedEvent]:
    """The export of the store ``c`` reads (one read-only transaction), page by page."""
    sealed: Iterator[Seal] = seals(c, reader.dialect) if has_chain(c, reader.dialect) else iter(())
    s = next(sealed, None)
    position = 0
    while True:
        page = events_page(c, reader.events_table, position, reader.dialect)
        for row in page:
            position = int(row[0])
            while s is not None and s.position < position:
                s = next(sealed, None)
            state = row[4]
            if type(state) is not bytes:  # bytes as stored are kept, not copied
                state = state.encode() if isinstance(state, str) else bytes(state)
            if s is not None and s.position == position:
                digest, chain_hash = s.digest, s.hash
            else:
                digest, chain_hash = row_digest(row), None
            yield ExportedEvent(view(row), str(row[3]), state, digest, chain_hash)
        if len(page) < PAGE:
            return
