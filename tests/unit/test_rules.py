"""Property tests of the pure rules of the seed (domain/rules.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import (
    answers,
    drivers_by_pool,
    identifiers,
    volume_lists,
    volumes_with_caps,
)
from vmsnap.adapters.default_driver import DefaultStorageDriver
from vmsnap.domain.exceptions import InvalidRequest
from vmsnap.domain.rules import (
    HYPERVISOR_STRATEGY,
    STORAGE_STRATEGY,
    check_text,
    choose_strategy,
    consistency,
    decide_unquiesce,
    default_name,
    group_by_driver,
    need_unquiesce,
)
from vmsnap.domain.values import MAX_TEXT, Capabilities, PoolInfo, SnapshotRef, VolumeInfo

# -- the unquiesce rule -------------------------------------------------------------------


@given(st.lists(st.booleans(), max_size=12))
def test_need_unquiesce_is_the_and_of_every_driver_answer(values: list[bool]) -> None:
    assert need_unquiesce(values) is all(values)


@given(st.lists(st.booleans(), max_size=8), st.randoms())
def test_need_unquiesce_does_not_depend_on_the_order_of_the_answers(
    values: list[bool], random: Random
) -> None:
    shuffled = list(values)
    random.shuffle(shuffled)

    assert need_unquiesce(shuffled) == need_unquiesce(values)


def test_need_unquiesce_without_any_driver_answer_is_true_as_the_seed_starts_with_true() -> None:
    assert need_unquiesce([]) is True


def test_need_unquiesce_reads_answers_lazily_given_as_an_iterator() -> None:
    assert need_unquiesce(iter([True, True])) is True
    assert need_unquiesce(iter([True, False, True])) is False


@given(
    answers,
    st.booleans(),
    st.none() | st.just("vmsnap-1-quiesce"),
    st.booleans(),
)
def test_decide_unquiesce_thaws_iff_frozen_and_releases_only_when_the_rule_allows(
    given_answers: dict[str, bool], frozen: bool, temp: str | None, memory: bool
) -> None:
    decision = decide_unquiesce(given_answers, frozen=frozen, temp_snapshot=temp, memory=memory)

    assert decision.need_unquiesce is all(given_answers.values())
    assert decision.thaw is frozen
    if all(given_answers.values()) and not memory and temp is not None:
        assert decision.release == temp
    else:
        assert decision.release is None
    assert decision.call is (frozen or decision.release is not None)
    assert decision.reason


@given(answers, st.booleans(), st.booleans(), st.randoms())
def test_decide_unquiesce_does_not_depend_on_the_order_the_drivers_answered_in(
    given_answers: dict[str, bool], frozen: bool, memory: bool, random: Random
) -> None:
    items = list(given_answers.items())
    random.shuffle(items)

    one = decide_unquiesce(given_answers, frozen=frozen, temp_snapshot="t", memory=memory)
    other = decide_unquiesce(dict(items), frozen=frozen, temp_snapshot="t", memory=memory)

    assert one == other


def test_decide_unquiesce_thaws_a_frozen_vm_even_when_a_driver_needs_the_snapshot_kept() -> None:
    decision = decide_unquiesce(
        {"netapp-1": True, "primary-1": False}, frozen=True, temp_snapshot="t", memory=False
    )

    assert (decision.need_unquiesce, decision.thaw, decision.release) == (False, True, None)
    assert "primary-1" in decision.reason
    assert "thaw is mandatory" in decision.reason


def test_decide_unquiesce_keeps_a_hypervisor_snapshot_that_holds_the_memory_state() -> None:
    decision = decide_unquiesce({"netapp-1": True}, frozen=False, temp_snapshot="t", memory=True)

    assert decision.need_unquiesce is True
    assert decision.release is None
    assert decision.call is False
    assert "memory" in decision.reason


# -- the default driver -------------------------------------------------------------------


def _unused_hypervisor_for(volume: VolumeInfo) -> object:
    raise AssertionError("a VM snapshot on the default driver never calls the hypervisor")


@given(volume_lists())
def test_the_default_driver_answers_false_so_the_hypervisor_snapshot_is_kept(
    volumes: list[VolumeInfo],
) -> None:
    driver = DefaultStorageDriver(
        PoolInfo("primary-1", "Primary", "default"),
        _unused_hypervisor_for,  # type: ignore[arg-type]
    )

    answer = driver.take_vm_snapshot(volumes, SnapshotRef("s1", "vm-1", "vmsnap-s1", True))

    assert answer is False
    assert need_unquiesce([True, answer]) is False


def test_the_default_driver_advertises_no_capability() -> None:
    driver = DefaultStorageDriver(
        PoolInfo("primary-1", "Primary", "default"),
        _unused_hypervisor_for,  # type: ignore[arg-type]
    )

    assert driver.capabilities() == Capabilities(False, False)


# -- grouping by driver -------------------------------------------------------------------


@given(volume_lists(), drivers_by_pool)
def test_group_by_driver_puts_every_volume_in_exactly_one_group_of_its_own_pool(
    volumes: list[VolumeInfo], drivers: dict[str, str]
) -> None:
    groups = group_by_driver(volumes, drivers)

    grouped = [vid for g in groups for vid in g.volume_ids]
    assert sorted(grouped) == sorted(v.id for v in volumes)
    assert len(grouped) == len(set(grouped))
    pool_of = {v.id: v.pool_id for v in volumes}
    for g in groups:
        assert g.driver == drivers[g.pool_id]
        assert g.volume_ids
        assert all(pool_of[vid] == g.pool_id for vid in g.volume_ids)


@given(volume_lists(), drivers_by_pool)
def test_group_by_driver_makes_one_group_per_pool_so_each_driver_is_called_once(
    volumes: list[VolumeInfo], drivers: dict[str, str]
) -> None:
    groups = group_by_driver(volumes, drivers)

    pools = [g.pool_id for g in groups]
    assert len(pools) == len(set(pools))
    assert set(pools) == {v.pool_id for v in volumes}


@given(volume_lists(), drivers_by_pool, st.randoms())
def test_group_by_driver_does_not_depend_on_the_order_of_the_volumes(
    volumes: list[VolumeInfo], drivers: dict[str, str], random: Random
) -> None:
    shuffled = list(volumes)
    random.shuffle(shuffled)

    assert group_by_driver(shuffled, drivers) == group_by_driver(volumes, drivers)


def test_group_by_driver_of_a_vm_without_volumes_is_empty() -> None:
    assert group_by_driver([], {}) == ()


# -- strategy choice ----------------------------------------------------------------------


@given(volumes_with_caps())
def test_the_storage_strategy_is_chosen_iff_a_volume_is_on_a_storage_snapshot_pool(
    volumes_caps: tuple[list[VolumeInfo], dict[str, Capabilities]],
) -> None:
    volumes, caps = volumes_caps

    choice = choose_strategy(volumes, caps)

    storage = any(caps[v.pool_id].storage_system_snapshot for v in volumes)
    assert choice.name == (STORAGE_STRATEGY if storage else HYPERVISOR_STRATEGY)
    assert choice.priority == (2 if storage else 1)
    for pool, c in caps.items():
        assert (pool in choice.reason) is (storage and c.storage_system_snapshot)


@given(volumes_with_caps(), st.randoms())
def test_the_strategy_choice_does_not_depend_on_the_order_of_the_volumes(
    volumes_caps: tuple[list[VolumeInfo], dict[str, Capabilities]], random: Random
) -> None:
    volumes, caps = volumes_caps
    shuffled = list(volumes)
    random.shuffle(shuffled)

    assert choose_strategy(shuffled, caps) == choose_strategy(volumes, caps)


def test_quiesce_capability_alone_does_not_choose_the_storage_strategy() -> None:
    volumes = [VolumeInfo("vol-1", "vm-1", "netapp-1")]

    choice = choose_strategy(volumes, {"netapp-1": Capabilities(True, False)})

    assert choice.name == HYPERVISOR_STRATEGY


# -- names, texts and consistency ---------------------------------------------------------


@given(identifiers, st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1)))
def test_default_name_is_vm_then_VS_then_the_time_to_the_second(vm: str, when: datetime) -> None:
    name = default_name(vm, when.replace(tzinfo=UTC))

    match = re.fullmatch(r"(.+)_VS_(\d{14})", name)
    assert match is not None
    assert match.group(1) == vm
    parsed = datetime.strptime(match.group(2), "%Y%m%d%H%M%S")
    assert parsed == when.replace(microsecond=0)


def test_default_name_matches_cloudstack_for_a_known_time() -> None:
    name = default_name("vm-1", datetime(2024, 3, 7, 9, 5, 2, 999, tzinfo=UTC))

    assert name == "vm-1_VS_20240307090502"


PRINTABLE = st.characters(exclude_categories=["Cc", "Cs", "Zl", "Zp"])


@given(
    st.sampled_from(["name", "description"]),
    st.text(PRINTABLE, min_size=1, max_size=MAX_TEXT),
)
def test_texts_up_to_255_characters_are_accepted(field: str, value: str) -> None:
    if field == "name" and not value.strip():
        value = "x" + value[1:]

    check_text(field, value)


@given(st.sampled_from(["name", "description"]), st.integers(MAX_TEXT + 1, 2000))
def test_texts_longer_than_255_characters_are_refused_with_their_length(
    field: str, length: int
) -> None:
    with pytest.raises(InvalidRequest, match=f"{field} is {length} characters long"):
        check_text(field, "x" * length)


def test_exactly_255_characters_is_the_limit() -> None:
    check_text("name", "n" * 255)
    with pytest.raises(InvalidRequest):
        check_text("name", "n" * 256)


@pytest.mark.parametrize("blank", ["", " ", "\t\n"])
def test_a_blank_name_is_refused(blank: str) -> None:
    with pytest.raises(InvalidRequest, match="blank"):
        check_text("name", blank)


def test_no_name_or_description_is_accepted() -> None:
    check_text("name", None)
    check_text("description", None)


def test_a_quiesced_snapshot_is_filesystem_consistent_and_an_unquiesced_one_crash() -> None:
    assert consistency(True) == "filesystem"
    assert consistency(False) == "crash"


@pytest.mark.parametrize("bad", ["\r", "\x1b[31m", "line\nbreak", "\x00", "\u2028"])
@pytest.mark.parametrize("field", ["name", "description"])
def test_names_and_descriptions_with_control_characters_are_refused(field: str, bad: str) -> None:
    with pytest.raises(InvalidRequest, match="control character"):
        check_text(field, f"ok{bad}")


def test_a_name_that_was_not_utf_8_on_the_command_line_is_refused() -> None:
    undecodable = b"caf\xe9".decode("utf-8", "surrogateescape")  # how argv arrives

    with pytest.raises(InvalidRequest, match="not valid UTF-8"):
        check_text("name", undecodable)


def test_a_name_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="must be a string"):
        check_text("description", ["a"])  # type: ignore[arg-type]
