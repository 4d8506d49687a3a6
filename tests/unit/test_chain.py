"""
The chain's comparison of stored events with their seals: each kind of tampering is
found, named and placed, and an untouched log gives nothing.
"""

from __future__ import annotations

import hashlib
import sqlite3

from hypothesis import given
from hypothesis import strategies as st

from vmsnap.adapters.chain import GENESIS, Seal, compare, digest, link, seal, seals


def log_of(n: int) -> list[tuple[int, bytes]]:
    return [(p, hashlib.sha256(str(p).encode()).digest()) for p in range(1, n + 1)]


def sealed(log: list[tuple[int, bytes]]) -> list[Seal]:
    previous, out = GENESIS, []
    for position, d in log:
        previous = link(previous, position, d)
        out.append(Seal(position, d, previous))
    return out


def findings(events: list[tuple[int, bytes]], seals_: list[Seal]) -> list[tuple[str, int]]:
    where = {s.digest: s.position for s in seals_}
    return [(f.kind, f.position) for f in compare(events, seals_, where.get)]


sizes = st.integers(min_value=3, max_value=40)


@given(sizes)
def test_an_untouched_log_and_an_unsealed_tail_give_no_findings(n: int) -> None:
    log = log_of(n + 3)
    assert findings(log, sealed(log[:n])) == []


@given(sizes, st.data())
def test_a_deleted_event_is_found_at_its_position(n: int, data: st.DataObject) -> None:
    log = log_of(n)
    p = data.draw(st.integers(1, n))
    assert findings([e for e in log if e[0] != p], sealed(log)) == [("deleted", p)]


@given(sizes, st.data())
def test_a_changed_event_is_found_at_its_position(n: int, data: st.DataObject) -> None:
    log = log_of(n)
    p = data.draw(st.integers(1, n))
    changed = [(q, b"x" * 32 if q == p else d) for q, d in log]
    assert findings(changed, sealed(log)) == [("changed", p)]


@given(sizes, st.data())
def test_two_swapped_events_are_both_found_as_reordered(n: int, data: st.DataObject) -> None:
    log = log_of(n)
    p = data.draw(st.integers(1, n - 1))
    q = data.draw(st.integers(p + 1, n))
    digests = dict(log)
    swapped = [(r, digests[q] if r == p else digests[p] if r == q else d) for r, d in log]
    assert findings(swapped, sealed(log)) == [("reordered", p), ("reordered", q)]


@given(sizes, st.data())
def test_an_event_inserted_amid_sealed_ones_is_found_at_its_position(
    n: int, data: st.DataObject
) -> None:
    log = log_of(n)
    p = data.draw(st.integers(1, n))
    shifted = [(q if q < p else q + 1, d) for q, d in log] + [(p, b"new" * 11)]
    assert findings(sorted(shifted), sealed(log)) == [("inserted", p)]


@given(sizes, st.data())
def test_a_gap_filled_with_a_new_event_is_an_insertion(n: int, data: st.DataObject) -> None:
    # Positions may have gaps (PostgreSQL sequences): an event put into one is inserted.
    log = [(2 * p, d) for p, d in log_of(n)]
    p = 2 * data.draw(st.integers(1, n - 1)) + 1
    assert findings(sorted([*log, (p, b"n" * 32)]), sealed(log)) == [("inserted", p)]


@given(sizes, st.data())
def test_a_rewritten_seal_is_found_at_its_position_only(n: int, data: st.DataObject) -> None:
    log = log_of(n)
    p = data.draw(st.integers(1, n))
    seals_ = [s if s.position != p else Seal(p, s.digest, b"\0" * 32) for s in sealed(log)]
    assert findings(log, seals_) == [("chain", p)]


def test_sealing_in_sqlite_is_incremental_and_equals_a_fresh_chain() -> None:
    conn = sqlite3.connect(":memory:")
    c = conn.cursor()
    c.execute("CREATE TABLE ev (originator_id TEXT, originator_version INT, topic TEXT, state)")
    rows = [("a" * 32, v, "t:T", f"s{v}".encode()) for v in range(1, 2501)]
    c.executemany("INSERT INTO ev VALUES (?, ?, ?, ?)", rows[:1200])
    assert seal(c, "ev") == 1200
    c.executemany("INSERT INTO ev VALUES (?, ?, ?, ?)", rows[1200:])
    assert seal(c, "ev") == 2500
    assert seal(c, "ev") == 2500
    expected = sealed([(i, digest(*row)) for i, row in enumerate(rows, start=1)])
    assert list(seals(c)) == expected
