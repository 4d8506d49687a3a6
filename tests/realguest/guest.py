"""
A real QEMU guest under libvirt for the real-guest tests: Debian's cloud kernel with the
initramfs of ``scripts/build-test-guest.sh`` (busybox, qemu-ga), run by QEMU TCG as a
persistent libvirt domain with two qcow2 data disks (ext4), each in its own pool folder.

Everything here waits on conditions with bounded timeouts; nothing sleeps blindly.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import attrs

from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[2]
BUILD_GUEST = ROOT / "scripts" / "build-test-guest.sh"
LIBVIRTD = ROOT / "scripts" / "libvirtd.sh"
WAIT_S = 180.0  # TCG on a busy machine: boots take seconds, sometimes tens of them
PROGRAMS = (
    "virsh",
    "libvirtd",
    "virtlogd",
    "qemu-system-x86_64",
    "qemu-img",
    "mkfs.ext4",
    "e2fsck",
    "debugfs",
    "dumpe2fs",
    "cpio",
)
FILES = ("/usr/sbin/qemu-ga", "/bin/busybox")
#: volume id -> (pool id, target dev); the guest mounts vdX at /mnt/vdX.
VOLUMES = {"vol-root": ("pool-a", "vda"), "vol-data": ("pool-b", "vdb")}
VM = "vm-real"

T = TypeVar("T")


def missing() -> str | None:
    """
    Return what this machine lacks to run a real guest, or None.
    """
    if os.geteuid() != 0:
        return "not root (qemu:///system and a libvirtd of our own need root)"
    lacking = [p for p in PROGRAMS if shutil.which(p) is None]
    lacking += [f for f in FILES if not Path(f).exists()]
    if not list(Path("/boot").glob("vmlinuz-*-cloud-amd64")):
        lacking.append("linux-image-cloud-amd64's kernel")
    try:
        import libvirt_qemu  # noqa: F401
    except ImportError:
        lacking.append("libvirt-python (libvirt_qemu)")
    if lacking:
        return "missing " + ", ".join(lacking) + " (bash .ci/run installs the Debian packages)"
    return None


def run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=check, timeout=WAIT_S
    )


def make_ext4_qcow2(file: Path, size_mb: int = 32) -> None:
    """An ext4 filesystem on a raw file, converted to qcow2 (no mount needed)."""
    raw = file.with_suffix(".raw")
    with raw.open("wb") as f:
        f.truncate(size_mb << 20)
    run("mkfs.ext4", "-q", "-F", raw)
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, file)
    raw.unlink()


def internal_snapshots(file: Path) -> list[str]:
    """The internal snapshots of a qcow2 image (read while QEMU holds it: -U)."""
    info = json.loads(run("qemu-img", "info", "-U", "--output=json", file).stdout)
    return [str(s["name"]) for s in info.get("snapshots", [])]


@attrs.frozen
class SnapshotFs:
    """One internal snapshot of an image, as a raw ext4 file on the host."""

    raw: Path

    def e2fsck(self) -> subprocess.CompletedProcess[str]:
        return run("e2fsck", "-n", "-f", self.raw, check=False)

    def needs_recovery(self) -> bool:
        """The journal holds writes not yet in place (taken without a freeze)."""
        header = run("dumpe2fs", "-h", self.raw, check=False).stdout
        features = next((ln for ln in header.splitlines() if ln.startswith("Filesystem f")), "")
        return "needs_recovery" in features

    def read(self, path: str) -> str | None:
        done = run("debugfs", "-R", f"cat {path}", self.raw, check=False)
        return None if "not found" in done.stderr else done.stdout


def snapshot_fs(file: Path, name: str, into: Path) -> SnapshotFs:
    raw = into / f"{file.stem}-{name}.raw"
    raw.unlink(missing_ok=True)
    run(
        "qemu-img",
        "convert",
        "-U",
        "-f",
        "qcow2",
        "-O",
        "raw",
        "-l",
        f"snapshot.name={name}",
        file,
        raw,
    )
    return SnapshotFs(raw)


class Guest:
    """
    One persistent libvirt domain running the test guest, and a connection to look at it.
    """

    def __init__(self, uri: str, name: str, folder: Path, kernel_dir: Path) -> None:
        import libvirt

        # The guest is polled while it boots: libvirt must not print every failed poll.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        self.uri = uri
        self.name = name
        self.folder = folder
        self.pools = {pool: folder / pool for pool, _ in VOLUMES.values()}
        self.files = {v: folder / pool / f"{v}.qcow2" for v, (pool, _) in VOLUMES.items()}
        for pool in self.pools.values():
            pool.mkdir()
        for file in self.files.values():
            make_ext4_qcow2(file)
        shutil.copy(kernel_dir / "vmlinuz", folder / "vmlinuz")
        shutil.copy(kernel_dir / "initrd.img", folder / "initrd.img")
        self.conn = libvirt.open(uri)
        self.dom = self.conn.defineXML(self.xml())

    def xml(self) -> str:
        disks = "".join(
            f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{self.files[v]}'/><target dev='{dev}' bus='virtio'/>"
            f"<serial>{v}</serial></disk>"
            for v, (_, dev) in VOLUMES.items()
        )
        # QEMU runs as root (static DAC label): the test folders need no relabelling.
        return (
            f"<domain type='qemu'><name>{self.name}</name><memory unit='MiB'>256</memory>"
            f"<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type>"
            f"<kernel>{self.folder}/vmlinuz</kernel><initrd>{self.folder}/initrd.img</initrd>"
            f"<cmdline>console=ttyS0 quiet panic=-1</cmdline></os><features><acpi/></features>"
            f"<on_reboot>destroy</on_reboot><devices>{disks}"
            f"<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/>"
            f"</channel><serial type='file'><source path='{self.folder}/console.log'/>"
            f"</serial><memballoon model='none'/></devices>"
            f"<seclabel type='static' model='dac' relabel='no'><label>+0:+0</label>"
            f"</seclabel></domain>"
        )

    # Power ------------------------------------------------------------------------

    def running(self) -> bool:
        return bool(self.dom.isActive())

    def boot(self) -> None:
        """Start the domain and wait until its agent answers and its disks are mounted."""
        if not self.running():
            self.dom.create()
        wait_for(lambda: self.agent_answers() and self.mounted(), WAIT_S, f"{self.name} to boot")

    def shut_off(self) -> None:
        """Shut the guest down cleanly through its agent (sync, unmount, power off)."""
        import libvirt

        if self.running():
            self.dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT)
            wait_for(lambda: not self.running(), WAIT_S, f"{self.name} to power off")

    def destroy(self) -> None:
        if self.running():
            self.dom.destroy()

    def close(self) -> None:
        import libvirt

        self.destroy()
        self.dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        self.conn.close()

    # Agent ------------------------------------------------------------------------

    def agent(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        from vmsnap.adapters.libvirt_live import agent_command

        return agent_command(self.dom, command, arguments, timeout_s=5)

    def agent_answers(self) -> bool:
        import libvirt

        try:
            self.agent("guest-ping")
        except libvirt.libvirtError:
            return False
        return True

    def freeze_status(self) -> str:
        return str(self.agent("guest-fsfreeze-status"))

    def mounted(self) -> bool:
        mounts = self.sh("cat /proc/mounts")
        return all(f"/mnt/{dev} " in mounts for _, dev in VOLUMES.values())

    def start_sh(self, script: str) -> int:
        """Start ``script`` in the guest (busybox sh); return its pid."""
        arguments = {"path": "/bin/sh", "arg": ["-c", script], "capture-output": True}
        return int(self.agent("guest-exec", arguments)["pid"])

    def exec_status(self, pid: int) -> dict[str, Any]:
        return dict(self.agent("guest-exec-status", {"pid": pid}))

    def sh(self, script: str) -> str:
        """Run ``script`` in the guest and return its output; fail if it fails."""
        pid = self.start_sh(script)
        status = wait_for(
            lambda: (s := self.exec_status(pid))["exited"] and s,
            WAIT_S,
            f"guest command {script!r}",
        )
        out = base64.b64decode(status.get("out-data", "")).decode()
        err = base64.b64decode(status.get("err-data", "")).decode()
        assert status.get("exitcode") == 0, f"{script!r} failed in the guest: {out}{err}"
        return out

    def write(self, path: str, text: str) -> None:
        """Write a file in the guest and sync it to its disk."""
        self.sh(f"echo '{text}' > {path} && sync")

    def kill_agent(self) -> None:
        """Stop qemu-ga for good (the guest's init no longer respawns it)."""
        import libvirt

        with contextlib.suppress(libvirt.libvirtError):  # the agent may die mid-answer
            self.start_sh("touch /run/no-agent; sleep 0.2; killall qemu-ga")
        wait_for(lambda: not self.agent_answers(), 30, "the guest agent to die")


@contextlib.contextmanager
def running_guest(label: str, parent: Path | None = None) -> Iterator[Guest]:
    """
    A booted test guest under a libvirtd of its own (the demo's and the benchmark's),
    named ``vmsnap-test-<label>-...``, its images in a new folder under ``parent``; the
    guest, its images and its libvirtd are gone afterwards.
    """
    daemon = tempfile.mkdtemp(prefix="vmsnap-libvirtd.")
    images = Path(tempfile.mkdtemp(prefix="vmsnap-guest.", dir=parent))
    images.chmod(0o755)  # libvirtd and QEMU read the images
    guest = None
    try:
        uri = run(LIBVIRTD, "start", daemon).stdout.strip()
        kernel = Path(run(BUILD_GUEST).stdout.strip())
        guest = Guest(uri, f"vmsnap-test-{label}-{uuid.uuid4().hex[:6]}", images, kernel)
        guest.boot()
        yield guest
    finally:
        if guest is not None:
            guest.close()
        run(LIBVIRTD, "stop", daemon, check=False)
        shutil.rmtree(images, ignore_errors=True)
