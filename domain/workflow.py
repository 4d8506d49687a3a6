"""
The workflow machines: the single definition of states and transitions.

Each machine is built once per aggregate class with ``transitions`` (no model attached,
``auto_transitions=False``); aggregates keep ``state`` as a plain field and look moves up
in a table derived from the machine, so loading an aggregate costs nothing extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transitions import Machine

from vmsnap.domain.exceptions import IllegalTransition

ALLOCATED = "allocated"
QUIESCING = "quiescing"
SNAPSHOTTING = "snapshotting"
UNQUIESCING = "unquiescing"
READY = "ready"
REVERTING = "reverting"
EXPUNGING = "expunging"
REMOVED = "removed"
FAILED = "failed"

VM_SNAPSHOT_STATES = (
    ALLOCATED,
    QUIESCING,
    SNAPSHOTTING,
    UNQUIESCING,
    READY,
    REVERTING,
    EXPUNGING,
    REMOVED,
    FAILED,
)
IN_PROGRESS = (ALLOCATED, QUIESCING, SNAPSHOTTING, UNQUIESCING, REVERTING, EXPUNGING)
TERMINAL = (READY, REMOVED, FAILED)

# Triggers: the names of the machines' transitions (event classes name the one they stand for).
START_QUIESCE = "start_quiesce"
START_SNAPSHOTTING = "start_snapshotting"
START_UNQUIESCE = "start_unquiesce"
COMPLETE = "complete"
FAIL = "fail"
START_REVERT = "start_revert"
FINISH_REVERT = "finish_revert"
FAIL_REVERT = "fail_revert"
START_DELETE = "start_delete"
FINISH_DELETE = "finish_delete"

_CREATE: list[Any] = [
    {"trigger": START_QUIESCE, "source": ALLOCATED, "dest": QUIESCING},
    {"trigger": START_SNAPSHOTTING, "source": [ALLOCATED, QUIESCING], "dest": SNAPSHOTTING},
    {"trigger": START_UNQUIESCE, "source": SNAPSHOTTING, "dest": UNQUIESCING},
    {"trigger": COMPLETE, "source": [SNAPSHOTTING, UNQUIESCING], "dest": READY},
    {
        "trigger": FAIL,
        "source": [ALLOCATED, QUIESCING, SNAPSHOTTING, UNQUIESCING, EXPUNGING],
        "dest": FAILED,
    },
]
_REVERT: list[Any] = [
    {"trigger": START_REVERT, "source": READY, "dest": REVERTING},
    {"trigger": FINISH_REVERT, "source": REVERTING, "dest": READY},
    # CloudStack returns a VM snapshot whose revert failed to Ready; the failure is recorded.
    {"trigger": FAIL_REVERT, "source": REVERTING, "dest": READY},
]
_DELETE: list[Any] = [
    {"trigger": START_DELETE, "source": [READY, FAILED], "dest": EXPUNGING},
    {"trigger": FINISH_DELETE, "source": EXPUNGING, "dest": REMOVED},
]

VM_SNAPSHOT_MACHINE = Machine(
    model=None,
    states=list(VM_SNAPSHOT_STATES),
    transitions=_CREATE + _REVERT + _DELETE,
    initial=ALLOCATED,
    auto_transitions=False,
    name="VmSnapshot",
)

# A volume snapshot has the create and delete legs of the same workflow (no revert).
VOLUME_SNAPSHOT_MACHINE = Machine(
    model=None,
    states=[s for s in VM_SNAPSHOT_STATES if s != REVERTING],
    transitions=_CREATE + _DELETE,
    initial=ALLOCATED,
    auto_transitions=False,
    name="VolumeSnapshot",
)


def transition_table(machine: Machine) -> Mapping[tuple[str, str], str]:
    """
    Return ``{(trigger, source): dest}`` for every transition of ``machine``.
    """
    table: dict[tuple[str, str], str] = {}
    for trigger, event in machine.events.items():
        for source, transitions in event.transitions.items():
            table[(trigger, source)] = str(transitions[0].dest)
    return table


class Workflow:
    """
    A machine's transition table with the checks aggregates and audits need.
    """

    def __init__(self, machine: Machine, label: str) -> None:
        self.machine = machine
        self.label = label
        self.table = transition_table(machine)
        self.states: tuple[str, ...] = tuple(machine.states)

    def next_state(self, state: str, trigger: str) -> str:
        """
        Return the state ``trigger`` leads to from ``state``.

        Raises:
            IllegalTransition: the machine has no such transition.
        """
        try:
            return self.table[(trigger, state)]
        except KeyError:
            allowed = sorted(t for (t, s) in self.table if s == state)
            raise IllegalTransition(
                f"a {self.label} in state {state!r} does not allow {trigger}"
                + (f" (it allows: {', '.join(allowed)})" if allowed else "")
            ) from None

    def allows(self, state: str, trigger: str) -> bool:
        return (trigger, state) in self.table


VM_SNAPSHOT_WORKFLOW = Workflow(VM_SNAPSHOT_MACHINE, "VM snapshot")
VOLUME_SNAPSHOT_WORKFLOW = Workflow(VOLUME_SNAPSHOT_MACHINE, "volume snapshot")
