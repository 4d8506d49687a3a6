"""
Hooks through the real ``vmsnap`` command (issue 19): a quiesced create runs the guest
and host hooks around the freeze and shows them (JSON, ``show``, the timeline, ``simulator
show``); a bad hook config is refused with exit 2 and nothing recorded; and a controller
SIGKILLed while frozen, inside the thaw, or inside its post-thaw hook is recovered with the
post hook run exactly once (or reported, when it was started and never ended).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.e2e.test_crash_recovery import (
    CMD_TIMEOUT_S,
    CREATE,
    HANG_S,
    STATE,
    STORE,
    VM,
    WAIT_S,
    _env,
    _logged_ok,
    _stored,
    crash_config,
    vmsnap,
)
from tests.support import Config, wait_for, write_config
from vmsnap.adapters.simulator import SimulatorWorld

PRE = ["/usr/local/bin/db-quiesce"]


def with_hooks(config: Config, post: list[str], *, idempotent: bool = False) -> Config:
    hooks = {
        "pre_freeze": {"run": PRE, "where": "guest", "timeout_s": 600},
        "post_thaw": {"run": post, "where": "host", "idempotent": idempotent},
    }
    return attrs.evolve(config, vms=[{**config.vms[0], "hooks": hooks}])


def post_hook(folder: Path) -> list[str]:
    """A host post hook that logs each run; with a ``hang`` file, it hangs (once)."""
    script = folder / "db-resume.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$VMSNAP_HOOK $VMSNAP_SNAPSHOT_ID" >> {folder / "post.log"}\n'
        f"if [ -e {folder / 'hang'} ]; then rm {folder / 'hang'}; echo $$ > {folder / 'pid'}; "
        f"exec sleep {HANG_S}; fi\n"
    )
    script.chmod(0o755)
    return [str(script)]


def post_runs(folder: Path) -> list[str]:
    log = folder / "post.log"
    return log.read_text().splitlines() if log.exists() else []


def guest_runs(folder: Path) -> list[list[str]]:
    with SimulatorWorld(folder / STATE) as world:
        return [c["result"]["argv"] for c in world.calls(VM) if c["op"] == "guest_exec"]


def test_a_quiesced_create_runs_and_shows_its_hooks(tmp_path: Path) -> None:
    config = write_config(tmp_path, with_hooks(crash_config(), post_hook(tmp_path)))

    created = vmsnap(config, *CREATE, "--json")

    assert created.returncode == 0, created.stderr
    snap = json.loads(created.stdout)
    assert (snap["state"], snap["consistency"]) == ("ready", "application")
    assert [(h["hook"], h["where"], h["status"], h["exit_code"]) for h in snap["hooks"]] == [
        ("pre_freeze", "guest", "ok", 0),
        ("post_thaw", "host", "ok", 0),
    ]
    assert post_runs(tmp_path) == [f"post_thaw {snap['id']}"]
    assert guest_runs(tmp_path) == [PRE]
    shown = vmsnap(config, "vm-snapshots", "show", snap["id"])
    assert "pre_freeze (guest) /usr/local/bin/db-quiesce: ok, exit 0" in shown.stdout
    timeline = vmsnap(config, "audit", "timeline", snap["id"])
    assert "before the freeze: pre_freeze (guest)" in timeline.stdout
    assert "after the thaw: post_thaw (host)" in timeline.stdout
    world = json.loads(vmsnap(config, "simulator", "show", "--json").stdout)
    assert [c["result"]["argv"] for c in world["calls"] if c["op"] == "guest_exec"] == [PRE]
    assert vmsnap(config, "audit", "verify").returncode == 0
    assert vmsnap(config, "reconcile").returncode == 0


@pytest.mark.parametrize(
    ("hook", "message"),
    [
        ({"run": [], "where": "guest"}, "hooks.pre_freeze.run must not be empty"),
        ({"run": ["db-quiesce"], "where": "guest"}, "run[0] must be an absolute path"),
        ({"run": ["/x"], "where": "vm"}, "hooks.pre_freeze.where must be one of guest, host"),
        ({"run": ["/x"], "where": "host", "timeout_s": 0}, "timeout_s must be a finite number"),
        ({"run": ["/x"], "where": "host", "timout_s": 1}, "did you mean 'timeout_s'?"),
    ],
)
def test_a_bad_hook_is_refused_with_exit_2_and_nothing_recorded(
    tmp_path: Path, hook: Mapping[str, Any], message: str
) -> None:
    base = crash_config()
    config = write_config(
        tmp_path, attrs.evolve(base, vms=[{**base.vms[0], "hooks": {"pre_freeze": hook}}])
    )
    refused = vmsnap(config, *CREATE, "--json")
    assert refused.returncode == 2
    assert refused.stdout == ""
    [line] = refused.stderr.splitlines()
    assert line.startswith("error: config: ") and "[[vms]][0].hooks.pre_freeze" in line
    assert message in line
    assert not (tmp_path / STORE).exists()


def _killed(folder: Path, slow: Config, inside: Any, what: str) -> Path:
    """Run the create with ``slow``; SIGKILL it once ``inside`` holds; a healthy config."""
    slow_path = write_config(folder, slow, "slow.toml")
    healthy = write_config(folder, with_hooks(crash_config(), post_hook(folder)), "healthy.toml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmsnap", "--config", str(slow_path), *CREATE],
        cwd=folder,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: (folder / STATE).exists(), WAIT_S, "the simulated world", process=proc)
        with SimulatorWorld(folder / STATE) as world:
            wait_for(lambda: inside(world), WAIT_S, what, process=proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=CMD_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=CMD_TIMEOUT_S)
    return healthy


def _kill_hook(folder: Path) -> None:
    # The hook has its own process group: killing vmsnap left it running.
    with contextlib.suppress(ProcessLookupError, FileNotFoundError, ValueError):
        os.kill(int((folder / "pid").read_text()), signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("step", ["while frozen, after the pre hook", "inside the thaw"])
def test_a_controller_killed_after_the_pre_hook_owes_the_post_hook_and_recover_runs_it_once(
    tmp_path: Path, step: str
) -> None:
    post = post_hook(tmp_path)
    if step == "inside the thaw":
        slow = with_hooks(crash_config(hv_delay={"unquiesce": HANG_S}), post)
        inside = lambda world: (  # noqa: E731
            _logged_ok(world, "take_vm_snapshot", "netapp-1")
            and _stored(tmp_path, "UnquiesceDecided")
        )
    else:
        slow = with_hooks(crash_config(pool_delay={"take_vm_snapshot": HANG_S}), post)
        inside = lambda world: world.is_frozen(VM)  # noqa: E731
    healthy = _killed(tmp_path, slow, inside, f"the controller {step}")
    assert post_runs(tmp_path) == []

    owed = vmsnap(healthy, "reconcile", "--json")
    assert owed.returncode == 1
    assert [h["status"] for h in json.loads(owed.stdout)["hooks"]] == ["owed"]

    recovered = vmsnap(healthy, "recover", "--json")
    assert recovered.returncode == 0, recovered.stderr
    [snap] = json.loads(recovered.stdout)["recovered"]
    assert snap["state"] == "failed"
    assert post_runs(tmp_path) == [f"post_thaw {snap['id']}"]
    with SimulatorWorld(tmp_path / STATE) as world:
        assert not world.is_frozen(VM)
        assert _logged_ok(world, "unquiesce", "kvm1")

    assert vmsnap(healthy, "recover", "--json").returncode == 0
    assert post_runs(tmp_path) == [f"post_thaw {snap['id']}"]  # exactly once
    assert vmsnap(healthy, "reconcile").returncode == 0
    assert vmsnap(healthy, "audit", "verify").returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("idempotent", [False, True])
def test_a_controller_killed_inside_its_post_hook_is_reported_or_the_hook_rerun(
    tmp_path: Path, idempotent: bool
) -> None:
    post = post_hook(tmp_path)
    (tmp_path / "hang").touch()
    slow = with_hooks(crash_config(), post, idempotent=idempotent)
    try:
        healthy = _killed(
            tmp_path, slow, lambda world: (tmp_path / "pid").exists(), "the post hook"
        )
    finally:
        _kill_hook(tmp_path)
    [started] = post_runs(tmp_path)

    recovered = vmsnap(healthy, "recover", "--json")
    if idempotent:
        assert recovered.returncode == 0, recovered.stderr
        assert post_runs(tmp_path) == [started, started]
        assert vmsnap(healthy, "reconcile").returncode == 0
    else:
        assert recovered.returncode == 1
        assert "its end was never recorded" in recovered.stderr
        assert "not run again" in recovered.stderr
        assert post_runs(tmp_path) == [started]
        owed = vmsnap(healthy, "reconcile")
        assert owed.returncode == 1
        assert "started, its end never recorded: check the guest" in owed.stdout
    assert vmsnap(healthy, "audit", "verify").returncode == 0
