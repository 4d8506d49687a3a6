"""
The config file (CONTRACT.md "Config file"), read by cattrs into attrs classes: one test
per rule. A refused config is one ``config: ...`` line naming the key's path.
"""

from __future__ import annotations

import copy
import math
import os
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.toml_text import toml_table, toml_value
from vmsnap import config_schema as schema
from vmsnap.config import Limits, load, parse
from vmsnap.config_structure import hint, render
from vmsnap.domain.exceptions import ConfigError

FOLDER = Path("/etc/vmsnap")
KeyPath = tuple[str | int, ...]

# A config with every key there is, each of its tables once (every kind of pool and
# hypervisor). Tests spoil one key at a time.
FULL: dict[str, Any] = {
    "store": {"url": "sqlite:///v.db", "cipher": "aes", "compress": True},
    "limits": {
        "max_vm_snapshots_per_vm": 5,
        "quiesce_deadline_s": 30,
        "operation_timeout_s": 1800.5,
        "quiesce_requires_agent": False,
        "max_parallel_driver_calls": 3,
    },
    "hypervisors": [
        {
            "name": "esx1",
            "type": "simulator",
            "profile": "vmware",
            "state": "world.db",
            "faults": {"quiesce": "fail"},
            "delay_s": {"take_vm_snapshot": 0.5},
        },
        {"name": "kvm-lab", "type": "libvirt", "uri": "test:///default"},
    ],
    "pools": [
        {"id": "primary-1", "name": "Primary", "driver": "default"},
        {
            "id": "netapp-1",
            "name": "NetApp",
            "driver": "simulator",
            "state": "world.db",
            "capabilities": {"VOLUME_SNAPSHOT_QUIESCEVM": True, "STORAGE_SYSTEM_SNAPSHOT": True},
            "need_unquiesce": False,
            "faults": {"take_snapshot": "fail"},
            "delay_s": {"take_vm_snapshot": 0},
        },
        {"id": "qcow2-a", "name": "qcow2", "driver": "qcow2", "path": "pool-a"},
    ],
    "vms": [
        {
            "id": "vm-1",
            "hypervisor": "esx1",
            "power_state": "Stopped",
            "domain": "web1",
            "account": "acme",
            "hooks": {
                "pre_freeze": {
                    "run": ["/usr/local/bin/db-quiesce", "--all"],
                    "where": "guest",
                    "timeout_s": 20,
                    "idempotent": False,
                },
                "post_thaw": {
                    "run": ["/usr/local/bin/db-resume"],
                    "where": "host",
                    "timeout_s": 5.5,
                    "idempotent": True,
                },
                "on_pre_freeze_failure": "continue",
                "count_in_deadline": True,
            },
            "volumes": [
                {"id": "vol-1", "pool": "primary-1", "type": "ROOT"},
                {"id": "vol-2", "pool": "netapp-1", "type": "DATADISK"},
            ],
        },
        {"id": "vm-2", "hypervisor": "kvm-lab", "volumes": [{"id": "vol-3", "pool": "qcow2-a"}]},
    ],
    "api": {
        "keys": [
            {"user": "admin", "api_key": "AK1", "secret_env": "VMSNAP_SECRET_ADMIN"},
            {
                "user": "ops",
                "api_key": "AK2",
                "secret_file": "ops.secret",
                "account": "acme",
                "role": "user",
            },
        ],
        "max_body_bytes": 4096,
        "read_timeout_s": 2.5,
        "max_connections": 50,
        "trusted_proxies": ["10.0.0.0/8", "::1"],
    },
}

