"""Pure rules of the seed: strategy choice, grouping by driver, the unquiesce rule, validation."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from datetime import datetime

import attrs

from vmsnap.domain.exceptions import InvalidRequest
from vmsnap.domain.values import (
    APPLICATION,
    CRASH,
    FILESYSTEM,
    MAX_TEXT,
    Capabilities,
    DriverGroup,
    VolumeInfo,
)

HYPERVISOR_STRATEGY = "hypervisor"
STORAGE_STRATEGY = "storage"


@attrs.frozen
class StrategyChoice:
    """
    The strategy the factory chose for a snapshot, and why (recorded in its events).
    """

    name: str
    priority: int
    reason: str


def choose_strategy(
    volumes: Iterable[VolumeInfo], caps: Mapping[str, Capabilities]
) -> StrategyChoice:
    """
    Choose a VM snapshot strategy: the highest priority one that can handle the VM.

    The storage strategy (priority 2) handles a VM with at least one volume on a pool
    that advertises STORAGE_SYSTEM_SNAPSHOT; the hypervisor strategy (priority 1)
    handles every VM.
    """
    storage_pools = sorted({v.pool_id for v in volumes if caps[v.pool_id].storage_system_snapshot})
    if storage_pools:
        return StrategyChoice(
            STORAGE_STRATEGY,
            2,
            f"pools {', '.join(storage_pools)} advertise STORAGE_SYSTEM_SNAPSHOT",
        )
    return StrategyChoice(
        HYPERVISOR_STRATEGY, 1, "no volume is on a pool advertising STORAGE_SYSTEM_SNAPSHOT"
    )


def group_by_driver(
    volumes: Iterable[VolumeInfo], drivers: Mapping[str, str]
) -> tuple[DriverGroup, ...]:
    """
    Group a VM's volumes by the pool (and so the driver instance) that owns them.

    Every volume lands in exactly one group; groups and their volumes are sorted so the
    result does not depend on the order of the input.

    Args:
        volumes: the VM's volumes.
        drivers: pool id -> driver name.
    """
    by_pool: dict[str, list[str]] = {}
    for v in volumes:
        by_pool.setdefault(v.pool_id, []).append(v.id)
    return tuple(
        DriverGroup(pool_id, drivers[pool_id], tuple(sorted(ids)))
        for pool_id, ids in sorted(by_pool.items())
    )


def need_unquiesce(answers: Iterable[bool]) -> bool:
    """
    The seed's rule: ``needUnquiesce = true AND r1 AND r2 ...`` over the drivers' answers.
    """
    result = True
    for answer in answers:
        result = result and answer
    return result


@attrs.frozen
class UnquiesceDecision:
    """
    What to do after the drivers answered, with the inputs that decided it.

    ``need_unquiesce`` is the AND rule; ``release`` names the temporary hypervisor
    snapshot to release (only when the rule allows and no memory state lives in it);
    ``thaw`` is mandatory whenever the VM is frozen.
    """

    need_unquiesce: bool
    thaw: bool
    release: str | None
    reason: str

    @property
    def call(self) -> bool:
        return self.thaw or self.release is not None


def decide_unquiesce(
    answers: Mapping[str, bool], *, frozen: bool, temp_snapshot: str | None, memory: bool
) -> UnquiesceDecision:
    """
    Decide whether to unquiesce from the drivers' answers (pool id -> answer).
    """
    rule = need_unquiesce(answers.values())
    keepers = sorted(p for p, a in answers.items() if not a)
    release = temp_snapshot if rule and not memory else None
    if temp_snapshot is None:
        why = "no temporary hypervisor snapshot was taken"
    elif memory:
        why = "the hypervisor snapshot holds the memory state, so it is kept"
    elif rule:
        why = "every driver captured its volumes itself: the hypervisor snapshot is released"
    else:
        why = f"kept: pools {', '.join(keepers)} answered False and depend on it"
    if frozen:
        why += "; the VM is frozen, so thaw is mandatory"
    return UnquiesceDecision(rule, frozen, release, why)


def consistency(quiesced: bool, *, application: bool = False) -> str:
    """
    ``application``: the pre-freeze hook succeeded (issue 19); it makes the snapshot
    application-consistent only when the guest was then quiesced.
    """
    if not quiesced:
        return CRASH
    return APPLICATION if application else FILESYSTEM


def default_name(vm_id: str, now: datetime) -> str:
    """
    CloudStack's default VM snapshot name: ``<vm>_VS_<yyyyMMddHHmmss>``.
    """
    return f"{vm_id}_VS_{now:%Y%m%d%H%M%S}"


def check_text(field: str, value: str | None) -> None:
    """
    Refuse names and descriptions longer than 255 characters (or a blank name), and
    those holding control characters (CR, ESC, newline, ...) or bytes that were not UTF-8
    (decoded from the command line as lone surrogates).
    """
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a string, not {type(value).__name__}")
    if field == "name" and not value.strip():
        raise InvalidRequest("name must not be blank")
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")), None)
    if bad is not None and unicodedata.category(bad) == "Cs":
        raise InvalidRequest(f"{field} is not valid UTF-8")
    if bad is not None:
        raise InvalidRequest(f"{field} contains the control character U+{ord(bad):04X}")
    if len(value) > MAX_TEXT:
        raise InvalidRequest(f"{field} is {len(value)} characters long; at most {MAX_TEXT}")
