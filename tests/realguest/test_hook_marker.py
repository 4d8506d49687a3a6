"""
Application-consistent snapshots of a real guest (issue #19), end to end through the
Controller and the CLI: a pre-freeze hook inside the guest writes a marker file on its data
disk, a post-thaw hook removes it. The snapshot's image has the marker, the live guest does
not, the snapshot says ``application``, and the post hook ran exactly once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.realguest.guest import VM, WAIT_S, Guest, snapshot_fs
from vmsnap import Controller
from vmsnap.domain.values import backend_name

pytestmark = pytest.mark.slow

MARKER = "/mnt/vdb/vmsnap-marker"
#: Each run of the post hook adds a line here (on the root disk: the proof of "once").
RUNS = "/mnt/vda/post-hook-runs"


def marker_hooks(**pre: Any) -> dict[str, Any]:
    return {
        "pre_freeze": {
            "run": ["/bin/sh", "-c", f"echo marker > {MARKER}; sync; echo wrote the marker"],
            "where": "guest",
            "timeout_s": 60,
            **pre,
        },
        "post_thaw": {
            "run": ["/bin/sh", "-c", f"rm -f {MARKER}; echo ran >> {RUNS}; sync"],
            "where": "guest",
            "timeout_s": 60,
        },
    }


def hook_types(vmsnap: Controller, snapshot_id: str) -> list[tuple[str, str]]:
    return [
        (e.type.rsplit(".", 1)[-1], str(e.data["hook"]))
        for e in vmsnap.audit_timeline(snapshot_id=snapshot_id)
        if "hook" in e.data
    ]


def present(guest: Guest, path: str) -> bool:
    return guest.sh(f"[ -e {path} ] && echo yes; true").strip() == "yes"


def test_a_pre_freeze_hook_marks_the_snapshot_and_the_post_thaw_hook_unmarks_the_guest(
    guest: Guest, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    guest.sh(f"rm -f {MARKER} {RUNS}; sync")
    with Controller.from_config(write_config(hooks=marker_hooks())) as vmsnap:
        snap = vmsnap.create_vm_snapshot(VM, quiesce=True)
        events = hook_types(vmsnap, snap.id)

    assert snap.state == "ready", snap.error
    assert (snap.quiesced, snap.consistency) == (True, "application")
    image = snapshot_fs(guest.files["vol-data"], backend_name(snap.id), tmp_path)
    assert image.read("/vmsnap-marker") == "marker\n"
    assert not present(guest, MARKER)
    # The post hook ran exactly once: one line in the guest, one start and one end recorded.
    assert guest.sh(f"cat {RUNS}") == "ran\n"
    assert events == [
        ("HookStarted", "pre_freeze"),
        ("HookEnded", "pre_freeze"),
        ("HookStarted", "post_thaw"),
        ("HookEnded", "post_thaw"),
    ]
    shown = {h.hook: (h.where, h.status, h.exit_code) for h in snap.hooks}
    assert shown == {"pre_freeze": ("guest", "ok", 0), "post_thaw": ("guest", "ok", 0)}
    pre = next(h for h in snap.hooks if h.hook == "pre_freeze")
    assert pre.output == "wrote the marker\n"


def test_a_pre_freeze_hook_killed_at_its_timeout_fails_the_snapshot_and_the_post_hook_runs(
    guest: Guest, write_config: Callable[..., Path]
) -> None:
    guest.sh(f"rm -f {MARKER} {RUNS}; sync")
    stuck = ["/bin/sh", "-c", "echo $$ > /run/stuck.pid; sleep 600"]
    config = write_config(hooks=marker_hooks(run=stuck, timeout_s=3))
    done = subprocess.run(
        [sys.executable, "-m", "vmsnap", "--config", str(config), "--json",
         "vm-snapshots", "create", "--vm", VM, "--quiesce"],
        capture_output=True, text=True, timeout=WAIT_S,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    view = json.loads(done.stdout)
    assert view["state"] == "failed" and view["consistency"] != "application"
    statuses = {h["hook"]: h["status"] for h in view["hooks"]}
    assert statuses == {"pre_freeze": "timed-out", "post_thaw": "ok"}
    pid = guest.sh("cat /run/stuck.pid").strip()
    assert not present(guest, f"/proc/{pid}"), "the timed-out hook still runs in the guest"
    assert guest.sh(f"cat {RUNS}") == "ran\n"
    assert guest.freeze_status() == "thawed"
