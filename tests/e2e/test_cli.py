"""
End-to-end tests of the ``vmsnap`` command (CONTRACT.md): real processes, real config files,
a simulated world and a store: an SQLite file in a temporary folder, and again a
PostgreSQL database (the tests that take a ``store`` or the ``story``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    ALL_CAPS,
    CALL_FIELDS,
    CAP_NAMES,
    EVENT_FIELDS,
    NO_CAPS,
    POOL_FIELDS,
    SIM_VM_FIELDS,
    SNAPSHOT_FIELDS,
    STORAGE_ONLY,
    STORE_FILE,
    TIMEOUT_S,
    UNKNOWN_ID,
    VMS,
    VOLUME_FIELDS,
    VOLUME_SNAPSHOT_FIELDS,
    Call,
    Result,
    assert_error_line,
    assert_refused,
    calls_of,
    e2e_config,
    export,
    names,
    ok_json,
    run,
    run_concurrently,
    start,
)
from tests.pg_fixtures import create_database, drop_database
from tests.support import wait_for, write_config

STORES = ["sqlite", "postgresql"]

LONGEST_NAME = "n" * 255


class Story:
    """
    One world, built once for the module: the results of the commands that built it, and
    how many events the store held after the last check.
    """

    def __init__(self, folder: Path, store: str, server: str | None = None) -> None:
        self.folder = folder
        self.store = store
        self.server = server  # PostgreSQL: where copies of the store are made
        self.databases = [store] if server else []
        self.config = write_config(folder, e2e_config(store=store))
        self.events = 0
        self.alpha: dict[str, Any] = {}
        self.longest: dict[str, Any] = {}
        self.reverted: dict[str, Any] = {}
        self.deleted: dict[str, Any] = {}
        self.volume: dict[str, Any] = {}
        self.xen: dict[str, Any] = {}
        self.kvm: dict[str, Any] = {}
        self.plain: dict[str, Any] = {}

    @property
    def args(self) -> list[str | Path]:
        return ["--config", self.config]

    def run(self, *args: str) -> Result:
        return run(*self.args, *args, cwd=self.folder)

    def ok(self, *args: str) -> Any:
        return ok_json(self.run(*args, "--json"))

    def export(self, *extra: str) -> list[dict[str, Any]]:
        return export(self.config, self.folder, *extra)

    def copy(self, folder: Path, **overrides: Any) -> Path:
        """
        A copy of the story's world and store in ``folder``; return its config, written
        with ``overrides``.
        """
        shutil.copytree(self.folder, folder)
        store = self.store
        if self.server is not None:
            database = store.rsplit("/", 1)[1]
            store = create_database(self.server, template=database)
            self.databases.append(store)
        return write_config(folder, e2e_config(store=store, **overrides))

    def assert_nothing_recorded(self) -> None:
        """``audit export`` has as many lines as at the last check."""
        now = len(self.export())
        before, self.events = self.events, now
        assert now == before, f"{now - before} event(s) were recorded"


def store_for(kind: str, request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """A new store of ``kind``, migrated: its URL, and the PostgreSQL server it is on."""
    if kind == "sqlite":
        return f"sqlite:///{STORE_FILE}", None
    server: str = request.getfixturevalue("postgres_server")
    url = create_database(server)
    migrated = run("--store", url, "store", "migrate", cwd=Path.cwd())
    assert migrated.code == 0, migrated.stderr
    return url, server


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> Iterator[str]:
    """A new store for one test: an SQLite file in its folder, or a PostgreSQL database."""
    url, server = store_for(request.param, request)
    yield url
    if server is not None:
        drop_database(url)


@pytest.fixture(scope="module", params=STORES)
def story(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Story]:
    """
    vm-1: ``alpha`` (quiesced, reverted to, current) and a 255-character one (deleted);
    a quiesced volume snapshot of vol-2; one snapshot each of vm-xen, vm-kvm (quiesced)
    and vm-plain (with memory).
    """
    s = Story(tmp_path_factory.mktemp(f"story-{request.param}"), *store_for(request.param, request))
    try:
        yield _tell(s)
    finally:
        for database in s.databases:
            drop_database(database)


def _tell(s: Story) -> Story:
    create = ("vm-snapshots", "create", "--vm")
    s.alpha = s.ok(*create, "vm-1", "--name", "alpha", "--description", "first", "--quiesce")
    s.longest = s.ok(*create, "vm-1", "--name", LONGEST_NAME)
    s.reverted = s.ok("vm-snapshots", "revert", s.alpha["id"])
    s.deleted = s.ok("vm-snapshots", "delete", s.longest["id"])
    # Operations on different VMs, by several processes sharing one store and world.
    s.volume, s.xen, s.kvm, s.plain = (
        ok_json(r)
        for r in run_concurrently(
            [
                Call([*s.args, *args, "--json"], s.folder)
                for args in (
                    ("snapshots", "create", "--volume", "vol-2", "--quiesce"),
                    (*create, "vm-xen", "--quiesce"),
                    (*create, "vm-kvm", "--quiesce"),
                    (*create, "vm-plain", "--memory"),
                )
            ]
        )
    )
    s.events = len(s.export())
    return s


@pytest.fixture(scope="module")
def world(story: Story) -> dict[str, Any]:
    """``simulator show --json`` of the story's world."""
    return story.ok("simulator", "show")  # type: ignore[no-any-return]