# Every table of FULL (its path) and the schema class that says which keys it takes.
TABLES: dict[KeyPath, type] = {
    (): schema.Document,
    ("store",): schema.StoreTable,
    ("limits",): schema.LimitsTable,
    ("hypervisors", 0): schema.SimulatorHypervisorTable,
    ("hypervisors", 1): schema.LibvirtHypervisorTable,
    ("pools", 0): schema.DefaultPoolTable,
    ("pools", 1): schema.SimulatorPoolTable,
    ("pools", 2): schema.Qcow2PoolTable,
    ("vms", 0): schema.VmTable,
    ("vms", 0, "volumes", 0): schema.VolumeTable,
    ("vms", 0, "hooks"): schema.HooksTable,
    ("vms", 0, "hooks", "pre_freeze"): schema.HookTable,
    ("vms", 0, "hooks", "post_thaw"): schema.HookTable,
    ("api",): schema.ApiTable,
    ("api", "keys", 0): schema.ApiKeyTable,
    ("api", "keys", 1): schema.ApiKeyTable,
}
# Mappings whose keys are names (operations, capabilities), and the names they take.
NAME_MAPS: dict[KeyPath, tuple[str, ...]] = {
    ("hypervisors", 0, "faults"): schema.HYPERVISOR_OPS,
    ("hypervisors", 0, "delay_s"): schema.HYPERVISOR_OPS,
    ("pools", 1, "faults"): schema.STORAGE_OPS,
    ("pools", 1, "delay_s"): schema.STORAGE_OPS,
    ("pools", 1, "capabilities"): ("VOLUME_SNAPSHOT_QUIESCEVM", "STORAGE_SYSTEM_SNAPSHOT"),
}
TIMEOUTS: list[KeyPath] = [
    ("limits", "quiesce_deadline_s"),
    ("limits", "operation_timeout_s"),
    ("api", "read_timeout_s"),
    ("vms", 0, "hooks", "pre_freeze", "timeout_s"),
]
DELAYS: list[KeyPath] = [
    ("hypervisors", 0, "delay_s", "take_vm_snapshot"),
    ("pools", 1, "delay_s", "delete_snapshot"),
]
COUNTS: list[KeyPath] = [
    ("limits", "max_vm_snapshots_per_vm"),
    ("limits", "max_parallel_driver_calls"),
]
BOOLEANS: list[KeyPath] = [
    ("store", "compress"),
    ("limits", "quiesce_requires_agent"),
    ("pools", 1, "need_unquiesce"),
    ("pools", 1, "capabilities", "STORAGE_SYSTEM_SNAPSHOT"),
    ("vms", 0, "hooks", "post_thaw", "idempotent"),
    ("vms", 0, "hooks", "count_in_deadline"),
]


def full() -> dict[str, Any]:
    return copy.deepcopy(FULL)


def at(doc: Any, path: KeyPath) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def with_value(path: KeyPath, value: Any) -> dict[str, Any]:
    doc = full()
    at(doc, path[:-1])[path[-1]] = value
    return doc


def without(path: KeyPath) -> dict[str, Any]:
    doc = full()
    del at(doc, path[:-1])[path[-1]]
    return doc


def renamed(path: KeyPath, new: str) -> dict[str, Any]:
    """FULL with the key at ``path`` renamed ``new`` (keeping its place and value)."""
    doc = full()
    table = at(doc, path[:-1])
    items = [(new if k == path[-1] else k, v) for k, v in table.items()]
    table.clear()
    table.update(items)
    return doc


def refused(doc: Any) -> str:
    """The message a refused config gets; it is one line starting with 'config: '."""
    with pytest.raises(ConfigError) as caught:
        parse(doc, FOLDER)
    message = str(caught.value)
    assert message.startswith("config: ") and "\n" not in message, message
    return message


# -- what is accepted, and how --------------------------------------------------------------


def test_every_key_of_the_full_config_reaches_the_config() -> None:
    config = parse(full(), FOLDER)
    assert (config.store_url, config.store_cipher, config.store_compress) == (
        "sqlite:///v.db",
        "aes",
        True,
    )
    assert config.limits == Limits(5, 30.0, 1800.5, False, 3)
    esx, kvm = config.hypervisors
    assert (esx.profile, esx.faults, esx.delay_s) == (
        "vmware",
        {"quiesce": "fail"},
        {"take_vm_snapshot": 0.5},
    )
    assert (kvm.type, kvm.profile, kvm.uri, kvm.state) == (
        "libvirt",
        "kvm",
        "test:///default",
        None,
    )
    primary, netapp, qcow2 = config.pools
    assert (primary.info.name, primary.capabilities.to_dict()) == (
        "Primary",
        {"VOLUME_SNAPSHOT_QUIESCEVM": False, "STORAGE_SYSTEM_SNAPSHOT": False},
    )
    assert (netapp.need_unquiesce, netapp.faults, netapp.delay_s) == (
        False,
        {"take_snapshot": "fail"},
        {"take_vm_snapshot": 0.0},
    )
    assert netapp.capabilities.storage_system_snapshot
    assert qcow2.capabilities.to_dict() == {
        "VOLUME_SNAPSHOT_QUIESCEVM": True,
        "STORAGE_SYSTEM_SNAPSHOT": True,
    }
    vm1 = config.vms[0]
    assert (vm1.power_state, vm1.domain) == ("Stopped", "web1")
    assert [(v.id, v.vm_id, v.pool_id, v.type) for v in vm1.volumes] == [
        ("vol-1", "vm-1", "primary-1", "ROOT"),
        ("vol-2", "vm-1", "netapp-1", "DATADISK"),
    ]
    assert [(k.user, k.secret_env, k.account_name, k.role) for k in config.api_keys] == [
        ("admin", "VMSNAP_SECRET_ADMIN", "admin", "admin"),
        ("ops", None, "acme", "user"),
    ]
    assert config.vm_accounts == {"vm-1": "acme"}
    api = config.api
    assert (api.max_body_bytes, api.read_timeout_s, api.max_connections) == (4096, 2.5, 50)
    assert [str(n) for n in api.trusted_proxies] == ["10.0.0.0/8", "::1/128"]


