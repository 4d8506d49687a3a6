"""What auditors read of an event: its stable type name and its data, made JSON-safe."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from tests.strategies import make_vm_snapshot
from vmsnap.domain.values import Capabilities, QuiesceResult
from vmsnap.projections.events import event_data, event_type, json_safe


def test_json_safe_turns_every_value_an_event_may_hold_into_json() -> None:
    sid = uuid.UUID("00000000-0000-4000-8000-000000000001")
    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    value = {
        "id": sid,
        "at": when,
        "answers": {1: True, "pure-1": False},
        "volumes": ("v-1", "v-2"),
        "caps": Capabilities(volume_snapshot_quiescevm=True),
        "nested": [{"when": when}],
    }

    safe = json_safe(value)

    assert safe == {
        "id": "00000000-0000-4000-8000-000000000001",
        "at": "2024-05-06T07:08:09+00:00",
        "answers": {"1": True, "pure-1": False},
        "volumes": ["v-1", "v-2"],
        "caps": {"volume_snapshot_quiescevm": True, "storage_system_snapshot": False},
        "nested": [{"when": "2024-05-06T07:08:09+00:00"}],
    }
    assert json.loads(json.dumps(safe)) == safe


def test_json_safe_passes_plain_values_and_unknown_ones_through() -> None:
    for plain in ("x", 3, 2.5, None, True):
        assert json_safe(plain) is plain
    raw = b"\x00bytes"
    assert json_safe(raw) is raw


def test_event_data_is_the_events_own_fields_under_its_stable_type() -> None:
    snap = make_vm_snapshot(quiesce=True)
    snap.start_quiesce()
    snap.record_quiesced(QuiesceResult(True, True, "vmsnap-x-quiesce", "frozen"))
    requested, started, quiesced = snap.collect_events()

    assert [event_type(e) for e in (requested, started, quiesced)] == [
        "VmSnapshot.Requested",
        "Snapshot.QuiesceStarted",
        "Snapshot.Quiesced",
    ]
    assert event_data(started) == {}
    data = event_data(quiesced)
    assert data == {
        "result": {
            "frozen": True,
            "quiesced": True,
            "hypervisor_snapshot": "vmsnap-x-quiesce",
            "detail": "frozen",
            "filesystems_frozen": None,
            "crash_reason": None,
        }
    }
    assert not {"originator_id", "originator_version", "timestamp"} & set(event_data(requested))