# Creating, reverting, deleting ------------------------------------------------------------


def test_create_returns_the_new_vm_snapshot_with_every_contract_field(story: Story) -> None:
    alpha = story.alpha
    assert set(alpha) >= SNAPSHOT_FIELDS
    assert alpha["vm_id"] == "vm-1"
    assert alpha["name"] == "alpha"
    assert alpha["description"] == "first"
    assert alpha["type"] == "Disk"
    assert alpha["state"] == "ready"
    assert alpha["quiesce_requested"] is True
    assert alpha["quiesced"] is True
    assert alpha["consistency"] == "filesystem"
    assert alpha["error"] is None
    assert alpha["parent_id"] is None
    assert alpha["current"] is True
    volumes = sorted(alpha["volumes"], key=lambda v: str(v["volume_id"]))
    assert volumes == [{"volume_id": v, "pool_id": p} for v, p, _ in VMS["vm-1"][2]]


def test_a_name_of_exactly_255_characters_is_accepted_and_the_new_snapshot_has_a_parent(
    story: Story,
) -> None:
    longest = story.longest
    assert longest["state"] == "ready"
    assert longest["name"] == LONGEST_NAME
    assert longest["description"] is None
    assert longest["quiesce_requested"] is False
    assert longest["parent_id"] == story.alpha["id"]


def test_a_memory_snapshot_of_a_running_vm_is_of_type_disk_and_memory(story: Story) -> None:
    assert story.plain["type"] == "DiskAndMemory"
    assert story.plain["state"] == "ready"


def test_revert_returns_the_snapshot_ready_and_current(story: Story) -> None:
    reverted = story.reverted
    assert set(reverted) >= SNAPSHOT_FIELDS
    assert reverted["id"] == story.alpha["id"]
    assert reverted["state"] == "ready"
    assert reverted["current"] is True
    assert reverted["error"] is None


def test_delete_returns_the_snapshot_removed(story: Story) -> None:
    deleted = story.deleted
    assert set(deleted) >= SNAPSHOT_FIELDS
    assert deleted["id"] == story.longest["id"]
    assert deleted["state"] == "removed"


def test_show_returns_the_snapshot_as_it_is_now(story: Story) -> None:
    shown = story.ok("vm-snapshots", "show", story.alpha["id"])
    assert set(shown) >= SNAPSHOT_FIELDS
    assert shown["id"] == story.alpha["id"]
    assert (shown["name"], shown["state"], shown["current"]) == ("alpha", "ready", True)


