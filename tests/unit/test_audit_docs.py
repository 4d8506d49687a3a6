"""docs/audit.md explains every event type the log can hold, under its stable name."""

from pathlib import Path

import pytest
from eventsourcing.utils import resolve_topic

from tests.unit.test_event_topics import STABLE_TOPICS
from vmsnap.projections.events import event_type

DOC = (Path(__file__).parents[2] / "docs" / "audit.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("topic", STABLE_TOPICS)
def test_every_event_type_is_explained_in_the_auditors_guide(topic: str) -> None:
    cls = resolve_topic(topic)
    name = event_type(cls.__new__(cls))
    assert f"| `{name}` |" in DOC, f"docs/audit.md does not explain {name}"
