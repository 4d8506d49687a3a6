"""
The audit's and the catch-up's fast paths (ADR 0025) give exactly what the slow paths
give: the mapper's events, json.dumps's lines, the generic digest, the same findings
for damaged rows.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import Notification
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import STORE_FILE, world_config
from tests.support import write_config
from vmsnap import Controller
from vmsnap.adapters import json_text
from vmsnap.adapters.chain import _field, digest
from vmsnap.adapters.decoding import fast_event
from vmsnap.adapters.log_reader import mapper_for
from vmsnap.stored import EVENT_CLASSES, REQUIRED, Unreadable, _mapped, decode

ROWS = "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events"


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[Any, ...]]]:
    """Every stored row of a store that saw creates, a revert and a delete."""
    folder = tmp_path_factory.mktemp("fast")
    config = write_config(folder, world_config())
    with Controller.from_config(config) as ctrl:
        kvm = ctrl.create_vm_snapshot("vm-kvm", quiesce=True)
        ctrl.revert_vm_snapshot(kvm.id)
        ctrl.delete_vm_snapshot(kvm.id)
        ctrl.create_vm_snapshot("vm-vmware", quiesce=True)
    with sqlite3.connect(folder / STORE_FILE) as conn:
        yield conn.execute(ROWS).fetchall()


def _slow(mapper: Any, row: tuple[Any, ...]) -> Any:
    n = Notification(
        id=row[0], originator_id=UUID(row[1]), originator_version=row[2], topic=row[3], state=row[4]
    )
    return mapper.to_domain_event(n)


def test_the_fast_decode_builds_the_mappers_event(rows: list[tuple[Any, ...]]) -> None:
    mapper = mapper_for({})
    assert len({r[3] for r in rows}) > 10
    for row in rows:
        fast, slow = fast_event(mapper, row), _slow(mapper, row)
        assert type(fast) is type(slow)
        assert vars(fast) == vars(slow)
        assert list(vars(fast)) == list(vars(slow))


def test_a_cipher_or_compressor_takes_the_mappers_path(rows: list[tuple[Any, ...]]) -> None:
    assert fast_event(mapper_for({"COMPRESSOR_TOPIC": "zlib"}), rows[0]) is None


def _outcome(fn: Any, mapper: Any, row: tuple[Any, ...]) -> tuple[str, Any]:
    try:
        event = fn(mapper, row)
    except Unreadable as e:
        return "unreadable", str(e)
    return type(event).__qualname__, vars(event)


def _slow_decode(mapper: Any, row: tuple[Any, ...]) -> Any:
    """stored.decode as it was before the fast path: the mapper, then the fields check."""
    topic = str(row[3])
    event = _mapped(mapper, topic, row)
    missing = REQUIRED[topic] - set(vars(event))
    if missing:
        raise Unreadable(
            f"its data lacks the fields {sorted(missing)} of its type "
            f"{EVENT_CLASSES[topic].__qualname__}"
        )
    return event


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_damaged_row_reads_as_the_mapper_reads_it(
    rows: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    mapper = mapper_for({})
    row = data.draw(st.sampled_from(rows))
    state = bytearray(row[4])
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(state)))
        state[at:at] = data.draw(st.binary(max_size=3)) + data.draw(
            st.sampled_from([b"", b" ", b"{", b"}", b'"', b",", b"[1]", b"\xff"])
        )
        cut = data.draw(st.integers(0, len(state)))
        del state[cut : cut + data.draw(st.integers(0, 2))]
    damaged = (*row[:4], bytes(state))
    assert _outcome(decode, mapper, damaged) == _outcome(_slow_decode, mapper, damaged)


def test_export_lines_are_json_dumps_of_the_export(tmp_path: Path) -> None:
    config = write_config(tmp_path, world_config())
    with Controller.from_config(config) as ctrl:
        ctrl.create_vm_snapshot("vm-kvm", quiesce=True)
        exported = list(ctrl.audit_export())
    with sqlite3.connect(tmp_path / STORE_FILE) as conn:  # an unreadable event too
        conn.execute("UPDATE stored_events SET state=? WHERE rowid=2", (b"\xff{",))
    with Controller.from_config(config) as ctrl:
        exported += list(ctrl.audit_export())
    assert any(e.type == "(unreadable)" for e in exported)
    for e in exported:
        assert e.json_line() == json.dumps(e.to_dict()) + "\n"


@given(
    oid=st.text(min_size=32, max_size=32),
    version=st.integers(min_value=-(2**70), max_value=2**70),
    topic=st.text(max_size=40),
    state=st.binary(max_size=64),
)
def test_the_digest_of_a_plain_row_frames_as_the_generic_digest(
    oid: str, version: int, topic: str, state: bytes
) -> None:
    generic = hashlib.sha256(_field(oid.lower()) + _field(version) + _field(topic) + _field(state))
    assert digest(oid, version, topic, state) == generic.digest()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(doc=_JSON)
def test_json_text_writes_what_json_dumps_writes(doc: Any) -> None:
    assert json_text.dumps(doc) == json.dumps(doc)
    assert json_text.dumps_sorted(doc) == json.dumps(doc, sort_keys=True)