def test_list_leaves_removed_snapshots_out_unless_all_is_given(story: Story) -> None:
    everything, of_vm, removed = (
        ok_json(r)
        for r in run_concurrently(
            [
                Call([*story.args, "vm-snapshots", "list", *args, "--json"], story.folder)
                for args in ((), ("--vm", "vm-1", "--all"), ("--state", "removed", "--all"))
            ]
        )
    )
    assert all(set(s) >= SNAPSHOT_FIELDS for s in everything)
    assert sorted(s["vm_id"] for s in everything) == ["vm-1", "vm-kvm", "vm-plain", "vm-xen"]
    assert "removed" not in {s["state"] for s in everything}

    assert sorted(names(of_vm)) == sorted(["alpha", LONGEST_NAME])

    assert [s["id"] for s in removed] == [story.longest["id"]]


# Strategies and hypervisor profiles --------------------------------------------------------


def test_the_storage_strategy_is_chosen_when_a_volume_is_on_a_pool_advertising_storage_snapshots(
    story: Story,
) -> None:
    assert story.alpha["strategy"] == "storage"
    assert story.xen["strategy"] == "storage"
    assert story.plain["strategy"] == "hypervisor"


def test_xenserver_ignores_quiesce_and_the_snapshot_says_it_is_crash_consistent(
    story: Story,
) -> None:
    xen = story.xen
    assert xen["state"] == "ready"
    assert xen["quiesce_requested"] is True
    assert xen["quiesced"] is False
    assert xen["consistency"] == "crash"


def test_a_kvm_guest_frozen_for_a_snapshot_is_thawed_when_the_create_ends(
    story: Story, world: dict[str, Any]
) -> None:
    assert story.kvm["state"] == "ready"
    assert story.kvm["quiesced"] is True
    kvm = world["vms"]["vm-kvm"]
    assert kvm["frozen"] is False
    assert kvm["freeze_count"] >= 1
    assert kvm["freeze_count"] == kvm["thaw_count"]


def test_simulator_show_lists_the_world_and_every_call_in_order(world: dict[str, Any]) -> None:
    assert set(world) >= {"vms", "volumes", "calls"}
    assert set(world["vms"]) >= {"vm-1", "vm-xen", "vm-kvm", "vm-plain"}
    for vm in world["vms"].values():
        assert set(vm) >= SIM_VM_FIELDS
        assert isinstance(vm["frozen"], bool)
        assert isinstance(vm["hypervisor_snapshots"], list)
    assert all(isinstance(v["snapshots"], list) for v in world["volumes"].values())
    assert world["volumes"]["vol-2"]["snapshots"]
    assert all(set(c) >= CALL_FIELDS for c in world["calls"])
    # The first create of vm-1: quiesce through the hypervisor, then ONE take_vm_snapshot
    # per vendor pool with the volumes of vm-1 on it (the default pool makes no call).
    quiesce, *takes = calls_of(world, "vm-1")[:3]
    assert (quiesce["op"], quiesce["target"], quiesce["ok"]) == ("quiesce", "esx1", True)
    assert {(c["op"], c["target"], tuple(c["volumes"]), c["ok"], c["result"]) for c in takes} == {
        ("take_vm_snapshot", "netapp-1", ("vol-2",), True, True),
        ("take_vm_snapshot", "pure-1", ("vol-3",), True, True),
    }
    assert {c["target"] for c in world["calls"]} >= {"esx1", "xen1", "kvm1", "netapp-1"}


# Volume snapshots, pools, volumes ------------------------------------------------------------


def test_a_quiesced_volume_snapshot_on_a_pool_advertising_quiescevm_is_listed(
    story: Story,
) -> None:
    volume = story.volume
    assert set(volume) >= VOLUME_SNAPSHOT_FIELDS
    assert (volume["volume_id"], volume["pool_id"]) == ("vol-2", "netapp-1")
    assert volume["state"] == "ready"
    assert volume["quiesce_requested"] is True
    assert volume["quiesced"] is True
    assert volume["error"] is None

    listed, of_vol_3 = (
        ok_json(r)
        for r in run_concurrently(
            [
                Call([*story.args, "snapshots", "list", "--json"], story.folder),
                Call(
                    [*story.args, "snapshots", "list", "--volume", "vol-3", "--json"], story.folder
                ),
            ]
        )
    )
    assert [s["id"] for s in listed] == [volume["id"]]
    assert all(set(s) >= VOLUME_SNAPSHOT_FIELDS for s in listed)
    assert of_vol_3 == []