def test_the_defaults_are_todays() -> None:
    config = parse({}, FOLDER)
    assert config.store_url == "sqlite:///vmsnap.db"
    assert (config.store_cipher, config.store_compress) == (None, False)
    assert config.limits == Limits()
    assert attrs.asdict(config.limits) == {
        "max_vm_snapshots_per_vm": 10,
        "quiesce_deadline_s": 60.0,
        "operation_timeout_s": 3600.0,
        "quiesce_requires_agent": True,
        "max_parallel_driver_calls": 8,
    }
    assert (config.hypervisors, config.pools, config.vms, config.api_keys) == ((), (), (), ())
    assert attrs.asdict(config.api) == {
        "max_body_bytes": 1 << 20,
        "read_timeout_s": 10.0,
        "max_connections": 200,
        "trusted_proxies": (),
    }
    assert config.vm_accounts == {}
    doc = full()
    del doc["pools"][0]["name"], doc["hypervisors"][1]["uri"]
    del doc["vms"][0]["volumes"][1]["type"], doc["pools"][1]["capabilities"]
    del doc["pools"][1]["need_unquiesce"], doc["pools"][1]["faults"], doc["vms"][0]["domain"]
    config = parse(doc, FOLDER)
    assert config.pools[0].info.name == "primary-1"
    assert config.hypervisors[1].uri == "qemu:///system"
    assert config.vms[1].power_state == "Running"
    assert config.vms[0].volumes[1].type == "DATADISK"
    assert config.vms[0].domain is None
    assert config.pools[1].capabilities.to_dict() == {
        "VOLUME_SNAPSHOT_QUIESCEVM": False,
        "STORAGE_SYSTEM_SNAPSHOT": False,
    }
    assert (config.pools[1].need_unquiesce, config.pools[1].faults) == (True, {})


def test_relative_paths_resolve_against_the_config_folder_and_absolute_ones_stay() -> None:
    config = parse(full(), FOLDER)
    assert config.folder == FOLDER
    assert config.hypervisors[0].state == FOLDER / "world.db"
    assert config.pools[1].state == FOLDER / "world.db"
    assert config.pools[2].path == FOLDER / "pool-a"
    assert config.api_keys[1].secret_file == FOLDER / "ops.secret"
    absolute = parse(with_value(("pools", 2, "path"), "/srv/pool-a"), FOLDER)
    assert absolute.pools[2].path == Path("/srv/pool-a")


def test_load_reads_the_file_and_resolves_against_its_folder(tmp_path: Path) -> None:
    file = tmp_path / "vmsnap.toml"
    file.write_text(toml_table("[[pools]]", {"id": "q", "driver": "qcow2", "path": "p"}))
    config = load(file)
    assert (config.path, config.folder, config.pools[0].path) == (file, tmp_path, tmp_path / "p")


def test_a_missing_or_unreadable_file_or_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("this is [not TOML\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(tmp_path / "bad.toml")
    (tmp_path / "latin1.toml").write_bytes(b'[store]\nurl = "\xe9"\n')
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "latin1.toml")


# -- unknown keys ---------------------------------------------------------------------------


def test_the_full_config_has_every_key_of_the_schema() -> None:
    """So the properties below, drawn from FULL, cover every key there is."""
    for cl in set(TABLES.values()):
        present = {k for path, c in TABLES.items() if c is cl for k in at(FULL, path)}
        assert present == set(attrs.fields_dict(cl)), cl
    for path, names in NAME_MAPS.items():
        assert set(at(FULL, path)) <= set(names)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (
            ("limits", "quiesce_deadline"),
            "unknown key [limits] quiesce_deadline (did you mean 'quiesce_deadline_s'?)",
        ),
        (("pools", 1, "fault"), "unknown key [[pools]][1].fault (did you mean 'faults'?)"),
        (("hypervisors", 0, "tpye"), "unknown key [[hypervisors]][0].tpye (did you mean 'type'?)"),
        (("limit",), "unknown key limit (did you mean 'limits'?)"),
        (
            ("api", "keys", 0, "secretenv"),
            "unknown key [[api.keys]][0].secretenv (did you mean 'secret_env'?)",
        ),
        (
            ("vms", 0, "volumes", 1, "pol"),
            "unknown key [[vms]][0].volumes[1].pol (did you mean 'pool'?)",
        ),
    ],
)
def test_the_misspellings_of_the_issue_are_refused_with_a_suggestion(
    spoil: KeyPath, message: str
) -> None:
    right = {"quiesce_deadline": "quiesce_deadline_s", "fault": "faults", "tpye": "type"}
    right |= {"limit": "limits", "secretenv": "secret_env", "pol": "pool"}
    wrong = str(spoil[-1])
    assert refused(renamed((*spoil[:-1], right[wrong]), wrong)) == f"config: {message}"


