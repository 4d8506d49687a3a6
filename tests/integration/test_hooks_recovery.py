"""
Hooks after a crash (issue 19, ADR 0026): a controller that died after the pre hook, after
the freeze, after the thaw, or inside the post hook; ``recover`` runs the owed post hook
once, or reports one that was started and never ended (and runs it again only when it is
idempotent); ``reconcile`` and the timeline show what is owed; ``audit verify`` finds a
post hook that ran twice or was never owed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import STATE_FILE
from tests.crash import SimulatedCrash, die_at_call
from tests.integration.test_hooks import POST, PRE, VM, guest_runs, hooked, open_world, types
from tests.support import Config, write_config
from vmsnap import Controller
from vmsnap.adapters.simulator import SimulatorWorld

# -- crashes: recover runs what is owed, once ----------------------------------------------------


def _die(tmp_path: Path, config: Config, call: int, *, after: bool) -> str:
    """Create a quiesced VM snapshot in a controller that dies at its ``call``-th call."""
    path = write_config(tmp_path, config)
    dying = Controller.from_config(path)
    countdown = die_at_call(dying, call, after=after)
    try:
        with pytest.raises(SimulatedCrash):
            dying.create_vm_snapshot(VM, quiesce=True)
        [sid] = [v.in_flight for v in dying.list_vms() if v.in_flight]
        assert sid is not None
    finally:
        dying.close()
    assert countdown.fired is not None
    return sid


# Calls of a hooked quiesced create of vm-kvm: 1 pre hook, 2 quiesce, 3-5 three drivers,
# 6 unquiesce, 7 post hook.
@pytest.mark.parametrize(
    ("call", "after", "where"),
    [
        (1, True, "after the pre hook ran"),
        (1, False, "as the pre hook was sent"),
        (2, True, "after the freeze"),
        (6, True, "after the thaw"),
    ],
)
def test_after_a_crash_recover_runs_the_owed_post_hook_once(
    tmp_path: Path, call: int, after: bool, where: str
) -> None:
    sid = _die(tmp_path, hooked(), call, after=after)
    with SimulatorWorld(tmp_path / STATE_FILE) as world:
        assert POST not in guest_runs(world), where
    with Controller.from_config(tmp_path / "vmsnap.toml") as ctrl:
        owed = ctrl.reconcile()
        assert [(h.snapshot_id, h.status) for h in owed.hooks] == [(sid, "owed")], where
        assert not owed.ok
        report = ctrl.recover_report()
        assert report.unrecovered == (), where
        with SimulatorWorld(tmp_path / STATE_FILE) as world:
            assert guest_runs(world).count(POST) == 1, where
            assert not world.is_frozen(VM)
        assert ctrl.recover() == []
        assert ctrl.reconcile().ok, where
        assert ctrl.audit_verify().ok
        with SimulatorWorld(tmp_path / STATE_FILE) as world:
            assert guest_runs(world).count(POST) == 1, where


def test_a_post_hook_started_and_never_ended_is_reported_not_run_again(tmp_path: Path) -> None:
    sid = _die(tmp_path, hooked(), 7, after=True)  # died inside the post hook
    with Controller.from_config(tmp_path / "vmsnap.toml") as ctrl:
        [owed] = ctrl.reconcile().hooks
        assert (owed.snapshot_id, owed.status) == (sid, "running")
        report = ctrl.recover_report()
        [unended] = report.unrecovered
        assert unended.snapshot_id == sid
        assert "was never recorded" in unended.reason and "not run again" in unended.reason
        with SimulatorWorld(tmp_path / STATE_FILE) as world:
            assert guest_runs(world) == [PRE, POST]  # the one run that died, not another
        assert ctrl.get_vm_snapshot(sid).state == "failed"
        assert "Snapshot.AlertRaised" in types(ctrl, sid)
        assert ctrl.audit_verify().ok


def test_an_idempotent_post_hook_that_never_ended_is_run_again(tmp_path: Path) -> None:
    sid = _die(tmp_path, hooked(idempotent=True), 7, after=True)
    with Controller.from_config(tmp_path / "vmsnap.toml") as ctrl:
        assert ctrl.recover_report().unrecovered == ()
        with SimulatorWorld(tmp_path / STATE_FILE) as world:
            assert guest_runs(world) == [PRE, POST, POST]
        snap = ctrl.get_vm_snapshot(sid)
        assert [h.status for h in snap.hooks if h.hook == "post_thaw"] == ["unended", "ok"]
        assert ctrl.reconcile().hooks == ()
        assert ctrl.audit_verify().ok


def test_the_timeline_shows_an_owed_post_hook_that_never_started(tmp_path: Path) -> None:
    from vmsnap import render

    sid = _die(tmp_path, hooked(), 2, after=True)
    with Controller.from_config(tmp_path / "vmsnap.toml") as ctrl:
        text = render.frozen_text(ctrl.audit_timeline(snapshot_id=sid))
    assert "hooks, no freeze" in text  # the quiesce's answer was never recorded
    assert "post_thaw (guest) /usr/local/bin/db-resume: OWED since position" in text
    assert "never started: run 'vmsnap recover'" in text


# -- audit verify: a post-thaw hook runs only when owed, and once --------------------------------


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("again", "post-thaw hook started again after it ended"),
        ("unowed", "post-thaw hook started but never owed"),
    ],
)
def test_verify_finds_a_post_hook_that_ran_twice_or_was_never_owed(
    tmp_path: Path, extra: str, problem: str
) -> None:
    from uuid import UUID

    from vmsnap.domain.values import HookSpec

    ctrl, world = open_world(
        tmp_path, hooked() if extra == "again" else hooked(pre=None, post=None)
    )
    with ctrl, world:
        snap = ctrl.create_vm_snapshot(VM, quiesce=True)
        log = ctrl._wiring.log
        agg: Any = log.repository.get(UUID(snap.id))
        agg.record_hook_started("post_thaw", agg.post_hook or HookSpec(tuple(POST), "guest"))
        log.save(agg)
        report = ctrl.audit_verify()
    assert not report.ok
    assert any(problem in p for p in report.problems), report.problems


def test_hooks_on_a_postgresql_store_recover_and_verify(tmp_path: Path, pg_url: str) -> None:
    """The same records on PostgreSQL: views, recover of an owed post hook, verify."""
    pytest.importorskip("psycopg")
    config = write_config(tmp_path, hooked())
    with Controller.from_config(config, pg_url, migrate=True) as ctrl:
        ctrl.migrate()
    dying = Controller.from_config(config, pg_url)
    die_at_call(dying, 2, after=True)  # frozen, after the pre hook
    try:
        with pytest.raises(SimulatedCrash):
            dying.create_vm_snapshot(VM, quiesce=True)
    finally:
        dying.close()
    with Controller.from_config(config, pg_url) as ctrl:
        [owed] = ctrl.reconcile().hooks
        assert owed.status == "owed"
        [snap] = ctrl.recover()
        assert [h.status for h in ctrl.get_vm_snapshot(snap.id).hooks] == ["ok", "ok"]
        assert ctrl.reconcile().ok
        assert ctrl.audit_verify().ok
    with SimulatorWorld(tmp_path / STATE_FILE) as world:
        assert guest_runs(world) == [PRE, POST]
