"""The audit reads only vmsnap's own events, in the exact form vmsnap stores them (#15)."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from vmsnap.adapters.log_reader import mapper_for, open_reader
from vmsnap.adapters.store import StoreUrl
from vmsnap.domain.exceptions import StoreError
from vmsnap.stored import Unreadable, decode, noncanonical

OID = uuid.uuid4()
TOPIC = "vmsnap.domain.snapshot_base:SnapshotAggregate.Removed"


@pytest.mark.parametrize(
    ("row", "dialect", "why"),
    [
        ((1, OID.hex.upper(), 1, TOPIC, b"{}"), "sqlite", "originator id"),
        ((1, OID.hex, "1", TOPIC, b"{}"), "sqlite", "version '1' is stored as str"),
        ((1, OID.hex, 1, b"t", b"{}"), "sqlite", "topic is stored as bytes"),
        ((1, OID.hex, 1, TOPIC, "{}"), "sqlite", "data is stored as str"),
        ((1, str(OID), 1, TOPIC, b"{}"), "postgres", "is not a UUID"),
    ],
)
def test_a_row_not_in_the_form_vmsnap_stores_is_named(row: tuple, dialect: str, why: str) -> None:
    assert why in (noncanonical(row, dialect) or "")


def test_a_canonical_row_is_accepted() -> None:
    assert noncanonical((1, OID.hex, 1, TOPIC, b"{}"), "sqlite") is None
    assert noncanonical((1, OID, 1, TOPIC, b"{}"), "postgres") is None


def test_only_vmsnaps_event_types_are_decoded() -> None:
    mapper = mapper_for({})
    with pytest.raises(Unreadable, match="not one of vmsnap's events"):
        decode(mapper, (1, OID.hex, 1, "os:system", b"{}"))
    with pytest.raises(Unreadable, match="cannot be decoded"):
        decode(mapper, (1, OID.hex, 1, TOPIC, b"\x00"))
    with pytest.raises(Unreadable, match="lacks the fields"):
        decode(mapper, (1, OID.hex, 1, TOPIC, b"{}"))


def test_a_store_to_audit_must_exist_and_be_a_vmsnap_store(tmp_path: Path) -> None:
    for url in ("memory://", "sqlite:///missing.db"):
        with pytest.raises(StoreError):
            open_reader(StoreUrl.parse(url, tmp_path), {})
    (tmp_path / "junk.db").write_bytes(b"not a database at all, not even close" * 100)
    with pytest.raises(StoreError, match="not a vmsnap store"):
        open_reader(StoreUrl.parse("sqlite:///junk.db", tmp_path), {})
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(StoreError, match="holds no event log"):
        open_reader(StoreUrl.parse("sqlite:///other.db", tmp_path), {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.db", "other.db"]


def test_the_audit_decodes_exactly_the_stored_event_types() -> None:
    from tests.unit.test_event_topics import STABLE_TOPICS
    from vmsnap.stored import EVENT_CLASSES

    assert set(EVENT_CLASSES) == set(STABLE_TOPICS)