@st.composite
def misspellings(draw: st.DrawFn, known: list[str]) -> tuple[str, str]:
    """A known key and a spelling of it one edit (delete, insert, replace, swap) away."""
    key = draw(st.sampled_from(known))
    return key, draw(st.sampled_from(sorted(one_edit_away(key))))


ANY_KEY = st.sampled_from(sorted(TABLES, key=str)).flatmap(
    lambda path: st.tuples(st.just(path), misspellings(sorted(at(FULL, path))))
)


@given(ANY_KEY)
def test_any_key_misspelt_by_one_edit_is_refused_with_its_path_and_the_right_key(
    drawn: tuple[KeyPath, tuple[str, str]],
) -> None:
    path, (key, wrong) = drawn
    family = [c for _, kinds in schema.KINDS.values() for c in kinds.values()]
    taken = set(attrs.fields_dict(TABLES[path]))
    taken |= {f for c in family if TABLES[path] in family for f in attrs.fields_dict(c)}
    assume(wrong and wrong not in taken and wrong.lower() != key.lower())
    message = refused(renamed((*path, key), wrong))
    assert message == f"config: unknown key {render((*path, wrong))} (did you mean {key!r}?)"


@given(
    st.sampled_from(sorted(NAME_MAPS, key=str)).flatmap(
        lambda path: st.tuples(st.just(path), misspellings(list(NAME_MAPS[path])))
    )
)
def test_any_operation_or_capability_misspelt_by_one_edit_is_refused_with_a_suggestion(
    drawn: tuple[KeyPath, tuple[str, str]],
) -> None:
    path, (name, wrong) = drawn
    assume(wrong not in NAME_MAPS[path])
    value = {"faults": "fail", "delay_s": 1, "capabilities": True}[str(path[-1])]
    message = refused(with_value(path, {wrong: value}))
    assert message.startswith(f"config: unknown key {render((*path, wrong))} (did you mean ")
    suggested = message.split("(did you mean ")[1][1:-3]
    # "uquiesce" is one edit from both quiesce and unquiesce; any other names its own.
    assert suggested == name or {name, suggested} == {"quiesce", "unquiesce"}


def one_edit_away(key: str) -> set[str]:
    """Every spelling one deletion, insertion, replacement or swap away from ``key``."""
    letters = string.ascii_lowercase + "_"
    cuts = [(key[:i], key[i:]) for i in range(len(key) + 1)]
    spellings = {a + b[1:] for a, b in cuts if b}
    spellings |= {a + c + b[1:] for a, b in cuts if b for c in letters}
    spellings |= {a + c + b for a, b in cuts for c in letters}
    spellings |= {a + b[1] + b[0] + b[2:] for a, b in cuts if len(b) > 1}
    return spellings


@pytest.mark.parametrize("cl", sorted(set(TABLES.values()), key=str), ids=lambda c: c.__name__)
def test_every_one_edit_misspelling_of_every_key_suggests_that_key(cl: type) -> None:
    """Exhaustive, where the property above samples: difflib at cutoff 0.5 finds them all."""
    known = tuple(attrs.fields_dict(cl))
    family = [c for _, kinds in schema.KINDS.values() for c in kinds.values()]
    taken = {f for c in (family if cl in family else [cl]) for f in attrs.fields_dict(c)}
    for key in known:
        for wrong in one_edit_away(key) - taken:
            if wrong and wrong.lower() != key.lower():
                assert hint(wrong, known) == f" (did you mean {key!r}?)", wrong


def test_a_key_like_no_known_one_lists_the_known_ones() -> None:
    assert refused(with_value(("api", "keys", 0, "zzz"), "admin")) == (
        "config: unknown key [[api.keys]][0].zzz "
        "(expected one of: user, api_key, secret_env, secret_file, account, role)"
    )


def test_an_unknown_key_is_named_before_the_required_key_it_misspells() -> None:
    assert refused(renamed(("pools", 1, "state"), "stat")) == (
        "config: unknown key [[pools]][1].stat (did you mean 'state'?)"
    )
    assert refused(renamed(("pools", 1, "driver"), "drivr")) == (
        "config: unknown key [[pools]][1].drivr (did you mean 'driver'?)"
    )