def test_pools_list_gives_each_pool_with_its_caps_even_with_global_options_after_the_command(
    story: Story, tmp_path: Path
) -> None:
    pools = ok_json(run("pools", "list", "--config", story.config, "--json", cwd=tmp_path))
    assert all(set(p) >= POOL_FIELDS and set(p["caps"]) >= CAP_NAMES for p in pools)
    by_id = {p["id"]: p for p in pools}
    assert set(by_id) == {"primary-1", "netapp-1", "pure-1", "plain-1"}
    assert (by_id["primary-1"]["driver"], by_id["primary-1"]["name"]) == ("default", "Primary NFS")
    assert by_id["primary-1"]["caps"] == NO_CAPS
    assert by_id["netapp-1"]["driver"] == "simulator"
    assert by_id["netapp-1"]["caps"] == ALL_CAPS
    assert by_id["pure-1"]["caps"] == STORAGE_ONLY
    assert by_id["plain-1"]["caps"] == NO_CAPS


def test_volumes_list_derives_quiescevm_and_supportsstoragesnapshot_from_the_pool(
    story: Story,
) -> None:
    volumes, of_vm = (
        ok_json(r)
        for r in run_concurrently(
            [
                Call([*story.args, "volumes", "list", "--json"], story.folder),
                Call([*story.args, "volumes", "list", "--vm", "vm-1", "--json"], story.folder),
            ]
        )
    )
    assert all(set(v) >= VOLUME_FIELDS for v in volumes)
    configured = {v: (vm, p) for vm, (_, _, vols) in VMS.items() for v, p, _ in vols}
    assert {v["id"]: (v["vm_id"], v["pool_id"]) for v in volumes} == configured
    flags = {v["id"]: (v["quiescevm"], v["supportsstoragesnapshot"]) for v in volumes}
    assert flags["vol-1"] == (False, False)
    assert flags["vol-2"] == (True, True)
    assert flags["vol-3"] == (False, True)
    assert flags["vol-p2"] == (False, False)

    assert [v["id"] for v in of_vm] == ["vol-1", "vol-2", "vol-3"]


# Audit, recovery, store ----------------------------------------------------------------------


def test_audit_timeline_of_a_snapshot_gives_its_events_in_order(story: Story) -> None:
    alpha = story.alpha["id"]
    events = story.ok("audit", "timeline", alpha)
    assert events, "the timeline is empty"
    assert all(set(e) >= EVENT_FIELDS for e in events)
    assert {e["originator_id"] for e in events} == {alpha}
    positions = [e["position"] for e in events]
    assert positions == sorted(set(positions))
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    assert all(isinstance(e["type"], str) and isinstance(e["data"], dict) for e in events)


def test_audit_timeline_of_a_vm_gives_the_events_of_every_snapshot_of_that_vm(
    story: Story,
) -> None:
    events = story.ok("audit", "timeline", "--vm", "vm-1")
    assert all(set(e) >= EVENT_FIELDS for e in events)
    ids = {e["originator_id"] for e in events}
    mine = {story.alpha["id"], story.longest["id"], story.volume["id"]}
    others = {story.xen["id"], story.kvm["id"], story.plain["id"]}
    assert ids >= mine
    assert not ids & others
    positions = [e["position"] for e in events]
    assert positions == sorted(set(positions))


def test_audit_export_prints_every_event_as_json_lines_whether_or_not_json_is_given(
    story: Story,
) -> None:
    plain, with_json = run_concurrently(
        [
            Call([*story.args, "audit", "export"], story.folder),
            Call([*story.args, "audit", "export", "--json"], story.folder),
        ]
    )
    assert plain.code == with_json.code == 0
    assert with_json.stdout == plain.stdout
    events = [json.loads(line) for line in plain.stdout.splitlines()]
    assert len(events) == story.events
    assert all(set(e) >= EVENT_FIELDS for e in events)
    positions = [e["position"] for e in events]
    assert positions == sorted(set(positions)), "export is not in log order"
    assert {story.alpha["id"], story.volume["id"]} <= {e["originator_id"] for e in events}


