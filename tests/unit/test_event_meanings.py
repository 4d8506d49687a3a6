"""
One meaning per event (ADR 0018): every stored event class states its workflow trigger
and is handled, by its class, by every reader: the projector, verify's rules and the
timeline. No reader compares event names.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.utils import resolve_topic

from tests.unit.test_event_topics import STABLE_TOPICS
from vmsnap.domain.api_job import ApiJob
from vmsnap.domain.api_refusal import ApiRefusal
from vmsnap.domain.pool import Pool
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.vm import Vm
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.volume_snapshot import VolumeSnapshot
from vmsnap.domain.workflow import VM_SNAPSHOT_MACHINE
from vmsnap.projections.projector import project
from vmsnap.verify import rule

AGGREGATES = (Vm, Pool, SnapshotAggregate, VmSnapshot, VolumeSnapshot, ApiJob, ApiRefusal)
STORED = [resolve_topic(t) for t in STABLE_TOPICS]
ROOT = Path(__file__).resolve().parents[2]


def declared_event_classes(aggregate: type) -> list[type]:
    """The event classes an aggregate declares itself (not those it inherits)."""
    inherited = {name for base in aggregate.__mro__[1:] for name in vars(base)}
    return [
        value
        for name, value in vars(aggregate).items()
        if isinstance(value, type)
        and issubclass(value, Aggregate.Event)
        and name not in inherited
        and name != "Event"
    ]


def test_every_declared_event_class_has_a_stable_topic() -> None:
    declared = {cls for agg in AGGREGATES for cls in declared_event_classes(agg)}
    assert declared == set(STORED)


@pytest.mark.parametrize("cls", STORED, ids=lambda c: c.__qualname__)
def test_the_projector_has_a_handler_of_its_own_for_every_stored_event(cls: type) -> None:
    assert project.dispatch(cls) is not project.dispatch(object)


@pytest.mark.parametrize("cls", STORED, ids=lambda c: c.__qualname__)
def test_verify_has_a_rule_for_every_stored_event(cls: type) -> None:
    assert rule.dispatch(cls) is not rule.dispatch(object)


@pytest.mark.parametrize("cls", STORED, ids=lambda c: c.__qualname__)
def test_every_snapshot_event_names_a_trigger_of_the_machine_or_none(cls: type) -> None:
    if issubclass(cls, SnapshotAggregate.Event):
        assert cls.trigger is None or cls.trigger in VM_SNAPSHOT_MACHINE.events
        assert callable(cls.freeze_change)


def test_the_projector_refuses_an_event_class_it_does_not_know() -> None:
    class Stranger:
        pass

    with pytest.raises(TypeError, match="Stranger"):
        project(Stranger(), None, 1)  # type: ignore[arg-type]


def test_no_code_compares_event_names_as_strings() -> None:
    names = "|".join(sorted({cls.__name__ for cls in STORED}))
    kinds = "Vm|Pool|Snapshot|SnapshotAggregate|VmSnapshot|VolumeSnapshot|ApiJob|ApiRefusal"
    patterns = [
        re.compile(rf"""["']({kinds})\.({names})["']"""),  # a stable type name as a key
        re.compile(r"\)\.__(qual)?name__\s*(==|!=|\bin\b)|__(qual)?name__\.rpartition"),
        re.compile(rf"""\bname\s*(==|!=|\bin\b)\s*\(?["']({names})["']"""),
    ]
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for folder in ("domain", "projections", "adapters", "src")
        for path in (ROOT / folder).rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if any(p.search(line) for p in patterns)
    ]
    assert offenders == []