@pytest.mark.parametrize(
    ("table", "key", "value", "kinds"),
    [
        (("pools", 0), "state", "world.db", ('driver = "simulator"', 'driver = "default"')),
        (("pools", 0), "faults", {}, ('driver = "simulator"', 'driver = "default"')),
        (("pools", 0), "delay_s", {}, ('driver = "simulator"', 'driver = "default"')),
        (("pools", 0), "capabilities", {}, ('driver = "simulator"', 'driver = "default"')),
        (("pools", 0), "need_unquiesce", True, ('driver = "simulator"', 'driver = "default"')),
        (("pools", 0), "path", "p", ('driver = "qcow2"', 'driver = "default"')),
        (("pools", 2), "state", "world.db", ('driver = "simulator"', 'driver = "qcow2"')),
        (("pools", 2), "need_unquiesce", True, ('driver = "simulator"', 'driver = "qcow2"')),
        (("pools", 1), "path", "p", ('driver = "qcow2"', 'driver = "simulator"')),
        (("hypervisors", 1), "profile", "kvm", ('type = "simulator"', 'type = "libvirt"')),
        (("hypervisors", 1), "state", "w.db", ('type = "simulator"', 'type = "libvirt"')),
        (("hypervisors", 1), "faults", {}, ('type = "simulator"', 'type = "libvirt"')),
        (("hypervisors", 1), "delay_s", {}, ('type = "simulator"', 'type = "libvirt"')),
        (("hypervisors", 0), "uri", "qemu:///system", ('type = "libvirt"', 'type = "simulator"')),
    ],
)
def test_a_key_of_another_kind_of_pool_or_hypervisor_is_refused(
    table: KeyPath, key: str, value: Any, kinds: tuple[str, str]
) -> None:
    """Silently ignored before: now a simulator key on a default pool says it does nothing."""
    owner, mine = kinds
    assert refused(with_value((*table, key), value)) == (
        f"config: {render((*table, key))} applies only to {owner} (this one has {mine})"
    )


# -- types ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", BOOLEANS, ids=str)
@pytest.mark.parametrize("value", ["true", "yes", 1, 0, 1.0])
def test_a_boolean_must_be_a_toml_boolean(path: KeyPath, value: Any) -> None:
    assert refused(with_value(path, value)).startswith(
        f"config: {render(path)} must be true or false (got "
    )


@pytest.mark.parametrize("path", COUNTS, ids=str)
@pytest.mark.parametrize("value", [True, False, 2.0, "3"])
def test_a_whole_number_is_not_a_boolean_a_float_or_a_string(path: KeyPath, value: Any) -> None:
    assert refused(with_value(path, value)).startswith(
        f"config: {render(path)} must be a whole number >= 1 (got "
    )


@pytest.mark.parametrize("path", TIMEOUTS + DELAYS, ids=str)
@pytest.mark.parametrize("value", [True, "60", [60]])
def test_a_number_of_seconds_is_not_a_boolean_or_a_string(path: KeyPath, value: Any) -> None:
    assert " must be a finite number " in refused(with_value(path, value))


@pytest.mark.parametrize(
    "path",
    [
        ("store", "url"),
        ("hypervisors", 1, "uri"),
        ("pools", 0, "name"),
        ("vms", 0, "domain"),
        ("pools", 1, "state"),
        ("api", "keys", 0, "secret_env"),
    ],
    ids=str,
)
def test_a_string_must_be_a_string(path: KeyPath) -> None:
    assert f"config: {render(path)} must be a " in refused(with_value(path, 5))


@pytest.mark.parametrize(
    ("path", "value", "what"),
    [
        (("limits",), 5, "a table"),
        (("store",), "sqlite:///x.db", "a table"),
        (("pools", 1, "capabilities"), ["STORAGE_SYSTEM_SNAPSHOT"], "a table"),
        (("pools", 1, "faults"), "fail", "a table"),
        (("pools", 1), "netapp-1", "a table"),
        (("pools",), {"id": "p", "driver": "default"}, "an array"),
        (("vms", 0, "volumes"), "vol-1", "an array"),
        (("api", "keys"), {"user": "a"}, "an array"),
    ],
)
def test_tables_and_arrays_must_be_so(path: KeyPath, value: Any, what: str) -> None:
    assert refused(with_value(path, value)).startswith(f"config: {render(path)} must be {what}")


# -- numbers: finite and in range ------------------------------------------------------------

NOT_FINITE = st.sampled_from([math.inf, -math.inf, math.nan])


@given(
    st.sampled_from(TIMEOUTS),
    st.one_of(NOT_FINITE, st.floats(max_value=0), st.integers(max_value=0)),
)
def test_a_timeout_or_deadline_must_be_finite_and_above_zero(path: KeyPath, value: float) -> None:
    message = refused(with_value(path, value))
    assert message == f"config: {render(path)} must be a finite number > 0 (got {value!r})"


