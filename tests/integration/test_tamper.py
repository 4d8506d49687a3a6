"""
The tamper suite (#15): each kind of alteration an insider can make to a store, on SQLite
and PostgreSQL, and the exact finding ``vmsnap audit verify`` must report for it. Every
audit command leaves the store as it was.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from tests.integration.tamper_fixtures import Store, pg_template, sqlite_template, store
from vmsnap.stored import EVENT_CLASSES

__all__ = ["pg_template", "sqlite_template", "store"]  # fixtures used by name below

DRIVER_TAKEN = "vmsnap.domain.vm_snapshot:VmSnapshot.DriverSnapshotTaken"


def _starting(problems: list[str], prefix: str) -> list[str]:
    return [p for p in problems if p.startswith(prefix)]


def test_an_untouched_store_verifies_with_every_event_sealed(store: Store, capsys: Any) -> None:
    code, report = store.audit(capsys, "verify")
    assert (code, report["ok"], report["problems"]) == (0, True, [])
    assert report["unsealed"] is None
    assert report["chain_head"]["position"] == store.last() == report["events"]


def test_seals_deleted_from_a_position_and_the_events_after_it_rewritten(
    store: Store, capsys: Any
) -> None:
    p = store.position_of("Snapshot.Completed")
    last = store.last()
    store.sql("DELETE FROM event_chain WHERE position>=?", (p,))
    doc = store.state(p)
    doc["consistency"] = "filesystem" if doc["consistency"] == "crash" else "crash"
    store.set_state(p, doc)
    problems = store.problems(capsys)
    assert _starting(problems, f"positions {p}-{last}: event(s) without a seal") != []
    _, report = store.audit(capsys, "verify")
    assert report["unsealed"] == {"events": last - p + 1, "first": p, "last": last}


def test_the_chain_table_dropped_is_a_finding_not_a_refusal(store: Store, capsys: Any) -> None:
    store.sql("DROP TABLE event_chain")
    assert "the log has no seals: its chain table is missing" in store.problems(capsys)


def test_one_altered_seal_is_one_finding(store: Store, capsys: Any) -> None:
    p = store.position_of("Snapshot.Quiesced")
    store.sql("UPDATE event_chain SET digest=? WHERE position=?", (b"\x01" * 32, p))
    assert store.problems(capsys) == [
        f"position {p}: seal altered (its digest was rewritten; the event is as it was sealed)"
    ]
    q = store.position_of("Snapshot.Completed")
    store.sql("UPDATE event_chain SET hash=? WHERE position=?", (b"\x02" * 32, q))
    problems = store.problems(capsys)
    assert len(problems) == 2 and problems[1].startswith(f"position {q}: seal altered")


def test_a_forged_backdated_event_appended_past_the_last_seal(store: Store, capsys: Any) -> None:
    p = store.position_of("Snapshot.Completed")
    ((oid, topic, state),) = store.sql(
        "SELECT originator_id, topic, state FROM {events} WHERE {pos}=?", (p,)
    )
    ((version,),) = store.sql(
        "SELECT MAX(originator_version) FROM {events} WHERE originator_id=?", (oid,)
    )
    store.sql(
        "INSERT INTO {events} (originator_id, originator_version, topic, state) "
        "VALUES (?, ?, ?, ?)",
        (oid, version + 1, topic, state),
    )
    last = store.last()
    problems = store.problems(capsys)
    assert _starting(problems, f"position {last}: appended after the last seal but stamped")
    _, report = store.audit(capsys, "verify")
    assert report["unsealed"] == {"events": 1, "first": last, "last": last}


def test_a_version_gap_is_found(store: Store, capsys: Any) -> None:
    p = store.position_of("Snapshot.Removed")
    ((oid, version),) = store.sql(
        "SELECT originator_id, originator_version FROM {events} WHERE {pos}=?", (p,)
    )
    store.sql("UPDATE {events} SET originator_version=? WHERE {pos}=?", (version + 1, p))
    problems = store.problems(capsys)
    key = oid.hex if hasattr(oid, "hex") and not isinstance(oid, str) else oid
    assert f"position {p}: versions {version}-{version} of {key} are missing" in problems
    assert f"position {p}: event changed after it was sealed" in problems


def test_a_topic_that_does_not_fit_its_data_is_a_finding(store: Store, capsys: Any) -> None:
    p = store.position_of("Snapshot.Removed")
    store.sql("UPDATE {events} SET topic=? WHERE {pos}=?", (DRIVER_TAKEN, p))
    problems = store.problems(capsys)
    assert _starting(problems, f"position {p}: the stored event cannot be read: its data lacks")
    assert f"position {p}: event changed after it was sealed" in problems


def test_a_stored_topic_is_never_imported(store: Store, capsys: Any) -> None:
    p = store.position_of("Snapshot.Removed")
    store.sql("UPDATE {events} SET topic=? WHERE {pos}=?", ("this:s", p))
    was_imported = "this" in sys.modules
    problems = store.problems(capsys)
    assert (
        f"position {p}: the stored event cannot be read: its type 'this:s' is not one of "
        "vmsnap's events"
    ) in problems
    assert ("this" in sys.modules) == was_imported
    assert "this:s" not in EVENT_CLASSES


def test_a_damaged_first_event_is_a_finding_with_one_json_document(
    store: Store, capsys: Any
) -> None:
    store.sql("UPDATE {events} SET state=? WHERE {pos}=1", (b"\x00garbage",))
    code, report = store.audit(capsys, "verify")
    assert code == 1 and report["ok"] is False
    assert _starting(report["problems"], "position 1: the stored event cannot be read")


def test_the_views_tracking_row_deleted_is_a_finding(store: Store, capsys: Any) -> None:
    store.sql("DELETE FROM view_tracking")
    assert _starting(store.problems(capsys), "the views' tracking position is missing")


def test_an_edited_indexed_view_column_is_found(store: Store, capsys: Any) -> None:
    sid = store.info["vmware"]
    store.sql("UPDATE view_vm_snapshots SET state='removed' WHERE key=?", (sid,))
    problems = store.problems(capsys)
    assert _starting(problems, "view vm_snapshots differs from a rebuild from the log")
    assert sid in problems[0]


def test_an_altered_aggregate_snapshot_is_found(store: Store, capsys: Any) -> None:
    rows = store.sql("SELECT originator_id, originator_version, state FROM {snapshots}")
    assert rows, "the story must give a VM record a snapshot"
    oid, version, state = rows[0]
    doc = json.loads(bytes(state))
    doc["state"]["owner"] = "mallory"
    store.sql(
        "UPDATE {snapshots} SET state=? WHERE originator_id=? AND originator_version=?",
        (json.dumps(doc).encode(), oid, version),
    )
    problems = store.problems(capsys)
    assert any(
        f"at version {version} differs from a replay of its events" in p for p in problems
    ), problems


def test_non_canonical_stored_values_are_found(store: Store, capsys: Any) -> None:
    if store.kind == "postgres":
        pytest.skip("PostgreSQL's column types (uuid, bytea) admit no other form")
    p = store.position_of("Snapshot.Removed")
    q = store.position_of("Snapshot.Completed")
    store.sql("UPDATE {events} SET originator_id=upper(originator_id) WHERE {pos}=?", (p,))
    store.sql("UPDATE {events} SET state=CAST(state AS TEXT) WHERE {pos}=?", (q,))
    problems = store.problems(capsys)
    assert _starting(problems, f"position {p}: not stored as the product stores it: originator id")
    assert (
        f"position {q}: not stored as the product stores it: data is stored as str, not bytes"
        in (problems)
    )


def test_an_exact_duplicate_is_found(store: Store, capsys: Any) -> None:
    if store.kind == "postgres":
        pytest.skip("the events table's primary key refuses a duplicate on PostgreSQL")
    store.sql("ALTER TABLE stored_events RENAME TO old_events")
    store.sql(
        "CREATE TABLE stored_events "
        "(originator_id TEXT, originator_version INTEGER, topic TEXT, state BLOB)"
    )
    store.sql(
        "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state) "
        "SELECT rowid, * FROM old_events"
    )
    store.sql("DROP TABLE old_events")
    p = store.position_of("Snapshot.Completed")
    store.sql(
        "INSERT INTO stored_events SELECT originator_id, originator_version, topic, state "
        "FROM stored_events WHERE rowid=?",
        (p,),
    )
    last = store.last()
    problems = store.problems(capsys)
    assert any(x.startswith(f"position {last}: duplicate of version") for x in problems)


def test_events_deleted_with_their_seals_leave_a_gap_that_is_found(
    store: Store, capsys: Any
) -> None:
    p = store.position_of("Snapshot.Quiesced")
    store.sql("DELETE FROM {events} WHERE {pos} IN (?, ?)", (p, p + 1))
    store.sql("DELETE FROM event_chain WHERE position IN (?, ?)", (p, p + 1))
    problems = store.problems(capsys)
    assert (
        f"positions {p}-{p + 1}: events and their seals deleted (the seal at position "
        f"{p + 2} does not follow from the one at position {p - 1})"
    ) in problems


def test_a_timeline_shows_a_damaged_event_as_unreadable_and_goes_on(
    store: Store, capsys: Any
) -> None:
    p = store.position_of("Snapshot.Completed")
    store.sql("UPDATE {events} SET state=? WHERE {pos}=?", (b"\x00garbage", p))
    code, events = store.audit(capsys, "timeline", store.info["kvm"])
    assert code == 0
    damaged = next(e for e in events if e["position"] == p)
    assert damaged["type"] == "(unreadable)"
    assert damaged["data"]["error"].startswith("the stored event cannot be read")
    assert events[-1]["type"] == "Snapshot.Removed"
    capsys.readouterr()
    from vmsnap.cli import main

    argv = ["--config", str(store.config), "--store", store.url, "audit", "timeline"]
    assert main([*argv, store.info["kvm"]]) == 0
    assert "(unreadable)" in capsys.readouterr().out
