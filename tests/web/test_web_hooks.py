"""
The hooks of issue #19 in the web UI, in-process: their lane in the freeze picture, their
order, and hostile output (HTML, control characters, bidirectional overrides) escaped.
"""

from __future__ import annotations

from pathlib import Path

import attrs
from starlette.testclient import TestClient

from tests.conftest import world_config
from tests.strategies import make_vm_snapshot
from tests.support import write_config
from tests.web.conftest import ENV, sign_in, web_config
from vmsnap import Controller
from vmsnap.domain.values import POST_THAW, PRE_FREEZE, HookResult, HookSpec
from vmsnap.views import EventView, HookView
from vmsnap.web import hooks, timeline
from vmsnap.web.access import Directory
from vmsnap.web.app import WebUi

PRE = HookSpec(["/usr/local/bin/db-quiesce"], "guest", 30)
POST = HookSpec(["/usr/local/bin/db-resume"], "guest", 5)


def hook_events(post: HookResult | None, error: str | None = None) -> list[EventView]:
    """A VM snapshot's events around a pre-freeze hook that succeeded and a post hook."""
    snap = make_vm_snapshot()
    snap.record_post_hook_owed(POST)
    snap.record_hook_started(PRE_FREEZE, PRE)
    snap.record_hook_ended(PRE_FREEZE, HookResult(0, "flushed"), duration_ms=120)
    snap.record_hook_started(POST_THAW, POST)
    snap.record_hook_ended(POST_THAW, post, duration_ms=5000, error=error)
    return [
        EventView(
            i,
            str(e.originator_id),
            e.originator_version,
            type(e).__qualname__,
            e.timestamp.isoformat(),
            {},
            e,
        )
        for i, e in enumerate(snap.collect_events(), 1)
    ]


def test_the_hooks_have_a_lane_under_the_freeze_window_with_status_exit_code_and_duration() -> None:
    found, lanes, _ = timeline.bars(hook_events(HookResult(None, "", timed_out=True)))
    assert lanes[:2] == ["freeze window", "hooks"]
    drawn = [(b.lane, b.label, b.kind) for b in found]
    assert drawn == [
        ("hooks", "pre-freeze hook → ok, exit 0, 120 ms", "call"),
        ("hooks", "post-thaw hook → timed-out, 5000 ms", "failure"),
    ]
    assert timeline.row_kinds(hook_events(HookResult(3, "")))[-1] == "failure"


def test_a_hook_that_could_not_start_shows_why_with_its_controls_made_visible() -> None:
    found, _, _ = timeline.bars(hook_events(None, error="agent gone\x1b[2J"))
    assert found[-1].label == "post-thaw hook ✗ agent gone\\x1b[2J"


def test_control_characters_and_bidirectional_overrides_are_made_visible() -> None:
    assert hooks.visible("a\tb\nc") == "a\tb\nc"
    assert hooks.visible("\x00\x07\x1b[31m\r\x7f\x9b") == "\\x00\\x07\\x1b[31m\\r\\x7f\\x9b"
    assert hooks.visible("user\u202etxt.exe\u200b") == "user\\u202etxt.exe\\u200b"


def test_the_pre_freeze_hook_is_listed_before_the_post_thaw_hook_owed_before_it() -> None:
    owed_first = [HookView(POST_THAW, ["/r"], status="owed"), HookView(PRE_FREEZE, ["/q"])]
    assert [h.hook for h in hooks.in_order(owed_first)] == [PRE_FREEZE, POST_THAW]
    assert [hooks.title(h.hook) for h in owed_first] == ["Post-thaw hook", "Pre-freeze hook"]


def test_the_snapshot_page_lists_the_hooks_with_their_output_escaped(tmp_path: Path) -> None:
    hostile = "printf '<img src=x onerror=alert(1)>\\033[2J\\342\\200\\256'"
    base = world_config()
    vms = [
        {**v, "hooks": {
            "pre_freeze": {"run": ["/bin/sh", "-c", hostile], "where": "host"},
            "post_thaw": {"run": ["/bin/sh", "-c", "exit 4"], "where": "host"},
        }} if v["id"] == "vm-kvm" else v
        for v in base.vms
    ]  # fmt: skip
    config = web_config(attrs.evolve(base, vms=vms))
    with Controller.from_config(write_config(tmp_path, config)) as c:
        snap = c.create_vm_snapshot("vm-kvm", quiesce=True)
        ui = WebUi(c, Directory.from_config(c.config, ENV))
        try:
            with TestClient(ui.app, base_url="http://testserver") as client:
                sign_in(client)
                page = client.get(f"/snapshots/{snap.id}").text
        finally:
            ui.close()
    start = page.index('<table class="hooks"')
    table = page[start : page.index("</table>", start)]
    assert "<img" not in table and "&lt;img src=x onerror=alert(1)&gt;\\x1b[2J\\u202e" in table
    assert table.index("Pre-freeze hook") < table.index("Post-thaw hook")
    assert '<span class="state h-failed">failed</span>' in table  # the post hook's exit 4
    assert '<details class="output">' in table  # collapsed