@given(
    st.sampled_from(DELAYS),
    st.one_of(NOT_FINITE, st.floats(max_value=-1e-300), st.integers(max_value=-1)),
)
def test_a_delay_must_be_finite_and_not_negative(path: KeyPath, value: float) -> None:
    message = refused(with_value(path, value))
    assert message == f"config: {render(path)} must be a finite number >= 0 (got {value!r})"


@given(
    st.sampled_from(TIMEOUTS + DELAYS),
    st.one_of(
        st.floats(min_value=schema.MAX_SECONDS, exclude_min=True, allow_infinity=False),
        st.integers(min_value=10**9 + 1),
    ),
)
def test_seconds_beyond_what_a_thread_can_wait_are_refused(path: KeyPath, value: float) -> None:
    assert refused(with_value(path, value)).startswith(
        f"config: {render(path)} must be at most 1000000000 seconds (got "
    )


@given(st.sampled_from(TIMEOUTS + DELAYS), st.floats(min_value=1e-9, max_value=schema.MAX_SECONDS))
def test_any_seconds_in_range_are_kept(path: KeyPath, value: float) -> None:
    config = parse(with_value(path, value), FOLDER)
    kept = {
        "quiesce_deadline_s": config.limits.quiesce_deadline_s,
        "operation_timeout_s": config.limits.operation_timeout_s,
        "read_timeout_s": config.api.read_timeout_s,
        "timeout_s": _pre_freeze(config).timeout_s,
        "take_vm_snapshot": config.hypervisors[0].delay_s.get("take_vm_snapshot"),
        "delete_snapshot": config.pools[1].delay_s.get("delete_snapshot"),
    }
    assert kept[str(path[-1])] == value


def test_a_delay_of_zero_is_accepted() -> None:
    assert parse(with_value(DELAYS[0], 0), FOLDER).hypervisors[0].delay_s["take_vm_snapshot"] == 0


@given(st.sampled_from(COUNTS), st.integers(max_value=0))
def test_a_limit_must_be_at_least_one(path: KeyPath, value: int) -> None:
    assert refused(with_value(path, value)) == (
        f"config: {render(path)} must be a whole number >= 1 (got {value})"
    )


@given(st.sampled_from(COUNTS), st.integers(1, 2**63 - 1))
def test_any_limit_of_one_or_more_is_kept(path: KeyPath, value: int) -> None:
    assert getattr(parse(with_value(path, value), FOLDER).limits, str(path[-1])) == value


def test_inf_and_nan_in_the_toml_file_are_refused(tmp_path: Path) -> None:
    for value, shown in ((math.inf, "inf"), (math.nan, "nan"), (-math.inf, "-inf")):
        file = tmp_path / "vmsnap.toml"
        file.write_text(f"[limits]\nquiesce_deadline_s = {toml_value(value)}\n")
        with pytest.raises(ConfigError) as caught:
            load(file)
        assert str(caught.value) == (
            f"config: [limits] quiesce_deadline_s must be a finite number > 0 (got {shown})"
        )


# -- choices, required keys, non-empty strings ------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "choices"),
    [
        (("hypervisors", 0, "type"), "hyperv", "simulator, libvirt"),
        (("hypervisors", 0, "profile"), "hyperv", "vmware, xenserver, kvm"),
        (("pools", 1, "driver"), "netapp9000", "default, simulator, qcow2"),
        (("vms", 0, "power_state"), "Paused", "Running, Stopped"),
        (("vms", 0, "volumes", 0, "type"), "SWAP", "ROOT, DATADISK"),
        (("store", "cipher"), "rot13", "aes"),
        (("pools", 1, "faults", "take_snapshot"), "crash", "fail"),
        (("hypervisors", 0, "faults", "quiesce"), True, "fail"),
    ],
)
def test_a_choice_must_be_one_of_its_values(path: KeyPath, value: Any, choices: str) -> None:
    assert refused(with_value(path, value)) == (
        f"config: {render(path)} must be one of {choices} (got {value!r})".replace("True", "true")
    )


def test_a_choice_near_a_value_suggests_it() -> None:
    assert refused(with_value(("hypervisors", 0, "profile"), "vmwre")) == (
        "config: [[hypervisors]][0].profile must be one of vmware, xenserver, kvm "
        "(got 'vmwre'; did you mean 'vmware'?)"
    )


@pytest.mark.parametrize(
    "path",
    [
        ("hypervisors", 0, "name"),
        ("hypervisors", 0, "profile"),
        ("hypervisors", 0, "state"),
        ("hypervisors", 1, "name"),
        ("pools", 0, "id"),
        ("pools", 1, "state"),
        ("pools", 2, "path"),
        ("vms", 0, "id"),
        ("vms", 0, "hypervisor"),
        ("vms", 0, "volumes", 0, "id"),
        ("vms", 0, "volumes", 0, "pool"),
        ("api", "keys", 0, "user"),
        ("api", "keys", 0, "api_key"),
    ],
    ids=str,
)
def test_a_required_key_must_be_there(path: KeyPath) -> None:
    assert refused(without(path)) == f"config: {render(path)} is required"


