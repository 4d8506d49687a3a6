"""The CLI's quick read of current views answers exactly what the Controller answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import STORE_FILE
from vmsnap import Controller
from vmsnap.adapters.view_reader import current_vm_snapshots, sqlite_path
from vmsnap.domain.vm import Vm


@pytest.fixture
def store(controller: Controller, tmp_path: Path) -> Path:
    kept = controller.create_vm_snapshot("vm-vmware", name="kept", quiesce=True)
    gone = controller.create_vm_snapshot("vm-vmware", name="gone")
    controller.create_vm_snapshot("vm-xen", name="other")
    controller.delete_vm_snapshot(gone.id)
    assert kept.state == "ready"
    return tmp_path / STORE_FILE


@pytest.mark.parametrize(
    ("vm_id", "state", "include_removed"),
    [(None, None, False), (None, None, True), ("vm-vmware", None, False), (None, "removed", False)],
)
def test_the_quick_read_gives_the_controllers_rows_in_the_same_order(
    controller: Controller,
    store: Path,
    vm_id: str | None,
    state: str | None,
    include_removed: bool,
) -> None:
    where = {k: v for k, v in (("vm_id", vm_id), ("state", state)) if v is not None}
    exclude = None if include_removed or state == "removed" else "removed"
    quick = current_vm_snapshots(store, where, exclude)
    expected = controller.list_vm_snapshots(vm_id, state, include_removed=include_removed)
    assert quick == [s.to_dict() for s in expected]
    assert quick


def test_the_quick_read_declines_when_the_log_is_ahead_of_the_views(
    controller: Controller, store: Path
) -> None:
    controller.event_log.save(Vm("vm-not-yet-projected"))  # recorded, not caught up
    assert current_vm_snapshots(store, {}, None) is None
    assert len(controller.list_vm_snapshots(include_removed=True)) == 3  # caught up
    assert current_vm_snapshots(store, {}, None) is not None


def test_the_quick_read_declines_a_missing_file_without_creating_it(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.db"
    assert current_vm_snapshots(missing, {}, None) is None
    assert not missing.exists()


def test_only_sqlite_urls_name_a_file(tmp_path: Path) -> None:
    assert sqlite_path("sqlite:///a/b.db", tmp_path) == tmp_path / "a" / "b.db"
    assert sqlite_path("sqlite:////abs/b.db", tmp_path) == Path("/abs/b.db")
    assert sqlite_path("memory://", tmp_path) is None
    assert sqlite_path("postgresql://u:p@h/db", tmp_path) is None


def test_importing_vmsnap_loads_no_event_store_until_an_export_is_used() -> None:
    code = (
        "import sys, vmsnap\n"
        "assert 'eventsourcing' not in sys.modules and 'vmsnap.controller' not in sys.modules\n"
        "from vmsnap import Controller, InvalidRequest, OperationInProgress, VmsnapError\n"
        "assert issubclass(InvalidRequest, VmsnapError) and Controller.__name__ == 'Controller'\n"
        "assert 'eventsourcing' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