def test_audit_verify_replays_the_log_and_exits_0_when_all_is_well(story: Story) -> None:
    report = story.ok("audit", "verify")
    assert report["ok"] is True
    assert report["problems"] == []
    assert report["events"] == story.events


def test_recover_with_nothing_in_flight_recovers_nothing(story: Story) -> None:
    done = story.ok("recover")
    assert done in ([], {"recovered": []}, {"recovered": [], "unrecovered": []})


def test_store_migrate_on_a_store_in_use_keeps_every_event(story: Story) -> None:
    result = story.run("store", "migrate", "--json")
    assert result.code == 0, result.stderr
    json.loads(result.stdout)
    story.assert_nothing_recorded()


def test_the_vmsnap_console_script_runs_the_same_cli(story: Story) -> None:
    result = run(
        "--config",
        story.config,
        "vm-snapshots",
        "list",
        "--vm",
        "vm-1",
        "--json",
        cwd=story.folder,
        console_script=True,
    )
    assert names(ok_json(result)) == ["alpha"]


# Refusals: exit 2, nothing on stdout, one error line, nothing recorded ------------------------

REFUSALS: dict[str, Callable[[Story], list[str]]] = {
    "show-unknown-id": lambda s: ["vm-snapshots", "show", UNKNOWN_ID],
    "revert-unknown-id": lambda s: ["vm-snapshots", "revert", UNKNOWN_ID],
    "delete-unknown-id": lambda s: ["vm-snapshots", "delete", UNKNOWN_ID],
    "timeline-unknown-id": lambda s: ["audit", "timeline", UNKNOWN_ID],
    "timeline-unknown-vm": lambda s: ["audit", "timeline", "--vm", "vm-nowhere"],
    "create-unknown-vm": lambda s: ["vm-snapshots", "create", "--vm", "vm-nowhere"],
    "snapshot-unknown-volume": lambda s: ["snapshots", "create", "--volume", "vol-nowhere"],
    "name-over-255": lambda s: ["vm-snapshots", "create", "--vm", "vm-1", "--name", "n" * 256],
    "description-over-255": lambda s: [
        "vm-snapshots",
        "create",
        "--vm",
        "vm-1",
        "--description",
        "d" * 256,
    ],
    "duplicate-name": lambda s: ["vm-snapshots", "create", "--vm", "vm-1", "--name", "alpha"],
    "memory-of-stopped-vm": lambda s: ["vm-snapshots", "create", "--vm", "vm-off", "--memory"],
    "revert-removed": lambda s: ["vm-snapshots", "revert", s.longest["id"]],
    "over-the-limit": lambda s: ["vm-snapshots", "create", "--vm", "vm-1"],
    "quiesce-where-pool-cannot": lambda s: [
        "snapshots",
        "create",
        "--volume",
        "vol-3",
        "--quiesce",
    ],
}