@pytest.mark.parametrize(
    ("path", "choices"),
    [
        (("pools", 1, "driver"), "default, simulator, qcow2"),
        (("hypervisors", 0, "type"), "simulator, libvirt"),
    ],
)
def test_a_pool_needs_its_driver_and_a_hypervisor_its_type(path: KeyPath, choices: str) -> None:
    assert refused(without(path)) == f"config: {render(path)} is required (one of {choices})"


@pytest.mark.parametrize(
    "path",
    [("pools", 1, "id"), ("vms", 0, "id"), ("pools", 2, "path"), ("api", "keys", 0, "secret_env")],
    ids=str,
)
@pytest.mark.parametrize("value", ["", "   "])
def test_an_id_a_path_or_a_variable_name_must_not_be_blank(path: KeyPath, value: str) -> None:
    assert refused(with_value(path, value)) == (
        f"config: {render(path)} must be a non-empty string (got {value!r})"
    )


# -- across tables --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "index", "key", "message"),
    [
        ("hypervisors", 1, "name", "duplicate hypervisor name 'esx1' at [[hypervisors]][1]"),
        ("pools", 2, "id", "duplicate pool id 'netapp-1' at [[pools]][2]"),
        ("vms", 1, "id", "duplicate vm id 'vm-1' at [[vms]][1]"),
    ],
)
def test_ids_and_names_are_unique(table: str, index: int, key: str, message: str) -> None:
    doc = full()
    doc[table][index][key] = doc[table][index - 1][key]
    if table == "pools":  # keep the VMs' volumes on pools that exist
        doc["vms"][1]["volumes"][0]["pool"] = "netapp-1"
    assert refused(doc) == f"config: {message}"


def test_a_volume_id_is_unique_across_vms_and_an_api_key_across_users() -> None:
    assert refused(with_value(("vms", 1, "volumes", 0, "id"), "vol-2")) == (
        "config: duplicate volume id 'vol-2' at [[vms]][1].volumes[0]"
    )
    assert refused(with_value(("api", "keys", 1, "api_key"), "AK1")) == (
        "config: duplicate api_key 'AK1' at [[api.keys]][1]"
    )


def test_a_vm_names_a_known_hypervisor_and_its_volumes_known_pools() -> None:
    assert refused(with_value(("vms", 1, "hypervisor"), "esx9")) == (
        "config: [[vms]][1].hypervisor names an unknown hypervisor 'esx9'"
    )
    assert refused(with_value(("vms", 0, "volumes", 1, "pool"), "nowhere-1")) == (
        "config: [[vms]][0].volumes[1].pool names an unknown pool 'nowhere-1'"
    )


# -- secrets never in the config --------------------------------------------------------------


@pytest.mark.parametrize("key", ["cipher_key", "key"])
def test_the_cipher_key_is_refused_in_the_config(key: str) -> None:
    assert refused(with_value(("store", key), "abc")) == (
        f"config: [store] {key}: the cipher key never goes in the config; set VMSNAP_CIPHER_KEY"
    )


def test_an_api_secret_is_refused_in_the_config() -> None:
    assert refused(with_value(("api", "keys", 0, "secret"), "s3cret")) == (
        "config: [[api.keys]][0].secret: secrets never go in the config; "
        "use secret_env or secret_file"
    )


@pytest.mark.parametrize("both", [True, False])
def test_an_api_key_names_exactly_one_of_secret_env_or_secret_file(both: bool) -> None:
    doc = full()
    if both:
        doc["api"]["keys"][0]["secret_file"] = "admin.secret"
    else:
        del doc["api"]["keys"][0]["secret_env"]
    assert refused(doc) == (
        "config: [[api.keys]][0] (user 'admin'): give exactly one of secret_env or secret_file"
    )


# -- the command line -------------------------------------------------------------------------


