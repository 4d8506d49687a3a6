"""
The tamper-evident chain of the event log (ADR 0011): one hash per stored event, sealed
in log order inside the views' write transaction, and the streaming comparison that finds
the events deleted, changed, reordered or inserted after they were sealed.

A seal holds the event's *digest* (SHA-256 over its originator id, version, topic and
stored state bytes) and the *chain hash* (SHA-256 over the previous seal's hash, the
event's position and its digest). The digest tells where an event was sealed, so a moved
event is told apart from a changed one; the hash ties each seal to every one before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from uuid import UUID

import attrs

CHAIN = "event_chain"
GENESIS = bytes(32)  # the "previous hash" of the first seal
PAGE = 1000

# Every statement the chain runs, by SQL dialect (a PostgreSQL variant adds a key here
# with %s placeholders and BYTEA columns). {events} is the store's events table.
SQL: dict[str, dict[str, str]] = {
    "sqlite": {
        "create": (
            f"CREATE TABLE IF NOT EXISTS {CHAIN} "
            "(position INTEGER PRIMARY KEY, digest BLOB NOT NULL, hash BLOB NOT NULL)"
        ),
        "index": f"CREATE INDEX IF NOT EXISTS {CHAIN}_digest ON {CHAIN} (digest)",
        "exists": f"SELECT 1 FROM sqlite_master WHERE type='table' AND name='{CHAIN}'",
        "head": f"SELECT position, hash FROM {CHAIN} ORDER BY position DESC LIMIT 1",
        "insert": f"INSERT INTO {CHAIN} (position, digest, hash) VALUES (?, ?, ?)",
        "seals": (
            f"SELECT position, digest, hash FROM {CHAIN} WHERE position>? ORDER BY position LIMIT ?"
        ),
        "sealed_at": f"SELECT position FROM {CHAIN} WHERE digest=? LIMIT 1",
        "hash_at": f"SELECT hash FROM {CHAIN} WHERE position=?",
        "events": (
            "SELECT rowid, originator_id, originator_version, topic, state FROM {events} "
            "WHERE rowid>? ORDER BY rowid LIMIT ?"
        ),
    },
    # PostgreSQL: the statements run with the store's schema first on the search_path.
    "postgres": {
        "create": (
            f"CREATE TABLE IF NOT EXISTS {CHAIN} "
            "(position BIGINT PRIMARY KEY, digest BYTEA NOT NULL, hash BYTEA NOT NULL)"
        ),
        "index": f"CREATE INDEX IF NOT EXISTS {CHAIN}_digest ON {CHAIN} (digest)",
        "exists": (
            "SELECT 1 FROM information_schema.tables "
            f"WHERE table_schema = current_schema() AND table_name = '{CHAIN}'"
        ),
        "head": f"SELECT position, hash FROM {CHAIN} ORDER BY position DESC LIMIT 1",
        "insert": f"INSERT INTO {CHAIN} (position, digest, hash) VALUES (%s, %s, %s)",
        "seals": (
            f"SELECT position, digest, hash FROM {CHAIN} "
            "WHERE position>%s ORDER BY position LIMIT %s"
        ),
        "sealed_at": f"SELECT position FROM {CHAIN} WHERE digest=%s LIMIT 1",
        "hash_at": f"SELECT hash FROM {CHAIN} WHERE position=%s",
        "events": (
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM {events} WHERE notification_id>%s ORDER BY notification_id LIMIT %s"
        ),
    },
}


def create(cursor: Any, dialect: str = "sqlite") -> None:
    """Create the chain table (PostgreSQL: by `store migrate` only, ADR 0009)."""
    cursor.execute(SQL[dialect]["create"])
    cursor.execute(SQL[dialect]["index"])


@attrs.frozen
class Seal:
    position: int
    digest: bytes
    hash: bytes


@attrs.frozen
class Finding:
    """
    One sign of tampering: ``kind`` is deleted, changed, reordered, inserted or chain.
    """

    kind: str
    position: int
    message: str


def _field(value: Any) -> bytes:
    # Any stored value hashes, even one a tamperer gave the wrong type (SQLite allows it).
    binary = isinstance(value, bytes | bytearray | memoryview)
    data = bytes(value) if binary else str(value).encode()
    return len(data).to_bytes(8, "big") + data  # length-prefixed: no two framings collide


def digest(originator_id: Any, version: int, topic: str, state: Any) -> bytes:
    """
    The SHA-256 digest of one stored event (the bytes as stored: encrypted, if they are).
    """
    if (
        type(originator_id) is str
        and len(originator_id) == 32
        and type(version) is int
        and type(topic) is str
        and type(state) is bytes
    ):  # the form vmsnap stores on SQLite: the same bytes hashed, fewer calls (profiled)
        parts = (originator_id.lower().encode(), str(version).encode(), topic.encode(), state)
        return hashlib.sha256(b"".join(len(b).to_bytes(8, "big") + b for b in parts)).digest()
    if isinstance(originator_id, str) and len(originator_id) == 32:
        oid = originator_id.lower()  # SQLite stores the hex form already
    elif isinstance(originator_id, UUID):
        oid = originator_id.hex
    else:
        try:
            oid = UUID(str(originator_id)).hex
        except ValueError:
            oid = str(originator_id)  # not an id at all: hash it as it is
    return hashlib.sha256(_field(oid) + _field(version) + _field(topic) + _field(state)).digest()


def link(previous: bytes, position: int, event_digest: bytes) -> bytes:
    """
    The chain hash of the event at ``position``, following the seal hashed ``previous``.
    """
    return hashlib.sha256(previous + position.to_bytes(8, "big") + event_digest).digest()


def row_digest(row: Any) -> bytes:
    return digest(row[1], row[2], row[3], row[4])


def seal(cursor: Any, events_table: str, dialect: str = "sqlite") -> int:
    """
    Seal every event recorded after the last seal, in log order; return the last sealed
    position. Runs inside the caller's write transaction, so each event is sealed once.
    """
    from vmsnap.adapters.sealing import Sealer  # it builds on this module

    return Sealer(cursor, dialect).finish(events_table)


def head(cursor: Any, dialect: str = "sqlite") -> tuple[int, str] | None:
    """
    The last seal: its position and hex hash (for an auditor to keep elsewhere).
    """
    cursor.execute(SQL[dialect]["head"])
    row = cursor.fetchone()
    return None if row is None else (int(row[0]), bytes(row[1]).hex())


def events_page(cursor: Any, events_table: str, after: int, dialect: str = "sqlite") -> list[Any]:
    """
    The stored events after position ``after``, one page: (position, originator id,
    version, topic, state).
    """
    cursor.execute(SQL[dialect]["events"].format(events=events_table), (after, PAGE))
    return list(cursor.fetchall())


def check_head(cursor: Any, kept: tuple[int, str], dialect: str = "sqlite") -> Finding | None:
    """
    Compare a chain head kept elsewhere (position, hex hash) with the seal stored there:
    a chain rewritten up to that position no longer passes through it.
    """
    position, expected = kept
    cursor.execute(SQL[dialect]["hash_at"], (position,))
    row = cursor.fetchone()
    if row is not None and bytes(row[0]).hex() == expected.lower():
        return None
    return Finding(
        "rewritten",
        position,
        f"position {position}: the chain does not pass through the head kept "
        f"({expected[:16]}…): the log was rewritten up to here",
    )


def has_chain(cursor: Any, dialect: str = "sqlite") -> bool:
    cursor.execute(SQL[dialect]["exists"])
    return cursor.fetchone() is not None


def seals(cursor: Any, dialect: str = "sqlite") -> Iterator[Seal]:
    """
    Every seal in position order, read in pages (the cursor must not be shared meanwhile).
    """
    position = 0
    while True:
        cursor.execute(SQL[dialect]["seals"], (position, PAGE))
        rows = cursor.fetchall()
        for row in rows:
            position = int(row[0])
            yield Seal(position, bytes(row[1]), bytes(row[2]))
        if len(rows) < PAGE:
            return


def sealed_at(cursor: Any, dialect: str = "sqlite") -> Callable[[bytes], int | None]:
    """
    A lookup: the position where the event with this digest was sealed, if it was.
    """

    def find(event_digest: bytes) -> int | None:
        cursor.execute(SQL[dialect]["sealed_at"], (event_digest,))
        row = cursor.fetchone()
        return None if row is None else int(row[0])

    return find


def compare(
    events: Iterable[tuple[int, bytes]],
    sealed: Iterable[Seal],
    where_sealed: Callable[[bytes], int | None],
) -> Iterator[Finding]:
    """
    Compare the events as stored (position, digest) with their seals, both in position
    order, streaming; yield what was altered after sealing. Events after the last seal
    are the unsealed tail, which the caller reports (ADR 0021).
    """
    return _explain(_raw_findings(iter(events), iter(sealed), where_sealed))


def _raw_findings(
    events: Iterator[tuple[int, bytes]],
    sealed: Iterator[Seal],
    where_sealed: Callable[[bytes], int | None],
) -> Iterator[tuple[str, int, int]]:
    # (kind, position, sealed position of the event found there, or 0)
    links = _Links()
    s, e = next(sealed, None), next(events, None)
    while s is not None or e is not None:
        if e is None or (s is not None and s.position < e[0]):
            assert s is not None
            yield from links.check(s)
            yield ("deleted", s.position, 0)
            s = next(sealed, None)
        elif s is None or e[0] < s.position:
            q = where_sealed(e[1])
            if q is not None:
                yield ("reordered", e[0], q)
            elif s is not None:
                yield ("inserted", e[0], 0)
            # else: past the last seal, the unsealed tail, which the caller reports
            e = next(events, None)
        else:
            if s.digest != e[1] and s.hash == link(links.previous, s.position, e[1]):
                # The event is what was sealed; the seal's digest was rewritten.
                yield ("seal", s.position, 0)
                links.previous, links.alternative = s.hash, None
            else:
                yield from links.check(s)
                if s.digest != e[1]:
                    q = where_sealed(e[1])
                    yield ("changed", e[0], 0) if q is None else ("reordered", e[0], q)
            s, e = next(sealed, None), next(events, None)


class _Links:
    """
    The chain recomputed seal by seal. A seal whose hash does not follow is one finding:
    the next seal may follow from its stored hash (its digest was rewritten) or from
    the recomputed one (its hash was rewritten); either continues the chain quietly.
    """

    def __init__(self) -> None:
        self.previous = GENESIS
        self.alternative: bytes | None = None
        self.position = 0  # the position of the last seal seen

    def check(self, seal_: Seal) -> Iterator[tuple[str, int, int]]:
        expected = link(self.previous, seal_.position, seal_.digest)
        alt = self.alternative
        self.alternative = None
        before, self.position = self.position, seal_.position
        if seal_.hash == expected:
            self.previous = expected
            return
        if alt is not None and seal_.hash == link(alt, seal_.position, seal_.digest):
            self.previous = seal_.hash
            return
        # Seals before this one missing, with their events: a gap in the sealed log.
        gap = seal_.position > before + 1
        yield ("gap", seal_.position, before) if gap else ("chain", seal_.position, 0)
        self.previous, self.alternative = seal_.hash, expected


def _explain(raw: Iterator[tuple[str, int, int]]) -> Iterator[Finding]:
    """
    Merge runs of events moved by the same offset into one finding, and tell an insertion
    that shifted the events after it (a change followed by a run moved up one position)
    from a change in place.
    """
    explainer = _Explainer()
    for kind, position, q in raw:
        yield from explainer.feed(kind, position, q)
    yield from explainer.flush_run()
    yield from explainer.flush_pending()


_PLAIN = {
    "deleted": "event deleted (sealed, now missing)",
    "inserted": "event inserted (never sealed, amid sealed events)",
    "chain": (
        "seal altered (its hash does not follow from the seals before it: this seal, or "
        "the one before it, was rewritten)"
    ),
    "seal": "seal altered (its digest was rewritten; the event is as it was sealed)",
}


class _Explainer:
    def __init__(self) -> None:
        self.run: list[int] | None = None  # [first position, last position, offset]
        self.pending: int | None = None  # the position of a change that may be an insertion

    def feed(self, kind: str, position: int, q: int) -> Iterator[Finding]:
        if kind == "reordered":
            offset = position - q
            run = self.run
            if run is not None and run[2] == offset and run[1] + 1 == position:
                run[1] = position
                return
            yield from self.flush_run()
            self.run = [position, position, offset]
            return
        yield from self.flush_run()
        yield from self.flush_pending()
        if kind == "changed":
            self.pending = position
        elif kind == "gap":
            yield Finding(
                kind,
                position,
                f"positions {q + 1}-{position - 1}: events and their seals deleted (the seal "
                f"at position {position} does not follow from the one at position {q})",
            )
        else:
            yield Finding(kind, position, f"position {position}: {_PLAIN[kind]}")

    def flush_run(self) -> Iterator[Finding]:
        if self.run is None:
            return
        first, last, offset = self.run
        self.run = None
        p = self.pending
        if p is not None and offset == 1 and first == p + 1:
            self.pending = None
            yield Finding(
                "inserted",
                p,
                f"position {p}: event inserted (never sealed); the {last - first + 1} "
                "event(s) after it were shifted by one position",
            )
            return
        yield from self.flush_pending()
        if first == last:
            text = f"position {first}: event reordered (it was sealed at position {first - offset})"
        else:
            text = (
                f"positions {first}-{last}: events reordered (sealed at positions "
                f"{first - offset}-{last - offset})"
            )
        yield Finding("reordered", first, text)

    def flush_pending(self) -> Iterator[Finding]:
        if self.pending is not None:
            p, self.pending = self.pending, None
            yield Finding("changed", p, f"position {p}: event changed after it was sealed")