@pytest.fixture(scope="module")
def refusals(story: Story, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """
    Each refused request, run on its own copy of the story's world (all at once), with the
    number of events in that copy's store before (the baseline) and after.
    """
    base = tmp_path_factory.mktemp("refusals")
    folders = {case: base / case for case in ["-baseline", *REFUSALS]}
    for case, folder in folders.items():
        # vm-1 has one ready snapshot: a limit of 1 refuses another.
        limit = 1 if case == "over-the-limit" else 10
        story.copy(folder, max_vm_snapshots_per_vm=limit)

    def config(case: str) -> list[str | Path]:
        return ["--config", folders[case] / story.config.name]

    first = run_concurrently(
        [Call([*config("-baseline"), "audit", "export"], folders["-baseline"])]
        + [Call([*config(c), *REFUSALS[c](story), "--json"], folders[c]) for c in REFUSALS]
    )
    after = run_concurrently([Call([*config(c), "audit", "export"], folders[c]) for c in REFUSALS])
    assert all(r.code == 0 for r in [first[0], *after]), "audit export failed"
    return {
        "events": len(first[0].stdout.splitlines()),
        **{
            case: (result, len(export.stdout.splitlines()))
            for case, result, export in zip(REFUSALS, first[1:], after, strict=True)
        },
    }


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_request_exits_2_prints_one_error_line_and_records_nothing(
    refusals: dict[str, Any], case: str
) -> None:
    result, events = refusals[case]
    assert_refused(result)
    assert events == refusals["events"], "the refused request recorded events"


def test_removed_snapshots_do_not_count_toward_the_limit(story: Story, tmp_path: Path) -> None:
    # vm-1 has one ready snapshot and one removed: with a limit of 2 one more is allowed.
    folder = tmp_path / "world"
    config = story.copy(folder, max_vm_snapshots_per_vm=2)
    result = run("--config", config, "vm-snapshots", "create", "--vm", "vm-1", "--json", cwd=folder)
    assert ok_json(result)["state"] == "ready"


# A failed operation: exit 1 -----------------------------------------------------------------


def test_an_operation_that_ran_and_failed_exits_1_and_still_prints_its_failed_view(
    tmp_path: Path, store: str
) -> None:
    config = write_config(
        tmp_path, e2e_config(store=store, netapp_faults={"take_vm_snapshot": "fail"})
    )
    code, out, err = run(
        "--config",
        config,
        "vm-snapshots",
        "create",
        "--vm",
        "vm-1",
        "--quiesce",
        "--json",
        cwd=tmp_path,
    )
    assert code == 1
    snap = json.loads(out)
    assert set(snap) >= SNAPSHOT_FIELDS
    assert snap["state"] == "failed"
    assert isinstance(snap["error"], str) and snap["error"]
    assert_error_line(err)

    world = ok_json(run("--config", config, "simulator", "show", "--json", cwd=tmp_path))
    vm = world["vms"]["vm-1"]
    assert vm["frozen"] is False
    assert vm["hypervisor_snapshots"] == [], "the failed create left a hypervisor snapshot"
    for volume in ("vol-1", "vol-2", "vol-3"):
        leftovers = world["volumes"].get(volume, {"snapshots": []})["snapshots"]
        assert leftovers == [], f"the failed create left a snapshot of {volume}"
    failed = [c for c in calls_of(world, "vm-1") if not c["ok"]]
    assert [(c["op"], c["target"]) for c in failed] == [("take_vm_snapshot", "netapp-1")]


# A conflict: exit 3 -------------------------------------------------------------------------


def test_a_second_operation_on_a_vm_with_one_in_flight_is_a_conflict(
    tmp_path: Path, store: str
) -> None:
    config = write_config(tmp_path, e2e_config(store=store, netapp_delay_s={"take_vm_snapshot": 5}))
    create = ("--config", str(config), "vm-snapshots", "create", "--vm", "vm-1")
    first = start(*create, "--quiesce", "--json", cwd=tmp_path)
    try:
        # The create quiesces vm-1, then sleeps inside netapp-1's take_vm_snapshot.
        def in_flight() -> bool:
            shown = run("--config", config, "simulator", "show", "--json", cwd=tmp_path)
            quiesced = shown.code == 0 and any(
                c["op"] == "quiesce" for c in calls_of(shown.json(), "vm-1")
            )
            return quiesced

        wait_for(in_flight, TIMEOUT_S, "the first create to reach its delayed call", process=first)
        second = run(*create, "--name", "second", "--json", cwd=tmp_path)
        out, err = first.communicate(timeout=TIMEOUT_S)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()

    assert second.code == 3, (
        f"exit {second.code} (expected 3 while the first create was in flight): {second.stderr}"
    )
    assert second.stdout == ""
    assert_error_line(second.stderr)

    assert first.returncode == 0, err
    created = json.loads(out)
    assert created["state"] == "ready"
    listed = ok_json(run(*create[:3], "list", "--vm", "vm-1", "--all", "--json", cwd=tmp_path))
    assert [s["id"] for s in listed] == [created["id"]]


# Bad config and bad store: exit 2, nothing recorded ---------------------------------------------

BAD_CONFIGS: dict[str, Callable[[str], str]] = {
    "unknown-pool": lambda t: t.replace('pool = "netapp-1"', 'pool = "nowhere-1"', 1),
    "duplicate-pool-id": lambda t: t + '\n[[pools]]\nid = "netapp-1"\ndriver = "default"\n',
    "duplicate-vm-id": lambda t: t + '\n[[vms]]\nid = "vm-1"\nhypervisor = "esx1"\n',
    "unknown-profile": lambda t: t.replace('profile = "kvm"', 'profile = "hyperv"'),
    "unknown-driver": lambda t: t.replace('driver = "simulator"', 'driver = "netapp9000"', 1),
    "unknown-hypervisor": lambda t: t.replace('hypervisor = "esx1"', 'hypervisor = "esx9"', 1),
    "store-in-a-missing-folder": lambda t: t.replace(
        'url = "sqlite:///', 'url = "sqlite:///no/such/folder/', 1
    ),
    "not-toml": lambda t: "this is [not TOML\n" + t,
}


@pytest.fixture(scope="module")
def bad_configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Result]]:
    """A create with each bad config (in its own folder), all run at once."""
    base = tmp_path_factory.mktemp("bad-configs")
    text = e2e_config().text()
    folders = {}
    for case, spoil in BAD_CONFIGS.items():
        bad = spoil(text)
        assert bad != text
        folders[case] = base / case
        write_config(folders[case], e2e_config()).write_text(bad, encoding="utf-8")
    create = ["vm-snapshots", "create", "--vm", "vm-1", "--json"]
    results = run_concurrently([Call(create, folder) for folder in folders.values()])
    return {case: (folders[case], r) for case, r in zip(folders, results, strict=True)}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_bad_config_is_refused_before_anything_is_recorded(
    bad_configs: dict[str, tuple[Path, Result]], case: str
) -> None:
    folder, result = bad_configs[case]
    assert_refused(result)
    assert not (folder / STORE_FILE).exists()