@pytest.mark.slow
def test_the_cli_refuses_a_misspelt_key_with_exit_2_one_line_and_nothing_recorded(
    tmp_path: Path,
) -> None:
    (tmp_path / "typo.toml").write_text(
        toml_table("[store]", {"url": "sqlite:///vmsnap.db"})
        + toml_table(
            "[[hypervisors]]",
            {"name": "esx1", "type": "simulator", "profile": "vmware", "state": "w.db"},
        )
        + toml_table("[[pools]]", {"id": "p", "driver": "simulator", "state": "w.db", "fault": {}}),
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMSNAP_")}
    result = subprocess.run(
        [sys.executable, "-m", "vmsnap", "--config", "typo.toml", "pools", "list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "error: config: unknown key [[pools]][0].fault (did you mean 'faults'?)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["typo.toml"]


# -- [api]: accounts, roles and bounds (#16) -----------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("api", "keys", 0, "role"), "root", "[[api.keys]][0].role must be one of"),
        (("api", "max_body_bytes"), 1023, "[api] max_body_bytes must be a whole number >= 1024"),
        (("api", "max_body_bytes"), 1 << 31, "[api] max_body_bytes must be a whole number <="),
        (("api", "max_connections"), 10**6, "[api] max_connections must be a whole number <="),
        (("api", "trusted_proxies"), ["not-an-address"], "[api] trusted_proxies[0] must be an"),
        (("api", "trusted_proxies"), "10.0.0.1", "[api] trusted_proxies must be an array"),
        (("vms", 0, "account"), " ", "[[vms]][0].account must"),
        (("api", "max_connections"), 0, "[api] max_connections must be a whole number >= 1"),
        (("api", "max_connections"), True, "[api] max_connections must be a whole number"),
    ],
)
def test_api_accounts_roles_and_bounds_are_checked(path: KeyPath, value: Any, message: str) -> None:
    assert message in refused(with_value(path, value))


def test_a_key_without_role_stays_admin_and_its_account_is_its_user() -> None:
    doc = full()
    del doc["api"]["keys"][1]["role"], doc["api"]["keys"][1]["account"]
    ops = parse(doc, FOLDER).api_keys[1]
    assert (ops.role, ops.account_name) == ("admin", "ops")


# -- hooks (issue 19) ------------------------------------------------------------------------


def _pre_freeze(config: Any) -> Any:
    hooks = config.vms[0].hooks
    assert hooks is not None and hooks.pre_freeze is not None
    return hooks.pre_freeze


def test_a_vms_hooks_reach_its_inventory_and_other_vms_have_none() -> None:
    from vmsnap.domain.values import HookSpec, VmHooks

    config = parse(full(), FOLDER)
    assert config.vms[0].hooks == VmHooks(
        HookSpec(("/usr/local/bin/db-quiesce", "--all"), "guest", 20.0, False),
        HookSpec(("/usr/local/bin/db-resume",), "host", 5.5, True),
        "continue",
        True,
    )
    assert config.vms[1].hooks is None


def test_a_hook_s_defaults() -> None:
    from vmsnap.domain.values import HookSpec, VmHooks

    doc = with_value(("vms", 0, "hooks"), {"post_thaw": {"run": ["/x"], "where": "guest"}})
    assert parse(doc, FOLDER).vms[0].hooks == VmHooks(None, HookSpec(("/x",), "guest"))


HOOK = ("vms", 0, "hooks", "pre_freeze")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("run", [], "run must not be empty (the program to run, then its arguments)"),
        ("run", ["db-quiesce"], "run[0] must be an absolute path (got 'db-quiesce')"),
        ("run", ["./db-quiesce"], "run[0] must be an absolute path (got './db-quiesce')"),
        ("run", ["/x", 1], "run[1] must be a string (got 1)"),
        ("run", "/x", "run must be an array of strings (got '/x')"),
        ("where", "vm", "where must be one of guest, host (got 'vm')"),
        ("timeout_s", 0, "timeout_s must be a finite number > 0 (got 0)"),
        ("timeout_s", -1.5, "timeout_s must be a finite number > 0 (got -1.5)"),
        ("timeout_s", math.inf, "timeout_s must be a finite number > 0 (got inf)"),
    ],
)
def test_a_bad_hook_is_refused_with_its_key_s_path(key: str, value: Any, message: str) -> None:
    for where in ("guest", "host"):  # a relative program is refused for host hooks too
        doc = with_value((*HOOK, key), value)
        if key != "where":
            at(doc, HOOK)["where"] = where
        assert refused(doc) == f"config: [[vms]][0].hooks.pre_freeze.{message}"


def test_a_hook_needs_run_and_where() -> None:
    assert refused(without((*HOOK, "run"))) == "config: [[vms]][0].hooks.pre_freeze.run is required"
    assert refused(without((*HOOK, "where"))) == (
        "config: [[vms]][0].hooks.pre_freeze.where is required"
    )


def test_an_unknown_pre_freeze_failure_policy_is_refused() -> None:
    doc = with_value(("vms", 0, "hooks", "on_pre_freeze_failure"), "ignore")
    assert refused(doc) == (
        "config: [[vms]][0].hooks.on_pre_freeze_failure must be one of fail, continue "
        "(got 'ignore')"
    )
