"""
End-to-end tests of ``vmsnap demo`` (CONTRACT.md): it writes a config and a world, tells the
whole story, and leaves a config that the other commands then use.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import (
    CALL_FIELDS,
    CAP_NAMES,
    POOL_FIELDS,
    SIM_VM_FIELDS,
    SNAPSHOT_FIELDS,
    STORE_FILE,
    Call,
    ok_json,
    run,
    run_concurrently,
)


def test_demo_tells_the_story_in_a_folder_whose_config_the_other_commands_then_use(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "demo"
    # The real-guest chapter has its own test (tests/realguest/test_demo_chapter.py).
    code, out, err = run("demo", "--dir", folder, "--no-real-guest", cwd=tmp_path)
    assert code == 0, err
    assert out.strip(), "the demo told nothing"
    config = folder / "vmsnap.toml"
    assert config.is_file()

    # From another folder: the demo's relative store resolves against its config's folder.
    listed, verify, world, pools = run_concurrently(
        [
            Call(["--config", config, "vm-snapshots", "list", "--all", "--json"], tmp_path),
            Call(["--config", config, "audit", "verify", "--json"], tmp_path),
            Call(["--config", config, "simulator", "show", "--json"], tmp_path),
            Call(["--config", config, "pools", "list", "--json"], tmp_path),
        ]
    )
    snapshots = ok_json(listed)
    assert all(set(s) >= SNAPSHOT_FIELDS for s in snapshots)
    states = {s["state"] for s in snapshots}
    assert {"ready", "removed"} <= states, f"the demo's snapshots are {states}"
    assert {s["strategy"] for s in snapshots} >= {"storage"}

    report = ok_json(verify)
    assert report["ok"] is True
    assert report["problems"] == []
    assert report["events"] > 0

    shown = ok_json(world)
    assert shown["calls"], "the demo made no simulated call"
    assert all(set(c) >= CALL_FIELDS for c in shown["calls"])
    for vm in shown["vms"].values():
        assert set(vm) >= SIM_VM_FIELDS
        assert vm["frozen"] is False
        assert vm["freeze_count"] == vm["thaw_count"]

    caps = ok_json(pools)
    assert caps and all(set(p) >= POOL_FIELDS and set(p["caps"]) >= CAP_NAMES for p in caps)
    assert not (tmp_path / STORE_FILE).exists()


def test_demo_with_json_prints_one_json_document_and_uses_a_new_temporary_folder(
    tmp_path: Path,
) -> None:
    code, out, err = run(
        "demo", "--json", "--no-real-guest", cwd=tmp_path, env={"TMPDIR": str(tmp_path)}
    )
    assert code == 0, err
    assert json.loads(out), "the demo's JSON document is empty"
    assert list(tmp_path.glob("*/vmsnap.toml")), "the demo wrote no config in a temporary folder"