def test_a_missing_config_is_refused(tmp_path: Path) -> None:
    no_file_here, named_but_missing = run_concurrently(
        [
            Call(["vm-snapshots", "list", "--json"], tmp_path),
            Call(["--config", "missing.toml", "pools", "list", "--json"], tmp_path),
        ]
    )
    assert_refused(no_file_here)
    assert_refused(named_but_missing)
    assert list(tmp_path.iterdir()) == []


def test_a_bad_store_url_is_refused_on_the_command_line_and_in_the_config(
    tmp_path: Path,
) -> None:
    bad = write_config(tmp_path, e2e_config(store="nosuch://vmsnap"))
    good = write_config(tmp_path, e2e_config(state="good-world.db"), "good.toml")
    create = ["vm-snapshots", "create", "--vm", "vm-1", "--json"]
    in_config, on_command_line = run_concurrently(
        [
            Call(["--config", bad, *create], tmp_path),
            Call(["--config", good, "--store", "bogus:vmsnap.db", *create], tmp_path),
        ]
    )
    assert_refused(in_config)
    assert_refused(on_command_line)
    assert not (tmp_path / STORE_FILE).exists()


def test_a_store_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    config = write_config(tmp_path, e2e_config())
    garbage = b"this is not an SQLite database\n" * 200
    (tmp_path / STORE_FILE).write_bytes(garbage)
    assert_refused(
        run("--config", config, "vm-snapshots", "create", "--vm", "vm-1", "--json", cwd=tmp_path)
    )
    assert (tmp_path / STORE_FILE).read_bytes() == garbage


# Precedence of --store / $VMSNAP_STORE / [store] url, and where relative paths resolve ---------


