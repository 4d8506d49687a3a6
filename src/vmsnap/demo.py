"""``vmsnap demo``: a demo config and simulated world, and the whole story told on them."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from vmsnap import config as config_module
from vmsnap import demo_libvirt, demo_real_guest
from vmsnap.bootstrap import simulator_worlds
from vmsnap.controller import Controller
from vmsnap.domain.exceptions import InvalidRequest
from vmsnap.render import emit_json, timeline_text, view_text

DEMO_CONFIG = """\
# vmsnap demo: three simulated hypervisors, the default pool and two vendor pools.
[store]
url = "sqlite:///vmsnap.db"

[limits]
max_vm_snapshots_per_vm = 10
quiesce_deadline_s = 60

[[hypervisors]]
name = "esx1"
type = "simulator"
profile = "vmware"
state = "sim-state.db"

[[hypervisors]]
name = "xen1"
type = "simulator"
profile = "xenserver"
state = "sim-state.db"

[[hypervisors]]
name = "kvm1"
type = "simulator"
profile = "kvm"
state = "sim-state.db"

[[pools]]
id = "primary-1"
name = "Primary NFS"
driver = "default"

[[pools]]
id = "netapp-1"
name = "NetApp 1"
driver = "simulator"
state = "sim-state.db"
capabilities = { VOLUME_SNAPSHOT_QUIESCEVM = true, STORAGE_SYSTEM_SNAPSHOT = true }
need_unquiesce = true

[[pools]]
id = "pure-1"
name = "Pure 1"
driver = "simulator"
state = "sim-state.db"
capabilities = { VOLUME_SNAPSHOT_QUIESCEVM = false, STORAGE_SYSTEM_SNAPSHOT = true }
need_unquiesce = true

[[vms]]
id = "vm-1"
hypervisor = "esx1"
power_state = "Running"
volumes = [
  { id = "vol-1", pool = "primary-1", type = "ROOT" },
  { id = "vol-2", pool = "netapp-1", type = "DATADISK" },
  { id = "vol-3", pool = "pure-1", type = "DATADISK" },
]

[[vms]]
id = "vm-2"
hypervisor = "xen1"
power_state = "Running"
volumes = [{ id = "vol-4", pool = "netapp-1", type = "ROOT" }]

[[vms]]
id = "vm-3"
hypervisor = "kvm1"
power_state = "Running"
volumes = [{ id = "vol-5", pool = "netapp-1", type = "ROOT" }]
"""


class Story:
    """The steps told so far; printed as they come unless the story ends as one JSON document."""

    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        self.steps: list[dict[str, Any]] = []

    def say(self, title: str, text: str, **data: Any) -> None:
        self.steps.append({"step": title, **data})
        if not self.as_json:
            print(f"\n== {title} ==\n{text}")


def run_demo(folder: Path | None, *, as_json: bool = False, real_guest: bool = True) -> int:
    """
    Write the demo into ``folder`` (a new temporary folder by default) and run it;
    ``real_guest``: also boot the test guest where the machine can (ADR 0016).
    """
    folder = folder or Path(tempfile.mkdtemp(prefix="vmsnap-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in (
        "vmsnap.db",
        "vmsnap.db-wal",
        "vmsnap.db-shm",
        "sim-state.db",
        "sim-state.db-wal",
        "sim-state.db-shm",
    ):
        (folder / leftover).unlink(missing_ok=True)
    config = folder / "vmsnap.toml"
    config.write_text(DEMO_CONFIG, encoding="utf-8")
    story = Story(as_json=as_json)
    with Controller.from_config(config) as c:
        _tell(c, story, config)
    chapters: list[tuple[str, Any]] = [("libvirt + qcow2", demo_libvirt)]
    if real_guest:
        chapters.append(("a real QEMU guest", demo_real_guest))
    for label, chapter in chapters:
        missing = chapter.available()
        if missing is None:
            for title, text in chapter.tell(folder):
                story.say(f"{label}: {title}", text, detail=text)
        else:
            story.say(label, f"skipped: {missing}", skipped=missing)
    story.say(
        "Try it yourself",
        f"vmsnap --config {config} vm-snapshots list --all\n"
        f"vmsnap --config {config} simulator show\n"
        f"vmsnap --config {config} audit verify",
        dir=str(folder),
        config=str(config),
    )
    if as_json:
        emit_json({"dir": str(folder), "config": str(config), "steps": story.steps})
    return 0


def _simulated_calls(config: Path, vm_id: str) -> list[dict[str, Any]]:
    """The simulated calls about ``vm_id``, in order, as the demo's world recorded them."""
    worlds = simulator_worlds(config_module.load(config))
    try:
        return [x for x in next(iter(worlds.values())).calls() if x["vm_id"] == vm_id]
    finally:
        for world in worlds.values():
            world.close()


