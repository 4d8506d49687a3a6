"""
The PostgreSQL store with real servers and Controllers in this process: each Controller
has its own connection pool, as a controller on another machine would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.strategies import stub_vm_snapshot
from tests.support import NOT_INSTALLED, write_config

pytest.importorskip("psycopg", reason=NOT_INSTALLED["psycopg"])

import psycopg

from tests.conftest import volumes_of, world_config
from vmsnap import Controller
from vmsnap.adapters.simulator import SimulatorWorld
from vmsnap.domain.exceptions import OperationInProgress, StoreError


def migrated(config: Path, url: str) -> str:
    with Controller.from_config(config, url, migrate=True) as ctrl:
        ctrl.migrate()
    return url


def test_a_controller_on_a_store_that_was_never_migrated_is_refused_and_creates_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    config = write_config(tmp_path, world_config())
    with pytest.raises(StoreError, match=r"not migrated.*vmsnap store migrate"):
        Controller.from_config(config, pg_url)
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema='public'"
        ).fetchone()
    assert tables == (0,)


def test_migrate_creates_the_schema_once_and_again_changes_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    config = write_config(tmp_path, world_config())
    migrated(config, pg_url)
    with Controller.from_config(config, pg_url) as ctrl:
        snap = ctrl.create_vm_snapshot("vm-vmware", quiesce=True)
    migrated(config, pg_url)
    with Controller.from_config(config, pg_url) as ctrl:
        assert [s.id for s in ctrl.list_vm_snapshots()] == [snap.id]
        assert ctrl.audit_verify().ok


def test_a_schema_named_in_the_url_holds_the_store(tmp_path: Path, pg_url: str) -> None:
    config = write_config(tmp_path, world_config())
    url = migrated(config, pg_url + "?schema=vmsnap_a&pool_size=1")
    with Controller.from_config(config, url) as ctrl:
        ctrl.create_vm_snapshot("vm-plain")
    with psycopg.connect(pg_url) as conn:
        schemas = conn.execute(
            "SELECT DISTINCT table_schema FROM information_schema.tables "
            "WHERE table_name IN ('vmsnap_events', 'view_vm_snapshots')"
        ).fetchall()
    assert schemas == [("vmsnap_a",)]
    with pytest.raises(StoreError, match="not migrated"):
        Controller.from_config(config, pg_url + "?schema=vmsnap_b")


def test_what_one_controller_did_is_what_another_reads_next(tmp_path: Path, pg_url: str) -> None:
    config = write_config(tmp_path, world_config())
    migrated(config, pg_url)
    with (
        Controller.from_config(config, pg_url) as a,
        Controller.from_config(config, pg_url) as b,
    ):
        assert b.list_vm_snapshots() == []
        created = a.create_vm_snapshot("vm-vmware", name="one", quiesce=True)
        assert b.get_vm_snapshot(created.id) == created
        assert b.list_vm_snapshots(vm_id="vm-vmware") == [created]
        reverted = b.revert_vm_snapshot(created.id)
        assert a.get_vm_snapshot(created.id) == reverted
        deleted = a.delete_vm_snapshot(created.id)
        assert b.list_vm_snapshots() == []
        assert b.list_vm_snapshots(include_removed=True) == [deleted]
        assert [e.position for e in a.audit_timeline(created.id)] == [
            e.position for e in b.audit_timeline(created.id)
        ]
        assert a.audit_verify().ok and b.audit_verify().ok


def test_a_claim_taken_by_another_controller_refuses_the_second_one(
    tmp_path: Path, pg_url: str
) -> None:
    config = write_config(tmp_path, world_config())
    migrated(config, pg_url)
    with (
        Controller.from_config(config, pg_url) as a,
        Controller.from_config(config, pg_url) as b,
    ):
        # b read vm-san's record before a claimed it: b's claim loses on the version check.
        record = b._runtime.vm_aggregate("vm-san")
        a.create_vm_snapshot("vm-san")
        record.start("create", "00000000-0000-4000-8000-000000000001", b.owner)
        with pytest.raises(OperationInProgress):
            b._runtime.claim(record)


def test_a_stuck_writer_makes_a_create_fail_with_a_clear_error_and_record_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    config = write_config(tmp_path, world_config())
    migrated(config, pg_url)
    url = pg_url + "?lock_timeout=1"
    with Controller.from_config(config, url) as ctrl:
        before = len(list(ctrl.audit_export()))
        with psycopg.connect(pg_url) as stuck:
            stuck.execute("LOCK TABLE vmsnap_events IN EXCLUSIVE MODE")  # and never commits
            with pytest.raises(StoreError, match="lock_timeout: another writer holds it"):
                ctrl.create_vm_snapshot("vm-xen")
            stuck.rollback()
        assert len(list(ctrl.audit_export())) == before
        # The VM was not claimed: once the writer is gone, the next create runs.
        assert ctrl.create_vm_snapshot("vm-xen").state == "ready"


def test_a_store_url_that_reaches_no_server_is_refused_with_its_password_hidden(
    tmp_path: Path, pg_url: str
) -> None:
    config = write_config(tmp_path, world_config())
    port = int(pg_url.rsplit(":", 1)[1].split("/")[0])
    url = f"postgresql://vmsnap:s3cret@127.0.0.1:{port + 1 if port < 65535 else 1}/x"
    with pytest.raises(StoreError, match="cannot reach PostgreSQL store") as raised:
        Controller.from_config(config, url)
    assert "s3cret" not in str(raised.value)


def test_recover_in_another_controller_compensates_a_create_whose_controller_died(
    tmp_path: Path, pg_url: str
) -> None:
    config = write_config(tmp_path, world_config())
    migrated(config, pg_url)
    with Controller.from_config(config, pg_url) as dead:
        # A create that claimed vm-kvm and froze it, by a controller that is gone now: its
        # owner names a process of this host that does not run.
        record = dead._runtime.vm_aggregate("vm-kvm")
        snap = stub_vm_snapshot("vm-kvm", "lost", quiesce=True)
        host = dead.owner.split(":")[0]
        record.start("create", str(snap.id), f"{host}:999999999:gone")
        dead._runtime.claim(record, snap)
    with Controller.from_config(config, pg_url) as other:
        assert [v.in_flight for v in other.list_vms() if v.id == "vm-kvm"] == [str(snap.id)]
        done = other.recover()
        assert [(s.id, s.state) for s in done] == [(str(snap.id), "failed")]
        assert other.recover() == []
        assert [v.in_flight for v in other.list_vms() if v.id == "vm-kvm"] == [None]
        assert other.create_vm_snapshot("vm-kvm", quiesce=True).state == "ready"
    with SimulatorWorld(tmp_path / "sim-state.db") as world:
        assert world.is_frozen("vm-kvm") is False
        for volume in volumes_of("vm-kvm", "netapp-1"):
            assert len(world.volume_snapshots(volume)) == 1  # the later create's only


def test_the_chain_on_postgresql_catches_a_deleted_and_a_changed_event(
    tmp_path: Path, pg_url: str
) -> None:
    config = write_config(tmp_path, world_config())
    url = migrated(config, pg_url)
    with Controller.from_config(config, url) as ctrl:
        snap = ctrl.create_vm_snapshot("vm-kvm", quiesce=True)
        ctrl.delete_vm_snapshot(snap.id)
        report = ctrl.audit_verify()
        assert report.ok, report.problems
        assert report.chain_head is not None and report.chain_head[0] == report.events
    with psycopg.connect(pg_url, autocommit=True) as conn:
        changed, deleted = 3, 5
        conn.execute(
            "UPDATE vmsnap_events SET state = state || '\\x00'::bytea WHERE notification_id = %s",
            (changed,),
        )
        conn.execute("DELETE FROM vmsnap_events WHERE notification_id = %s", (deleted,))
    with Controller.from_config(config, url) as ctrl:
        problems = ctrl.audit_verify().problems
    assert f"position {changed}: event changed after it was sealed" in problems
    assert f"position {deleted}: event deleted (sealed, now missing)" in problems
