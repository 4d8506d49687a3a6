"""
``audit verify --from-export FILE`` (ADR 0021): the chain and the workflow rules checked
from an export alone, without the store or a config. Each line's stored bytes must give
its digest, its data must be what those bytes decode to, its hash must follow from the
line before it, and the events must replay under the rules.
"""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper

from vmsnap.adapters.chain import GENESIS, digest, link
from vmsnap.projections.events import event_data, event_type
from vmsnap.stored import Unreadable, decode
from vmsnap.verify import Rules
from vmsnap.verify_log import Problems, Versions
from vmsnap.views import VerifyReport

FIELDS = ("position", "originator_id", "version", "type", "timestamp", "data", "stored", "digest")


class _Line:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.position = int(doc["position"])
        self.oid = UUID(str(doc["originator_id"]))
        self.version = int(doc["version"])
        self.topic = str(doc["stored"]["topic"])
        self.state = base64.b64decode(doc["stored"]["state"], validate=True)
        self.digest = bytes.fromhex(doc["digest"])
        self.hash = None if doc.get("hash") is None else bytes.fromhex(doc["hash"])
        self.doc = doc


def _parse(text: str) -> _Line:
    doc = json.loads(text)
    missing = [f for f in FIELDS if f not in doc]
    if missing:
        raise ValueError(f"it lacks {missing}")
    return _Line(doc)


class ExportCheck:
    """The export's lines checked one by one, in order (memory flat in its length)."""

    def __init__(
        self,
        mappers: Sequence[Mapper[UUID]],
        problems: Problems,
        temp: Any,
        kept: tuple[int, str] | None = None,
    ) -> None:
        self.kept = kept
        self.kept_found: str | None = None  # the hash at the kept head's position
        self.mappers = list(mappers)
        self.problems = problems
        self.rules = Rules(temp.cursor(), problems)
        self.versions = Versions(temp.cursor(), problems)
        self.previous = GENESIS
        self.alternative: bytes | None = None  # the chain before a line that broke it
        self.broken: int | None = None  # the position of that line, not yet reported
        self.last_position = 0
        self.head: tuple[int, str] | None = None
        self.unsealed = [0, 0, 0]
        self.count = 0

    def line(self, number: int, text: str) -> None:
        try:
            line = _parse(text)
        except (ValueError, KeyError, TypeError, binascii.Error) as e:
            self.problems.add("chain", f"line {number}: not an exported event ({e})")
            return
        self.count += 1
        p = line.position
        if p <= self.last_position:
            self.problems.add(
                "chain",
                f"position {p} (line {number}): after position {self.last_position}: "
                "lines reordered",
            )
        self.last_position = max(self.last_position, p)
        self.versions.see(line.oid, line.version, p)
        if digest(line.oid.hex, line.version, line.topic, line.state) != line.digest:
            self.problems.add(
                "chain", f"position {p}: line changed (its stored bytes do not give its digest)"
            )
        self._chain(line)
        self._replay(line)

    def _chain(self, line: _Line) -> None:
        p = line.position
        if line.hash is None:
            self.unsealed = [self.unsealed[0] + 1, self.unsealed[1] or p, p]
            return
        if self.unsealed[0]:
            self.problems.add(
                "chain",
                f"position {p}: sealed line after unsealed ones "
                f"(from position {self.unsealed[1]}): lines inserted or moved",
            )
        follows = line.hash == link(self.previous, p, line.digest)
        alt = self.alternative
        if self.broken is not None:
            if not follows and alt is not None and line.hash == link(alt, p, line.digest):
                self.problems.add(
                    "chain", f"position {self.broken}: line inserted (it is not part of the chain)"
                )
                follows = True
            else:
                self._report_break(self.broken)
            self.broken, self.alternative = None, None
        if not follows:
            self.broken, self.alternative = p, self.previous
        self.previous = line.hash
        self.head = (p, line.hash.hex())
        if self.kept is not None and p == self.kept[0]:
            self.kept_found = line.hash.hex()

    def _report_break(self, p: int) -> None:
        self.problems.add(
            "chain",
            f"position {p}: the chain breaks here: a line before it was dropped or moved, "
            "or this line was changed",
        )

    def _replay(self, line: _Line) -> None:
        row = (line.position, line.oid, line.version, line.topic, line.state)
        event = None
        for mapper in list(self.mappers):
            try:
                event = decode(mapper, row)
            except Unreadable:
                continue
            self.mappers = [mapper]  # the settings that decoded it decode the rest
            break
        if event is None:
            self.problems.at(
                "log",
                line.position,
                "the stored event cannot be read (encrypted: set $VMSNAP_CIPHER_KEY)",
                self.last_position,
            )
            return
        shown = {
            "originator_id": str(event.originator_id),
            "type": event_type(event),
            "timestamp": event.timestamp.isoformat(),
            "data": event_data(event),
        }
        changed = [k for k, v in shown.items() if line.doc.get(k) != v]
        if changed:
            self.problems.add(
                "chain",
                f"position {line.position}: line changed (its "
                f"{', '.join(changed)} differ from its stored bytes)",
            )
        try:
            self.rules.check(event, line.position)
        except Exception as e:  # data that decodes but does not fit: a finding
            self.problems.add("log", f"position {line.position}: does not fit the log ({e})")

    def finish(self) -> VerifyReport:
        if self.broken is not None:
            self._report_break(self.broken)
        kept = self.kept
        if kept is not None and self.kept_found != kept[1]:
            self.problems.add(
                "chain",
                f"position {kept[0]}: the chain does not pass through the head kept "
                f"({kept[1][:16]}…): the log was rewritten up to here",
            )
        self.rules.finish()
        n, first, last = self.unsealed
        return self.problems.report(self.count, self.head, (n, first, last) if n else None)


def verify_export(
    lines: Iterable[str], mappers: Sequence[Mapper[UUID]], kept: tuple[int, str] | None = None
) -> VerifyReport:
    """Check an export (its lines) alone; ``mappers``: the at-rest settings to try."""
    problems = Problems()
    temp = sqlite3.connect("")
    try:
        check = ExportCheck(mappers, problems, temp, kept)
        for number, text in enumerate(lines, 1):
            if text.strip():
                check.line(number, text)
        return check.finish()
    finally:
        temp.close()
