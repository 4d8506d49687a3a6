"""``vmsnap demo`` tells the real-guest chapter where the machine can boot the test guest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_the_demo_snapshots_reverts_and_deletes_a_real_guest(
    libvirt_uri: str, guest_kernel: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vmsnap", "demo", "--dir", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    steps = {s["step"]: s for s in json.loads(done.stdout)["steps"]}
    taken = steps["a real QEMU guest: A quiesced snapshot of a running QEMU guest"]["detail"]
    assert "state=ready quiesced=True consistency=filesystem" in taken
    reverted = steps["a real QEMU guest: Revert it with the guest shut off, boot again"]["detail"]
    assert "'before the snapshot'" in reverted
    deleted = steps["a real QEMU guest: Delete it while the guest runs (QMP)"]["detail"]
    assert "state=removed" in deleted and "vmsnap-" not in deleted.split("\n", 1)[1]
