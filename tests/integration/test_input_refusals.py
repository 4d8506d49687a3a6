"""
Bad input is refused at the boundary (exit 2, nothing recorded): control characters and
undecodable bytes in names and descriptions, an unknown state or id in a list filter,
and arguments of the wrong type given to the Python API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vmsnap import Controller, InvalidRequest
from vmsnap.cli import main

# Input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["vm-snapshots", "create", "--vm", "vm-kvm", "--name", "a\rb"],
        ["vm-snapshots", "create", "--vm", "vm-kvm", "--description", "\x1b[2J"],
        ["vm-snapshots", "create", "--vm", "vm-kvm", "--name", "caf\udce9"],
        ["vm-snapshots", "list", "--state", "bogus"],
        ["vm-snapshots", "list", "--vm", "unknown"],
        ["snapshots", "list", "--volume", "unknown"],
    ],
    ids=["cr", "esc", "not-utf-8", "state", "vm", "volume"],
)
def test_bad_input_is_refused_with_exit_2_and_nothing_recorded(
    config_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "recover" not in err
    with Controller.from_config(config_path) as ctrl:
        assert list(ctrl.audit_export()) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.create_vm_snapshot("vm-kvm", description=["a"]),
        lambda c: c.create_vm_snapshot("vm-kvm", quiesce="false"),
        lambda c: c.create_volume_snapshot("kvm-data", quiesce=1),
        lambda c: c.list_vm_snapshots(vm_id=3),
    ],
    ids=["description-list", "quiesce-string", "quiesce-int", "vm-id-int"],
)
def test_the_python_api_checks_argument_types_at_the_boundary(
    controller: Controller, call: Any
) -> None:
    with pytest.raises(InvalidRequest):
        call(controller)
    assert list(controller.audit_export()) == []