def _tell(c: Controller, story: Story, config: Path) -> None:
    pools = c.list_pools()
    story.say(
        "1. Pools advertise capabilities (listStoragePools caps)",
        "\n".join(f"{p.id:10} {p.driver:9} {json.dumps(p.caps)}" for p in pools),
        pools=[p.to_dict() for p in pools],
    )
    snap = c.create_vm_snapshot("vm-1", name="before-upgrade", description="demo", quiesce=True)
    calls = _simulated_calls(config, "vm-1")
    story.say(
        "2. A quiesced VM snapshot of vm-1 across the default driver and two vendor drivers",
        view_text(snap)
        + "\n\nCalls, in order: "
        + "; ".join(f"{x['op']}@{x['target']} -> {json.dumps(x['result'])}" for x in calls)
        + "\nThe default driver answered False (its volume lives in the hypervisor snapshot),"
        " so by the AND rule the hypervisor snapshot is kept as part of this VM snapshot.",
        snapshot=snap.to_dict(),
    )
    try:
        c.create_volume_snapshot("vol-3", quiesce=True)
        refused = "(unexpectedly accepted)"
    except InvalidRequest as e:
        refused = f"refused, nothing recorded: {e}"
    story.say(
        "3. A quiesced volume snapshot on pure-1 (no VOLUME_SNAPSHOT_QUIESCEVM)",
        refused,
        refused=refused,
    )
    vol = c.create_volume_snapshot("vol-2", quiesce=True)
    story.say("4. A quiesced volume snapshot on netapp-1", view_text(vol), snapshot=vol.to_dict())
    xen = c.create_vm_snapshot("vm-2", quiesce=True)
    story.say(
        "5. XenServer ignores quiesce: the snapshot is crash-consistent, and says so",
        f"state={xen.state} quiesced={xen.quiesced} consistency={xen.consistency}",
        snapshot=xen.to_dict(),
    )
    kvm = c.create_vm_snapshot("vm-3", quiesce=True)
    story.say(
        "6. KVM freezes the guest; thaw is mandatory whatever the drivers answer",
        f"state={kvm.state} quiesced={kvm.quiesced} consistency={kvm.consistency}",
        snapshot=kvm.to_dict(),
    )
    reverted = c.revert_vm_snapshot(snap.id)
    story.say(
        "7. Revert vm-1 to its snapshot",
        f"state={reverted.state} current={reverted.current}",
        snapshot=reverted.to_dict(),
    )
    deleted = c.delete_vm_snapshot(snap.id)
    story.say("8. Delete it", f"state={deleted.state}", snapshot=deleted.to_dict())
    timeline = c.audit_timeline(snap.id)
    story.say(
        "9. The audit timeline of that snapshot",
        timeline_text(timeline),
        events=[e.to_dict() for e in timeline],
    )
    report = c.audit_verify()
    story.say(
        "10. Replay the whole log and check it",
        f"ok={report.ok}, {report.events} events, problems: {list(report.problems) or 'none'}",
        verify=report.to_dict(),
    )
