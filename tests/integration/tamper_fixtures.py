"""
A store to tamper with, on SQLite or PostgreSQL (#15): built once per backend by a real
Controller, copied for each test, altered with raw SQL as an insider would, then audited
through the command line.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.conftest import STORE_FILE, world_config
from tests.pg_fixtures import create_database, drop_database
from tests.support import write_config
from vmsnap import Controller
from vmsnap.cli import main

CYCLES = 8  # create and delete cycles on one VM: its record passes 50 versions (a snapshot)


@attrs.define
class Store:
    """One copy of the story's store, and raw SQL on it in either dialect."""

    kind: str  # sqlite | postgres
    config: Path
    url: str
    info: dict[str, Any]

    @property
    def names(self) -> dict[str, str]:
        if self.kind == "sqlite":
            return {"events": "stored_events", "pos": "rowid", "snapshots": "stored_snapshots"}
        return {
            "events": "vmsnap_events",
            "pos": "notification_id",
            "snapshots": "vmsnap_snapshots",
        }

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        statement = statement.format(**self.names)
        if self.kind == "sqlite":
            import sqlite3

            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            try:
                rows = conn.execute(statement, params).fetchall()
                conn.commit()
                return rows
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(statement.replace("?", "%s"), params)
            return list(cur.fetchall()) if cur.description else []

    def state(self, position: int) -> dict[str, Any]:
        ((state,),) = self.sql("SELECT state FROM {events} WHERE {pos}=?", (position,))
        return dict(json.loads(bytes(state)))

    def set_state(self, position: int, doc: dict[str, Any]) -> None:
        data = json.dumps(doc, separators=(",", ":")).encode()
        self.sql("UPDATE {events} SET state=? WHERE {pos}=?", (data, position))

    def last(self) -> int:
        ((last,),) = self.sql("SELECT MAX({pos}) FROM {events}")
        return int(last)

    def position_of(self, event_type: str) -> int:
        return int(next(p for p, t in self.info["positions"].items() if t == event_type))

    def audit(self, capsys: Any, *args: str) -> tuple[int, Any]:
        """Run ``vmsnap audit ARGS --json`` on this store: the exit code and the JSON."""
        capsys.readouterr()
        code = main(["--config", str(self.config), "--store", self.url, "audit", *args, "--json"])
        out = capsys.readouterr().out
        return code, json.loads(out) if out.strip() and args[0] != "export" else out

    def problems(self, capsys: Any, *args: str) -> list[str]:
        code, report = self.audit(capsys, "verify", *args)
        assert code == (0 if report["ok"] else 1)
        return list(report["problems"])


def tell_story(config: Path, url: str | None, migrate: bool = False) -> dict[str, Any]:
    with Controller.from_config(config, url, migrate=migrate) as ctrl:
        if migrate:
            ctrl.migrate()
        kvm = ctrl.create_vm_snapshot("vm-kvm", quiesce=True, actor="alice", reason="upgrade")
        ctrl.revert_vm_snapshot(kvm.id, actor="bob", reason="rollback", correlation_id="T-7")
        ctrl.delete_vm_snapshot(kvm.id)
        for _ in range(CYCLES):
            s = ctrl.create_vm_snapshot("vm-vmware")
            ctrl.delete_vm_snapshot(s.id)
        vmw = ctrl.create_vm_snapshot("vm-vmware", quiesce=True)
        report = ctrl.audit_verify()
        assert report.ok, report.problems
        positions = {e.position: e.type for e in ctrl.audit_timeline(snapshot_id=kvm.id)}
        return {"kvm": kvm.id, "vmware": vmw.id, "events": report.events, "positions": positions}


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("template")
    config = write_config(folder, world_config())
    info = tell_story(config, None)
    return folder, info


@pytest.fixture(scope="module")
def pg_template(
    postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, dict[str, Any]]]:
    pytest.importorskip("psycopg")
    folder = tmp_path_factory.mktemp("pg-template")
    config = write_config(folder, world_config())
    url = create_database(postgres_server)
    try:
        info = tell_story(config, url, migrate=True)
        yield url, config, info
    finally:
        drop_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh copy of the story's store, on each backend."""
    if request.param == "sqlite":
        folder, info = request.getfixturevalue("sqlite_template")
        copy = tmp_path / "store"
        shutil.copytree(folder, copy)
        config = copy / "vmsnap.toml"
        yield Store("sqlite", config, f"sqlite:///{copy / STORE_FILE}", info)
        return
    template, config, info = request.getfixturevalue("pg_template")
    server = request.getfixturevalue("postgres_server")
    url = create_database(server, template=template.rsplit("/", 1)[1].split("?")[0])
    try:
        yield Store("postgres", config, url, info)
    finally:
        drop_database(url)