def test_store_precedence_and_relative_paths_resolve_against_cwd_or_the_config_folder(
    tmp_path: Path,
) -> None:
    conf, work = tmp_path / "conf", tmp_path / "work"
    work.mkdir()
    config = write_config(conf, e2e_config(store="sqlite:///from-config.db"))
    cli, env = "sqlite:///from-cli.db", {"VMSNAP_STORE": "sqlite:///from-env.db"}
    create = ("--config", str(config), "vm-snapshots", "create", "--vm", "vm-plain", "--json")
    listing = ("--config", str(config), "vm-snapshots", "list", "--all", "--json")

    ok_json(run(*create, "--name", "via-cli", "--store", cli, cwd=work, env=env))
    ok_json(run(*create, "--name", "via-env", cwd=work, env=env))
    ok_json(run(*create, "--name", "via-config", cwd=work))

    assert sorted(p.name for p in work.glob("*.db")) == ["from-cli.db", "from-env.db"]
    assert sorted(p.name for p in conf.glob("from-*.db")) == ["from-config.db"]
    by_cli, by_env, by_config = run_concurrently(
        [Call([*listing, "--store", cli], work), Call(listing, work, env), Call(listing, work)]
    )
    assert names(ok_json(by_cli)) == ["via-cli"]
    assert names(ok_json(by_env)) == ["via-env"]
    assert names(ok_json(by_config)) == ["via-config"]


def test_an_absolute_sqlite_url_names_the_same_file_from_any_folder(tmp_path: Path) -> None:
    (tmp_path / "abs").mkdir()
    url = f"sqlite:///{tmp_path / 'abs' / 'store.db'}"
    assert url.startswith("sqlite:////")
    config = write_config(tmp_path / "conf", e2e_config(store=url))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    made = ok_json(
        run("--config", config, "vm-snapshots", "create", "--vm", "vm-1", "--json", cwd=elsewhere)
    )
    assert (tmp_path / "abs" / "store.db").exists()
    listed = ok_json(
        run("--store", url, "--config", config, "vm-snapshots", "list", "--json", cwd=tmp_path)
    )
    assert [s["id"] for s in listed] == [made["id"]]


def test_a_memory_store_serves_a_single_command_and_keeps_nothing(tmp_path: Path) -> None:
    config = write_config(tmp_path, e2e_config())
    made = ok_json(
        run(
            "--config",
            config,
            "--store",
            "memory://",
            "vm-snapshots",
            "create",
            "--vm",
            "vm-1",
            "--json",
            cwd=tmp_path,
        )
    )
    assert made["state"] == "ready"
    later = run(
        "--config", config, "--store", "memory://", "vm-snapshots", "list", "--json", cwd=tmp_path
    )
    assert ok_json(later) == []
    assert not (tmp_path / STORE_FILE).exists()


def test_store_migrate_creates_a_new_store(tmp_path: Path) -> None:
    config = write_config(tmp_path, e2e_config())
    result = run(
        "--config",
        config,
        "--store",
        "sqlite:///fresh.db",
        "store",
        "migrate",
        "--json",
        cwd=tmp_path,
    )
    ok_json(result)
    assert (tmp_path / "fresh.db").exists()
    assert not (tmp_path / STORE_FILE).exists()


# Precedence of --config / $VMSNAP_CONFIG / ./vmsnap.toml -------------------------------------


def test_config_precedence_is_option_then_environment_then_the_working_folder(
    tmp_path: Path,
) -> None:
    for filename, label in (
        ("vmsnap.toml", "from cwd"),
        ("env.toml", "from env"),
        ("cli.toml", "from cli"),
    ):
        stem = filename.removesuffix(".toml")
        write_config(
            tmp_path,
            e2e_config(primary_name=label, store=f"sqlite:///{stem}.db", state=f"{stem}-world.db"),
            filename,
        )
    env = {"VMSNAP_CONFIG": "env.toml"}
    pools = ["pools", "list", "--json"]
    results = run_concurrently(
        [
            Call(["--config", "cli.toml", *pools], tmp_path, env),
            Call(pools, tmp_path, env),
            Call(pools, tmp_path),
        ]
    )
    primary = [next(p["name"] for p in ok_json(r) if p["id"] == "primary-1") for r in results]
    assert primary == ["from cli", "from env", "from cwd"]


def test_python_dash_m_vmsnap_help_describes_the_commands(tmp_path: Path) -> None:
    code, out, err = run("--help", cwd=tmp_path)
    assert code == 0, err
    assert "usage" in out.lower()
    for command in ("vm-snapshots", "snapshots", "pools", "volumes", "audit", "simulator"):
        assert command in out
