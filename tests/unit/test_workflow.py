"""The workflow machines (domain/workflow.py) and how the aggregates obey them."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import (
    VM_SNAPSHOT_COMMANDS,
    VOLUME_SNAPSHOT_COMMANDS,
    make_vm_snapshot,
    make_volume_snapshot,
    states,
    triggers,
    vm_snapshot_commands,
    volume_snapshot_commands,
)
from tests.unit.test_event_meanings import STORED
from vmsnap.domain.exceptions import IllegalTransition, InvalidRequest
from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.workflow import (
    IN_PROGRESS,
    VM_SNAPSHOT_MACHINE,
    VM_SNAPSHOT_WORKFLOW,
    VOLUME_SNAPSHOT_MACHINE,
    VOLUME_SNAPSHOT_WORKFLOW,
    transition_table,
)

BRIEF_STATES = {
    "allocated",
    "quiescing",
    "snapshotting",
    "unquiescing",
    "ready",
    "reverting",
    "expunging",
    "removed",
    "failed",
}

# The transitions of BRIEF.md, written out independently of the code: (trigger, source) -> dest.
EXPECTED: dict[tuple[str, str], str] = {
    ("start_quiesce", "allocated"): "quiescing",
    ("start_snapshotting", "allocated"): "snapshotting",
    ("start_snapshotting", "quiescing"): "snapshotting",
    ("start_unquiesce", "snapshotting"): "unquiescing",
    ("complete", "snapshotting"): "ready",
    ("complete", "unquiescing"): "ready",
    ("fail", "allocated"): "failed",
    ("fail", "quiescing"): "failed",
    ("fail", "snapshotting"): "failed",
    ("fail", "unquiescing"): "failed",
    ("fail", "expunging"): "failed",
    ("start_revert", "ready"): "reverting",
    ("finish_revert", "reverting"): "ready",
    ("fail_revert", "reverting"): "ready",
    ("start_delete", "ready"): "expunging",
    ("start_delete", "failed"): "expunging",
    ("finish_delete", "expunging"): "removed",
}
EXPECTED_VOLUME = {k: v for k, v in EXPECTED.items() if "revert" not in k[0]}


# -- the machines -------------------------------------------------------------------------


def test_the_vm_snapshot_machine_has_exactly_the_states_of_the_brief() -> None:
    assert set(VM_SNAPSHOT_MACHINE.states) == BRIEF_STATES
    assert set(VM_SNAPSHOT_WORKFLOW.states) == BRIEF_STATES


def test_the_volume_snapshot_machine_has_the_states_of_the_brief_but_reverting() -> None:
    assert set(VOLUME_SNAPSHOT_MACHINE.states) == BRIEF_STATES - {"reverting"}


@pytest.mark.parametrize("machine", [VM_SNAPSHOT_MACHINE, VOLUME_SNAPSHOT_MACHINE])
def test_auto_transitions_are_off_so_no_to_state_trigger_exists(machine: Any) -> None:
    assert machine.auto_transitions is False
    assert not [t for t in machine.events if t.startswith("to_")]


@pytest.mark.parametrize("machine", [VM_SNAPSHOT_MACHINE, VOLUME_SNAPSHOT_MACHINE])
def test_the_machines_start_in_allocated(machine: Any) -> None:
    assert machine.initial == "allocated"


def test_the_vm_snapshot_transitions_are_those_of_the_brief() -> None:
    assert dict(transition_table(VM_SNAPSHOT_MACHINE)) == EXPECTED
    assert dict(VM_SNAPSHOT_WORKFLOW.table) == EXPECTED


def test_the_volume_snapshot_transitions_are_the_create_and_delete_legs() -> None:
    assert dict(VOLUME_SNAPSHOT_WORKFLOW.table) == EXPECTED_VOLUME


@pytest.mark.parametrize(
    "state", ["allocated", "quiescing", "snapshotting", "unquiescing", "expunging"]
)
def test_every_in_progress_state_has_an_edge_to_failed(state: str) -> None:
    assert VM_SNAPSHOT_WORKFLOW.next_state(state, "fail") == "failed"
    assert VOLUME_SNAPSHOT_WORKFLOW.next_state(state, "fail") == "failed"


def test_a_failed_revert_returns_the_snapshot_to_ready_not_to_failed() -> None:
    assert VM_SNAPSHOT_WORKFLOW.next_state("reverting", "fail_revert") == "ready"
    assert not VM_SNAPSHOT_WORKFLOW.allows("reverting", "fail")


def test_every_in_progress_state_has_a_way_out() -> None:
    for state in IN_PROGRESS:
        assert any(s == state for (_, s) in VM_SNAPSHOT_WORKFLOW.table), state


def test_removed_is_final() -> None:
    assert not [t for (t, s) in VM_SNAPSHOT_WORKFLOW.table if s == "removed"]


def test_every_state_is_reachable_from_allocated() -> None:
    reached, frontier = {"allocated"}, ["allocated"]
    while frontier:
        state = frontier.pop()
        for (_, source), dest in VM_SNAPSHOT_WORKFLOW.table.items():
            if source == state and dest not in reached:
                reached.add(dest)
                frontier.append(dest)
    assert reached == BRIEF_STATES


@given(states, triggers)
def test_next_state_allows_a_move_iff_the_brief_has_it(state: str, trigger: str) -> None:
    if (trigger, state) in EXPECTED:
        assert VM_SNAPSHOT_WORKFLOW.next_state(state, trigger) == EXPECTED[(trigger, state)]
        assert VM_SNAPSHOT_WORKFLOW.allows(state, trigger)
    else:
        assert not VM_SNAPSHOT_WORKFLOW.allows(state, trigger)
        with pytest.raises(IllegalTransition, match=state):
            VM_SNAPSHOT_WORKFLOW.next_state(state, trigger)


@given(states, triggers)
def test_the_volume_workflow_allows_a_move_iff_its_table_has_it(state: str, trigger: str) -> None:
    if (trigger, state) in EXPECTED_VOLUME:
        assert (
            VOLUME_SNAPSHOT_WORKFLOW.next_state(state, trigger) == EXPECTED_VOLUME[(trigger, state)]
        )
    else:
        with pytest.raises(IllegalTransition):
            VOLUME_SNAPSHOT_WORKFLOW.next_state(state, trigger)


def test_an_illegal_transition_is_a_refusal_that_names_what_is_allowed() -> None:
    with pytest.raises(InvalidRequest) as info:
        VM_SNAPSHOT_WORKFLOW.next_state("ready", "start_quiesce")

    assert isinstance(info.value, IllegalTransition)
    assert "start_delete" in str(info.value)
    assert "start_revert" in str(info.value)


def test_every_event_trigger_is_a_trigger_of_the_machine() -> None:
    snapshot_events = [c for c in STORED if issubclass(c, SnapshotAggregate.Event)]
    triggers = {cls.trigger for cls in snapshot_events} - {None}
    assert triggers == set(VM_SNAPSHOT_MACHINE.events)


# -- aggregates obey the machine ------------------------------------------------------------


def _ready_vm_snapshot() -> VmSnapshot:
    snap = make_vm_snapshot()
    snap.start_snapshotting()
    snap.complete(quiesced=True, consistency="filesystem")
    snap.collect_events()
    return snap


def test_a_ready_vm_snapshot_refuses_start_quiesce_without_emitting_an_event() -> None:
    snap = _ready_vm_snapshot()
    version = snap.version

    with pytest.raises(IllegalTransition):
        snap.start_quiesce()

    assert snap.collect_events() == []
    assert snap.state == "ready"
    assert snap.version == version


@pytest.mark.parametrize(
    "command", ["start_quiesce", "complete", "fail", "finish_revert", "finish_delete"]
)
def test_a_ready_vm_snapshot_refuses_every_illegal_command_without_an_event(
    command: str,
) -> None:
    snap = _ready_vm_snapshot()

    with pytest.raises(IllegalTransition):
        VM_SNAPSHOT_COMMANDS[command][1](snap)

    assert snap.collect_events() == []
    assert snap.state == "ready"


def test_a_removed_vm_snapshot_cannot_be_deleted_again() -> None:
    snap = _ready_vm_snapshot()
    snap.start_delete()
    snap.finish_delete()
    snap.collect_events()

    with pytest.raises(IllegalTransition, match="removed"):
        snap.start_delete()

    assert snap.collect_events() == []


def _run_commands(
    snap: SnapshotAggregate, commands: list[str], table: dict[str, Any], expected: dict[Any, str]
) -> None:
    snap.collect_events()
    for command in commands:
        trigger, send = table[command]
        before = snap.state
        if (trigger, before) in expected:
            send(snap)
            events = snap.collect_events()
            assert len(events) == 1
            assert type(events[0]).trigger == trigger
            assert snap.state == expected[(trigger, before)]
        else:
            with pytest.raises(IllegalTransition):
                send(snap)
            assert snap.collect_events() == []
            assert snap.state == before


@given(vm_snapshot_commands)
def test_a_vm_snapshot_moves_as_the_machine_says_and_refuses_the_rest_silently(
    commands: list[str],
) -> None:
    _run_commands(make_vm_snapshot(), commands, VM_SNAPSHOT_COMMANDS, EXPECTED)


@given(volume_snapshot_commands, st.booleans())
def test_a_volume_snapshot_moves_as_its_machine_says_and_refuses_the_rest_silently(
    commands: list[str], quiesce: bool
) -> None:
    _run_commands(
        make_volume_snapshot(quiesce), commands, VOLUME_SNAPSHOT_COMMANDS, EXPECTED_VOLUME
    )


@given(vm_snapshot_commands)
def test_replaying_a_vm_snapshot_s_events_gives_the_same_aggregate(commands: list[str]) -> None:
    snap = make_vm_snapshot()
    events = snap.collect_events()
    for command in commands:
        with contextlib.suppress(IllegalTransition):
            VM_SNAPSHOT_COMMANDS[command][1](snap)
        events += snap.collect_events()

    replayed = None
    for e in events:
        replayed = e.mutate(replayed)

    assert replayed is not None
    assert replayed.to_state() == snap.to_state()
