"""
Guest hooks (issue #19) on a real guest: ``LibvirtHypervisor.guest_exec`` through the
guest's qemu-ga (exit codes, output and its 4 KiB cap, the kill inside the guest at the
timeout, a dead agent).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.realguest.guest import VM, VOLUMES, Guest
from vmsnap.adapters.libvirt_guest_exec import EXEC_FAILED
from vmsnap.adapters.libvirt_hypervisor import LibvirtHypervisor
from vmsnap.adapters.libvirt_live import AGENT_UNAVAILABLE
from vmsnap.domain.exceptions import DriverError
from vmsnap.domain.values import HOOK_OUTPUT_LIMIT, HookResult, VmInfo, VolumeInfo

pytestmark = pytest.mark.slow


@pytest.fixture
def hv(guest: Guest) -> Iterator[LibvirtHypervisor]:
    with LibvirtHypervisor("kvm", guest.uri) as hv:
        yield hv


@pytest.fixture
def vm(guest: Guest) -> VmInfo:
    volumes = [VolumeInfo(v, VM, pool) for v, (pool, _) in VOLUMES.items()]
    return VmInfo(VM, "kvm", "Running", volumes, domain=guest.name)


def test_a_guest_command_answers_its_exit_code_and_its_output(
    hv: LibvirtHypervisor, vm: VmInfo
) -> None:
    script = "echo flushed; echo 'a warning' >&2"
    assert hv.guest_exec(vm, ["/bin/sh", "-c", script], timeout_s=60) == HookResult(
        0, "flushed\na warning\n"
    )
    failed = hv.guest_exec(vm, ["/bin/sh", "-c", "echo no database; exit 3"], timeout_s=60)
    assert failed == HookResult(3, "no database\n") and not failed.ok


def test_the_output_kept_is_the_first_4_kib(hv: LibvirtHypervisor, vm: VmInfo) -> None:
    script = "i=0; while [ $i -lt 200 ]; do echo line-$i-of-a-long-report; i=$((i+1)); done"
    result = hv.guest_exec(vm, ["/bin/sh", "-c", script], timeout_s=60)
    assert result.exit_code == 0
    assert len(result.output.encode()) == HOOK_OUTPUT_LIMIT
    assert result.output.startswith("line-0-of-a-long-report\nline-1-")


def test_a_command_past_its_timeout_is_killed_inside_the_guest_with_its_children(
    hv: LibvirtHypervisor, vm: VmInfo, guest: Guest
) -> None:
    guest.sh("rm -f /run/hook.pids")
    # The hook and a child of it, both sleeping far past the timeout.
    script = "echo $$ >> /run/hook.pids; sleep 600 & echo $! >> /run/hook.pids; echo up; wait"
    result = hv.guest_exec(vm, ["/bin/sh", "-c", script], timeout_s=5)
    assert result == HookResult(None, "up\n", timed_out=True)
    pids = guest.sh("cat /run/hook.pids").split()
    assert len(pids) == 2, pids
    alive = guest.sh(f"for p in {' '.join(pids)}; do [ -d /proc/$p ] && echo $p; done; true")
    assert alive == ""
    assert "sleep 600" not in guest.sh("ps")


def test_a_program_the_guest_does_not_have_is_a_driver_error(
    hv: LibvirtHypervisor, vm: VmInfo
) -> None:
    with pytest.raises(DriverError, match="/usr/local/bin/db-quiesce") as raised:
        hv.guest_exec(vm, ["/usr/local/bin/db-quiesce"], timeout_s=60)
    assert raised.value.code == EXEC_FAILED


def test_a_dead_agent_or_a_stopped_guest_is_a_clear_driver_error(
    hv: LibvirtHypervisor, vm: VmInfo, guest: Guest
) -> None:
    guest.kill_agent()
    with pytest.raises(DriverError, match="guest agent did not answer") as raised:
        hv.guest_exec(vm, ["/bin/true"], timeout_s=60)
    assert raised.value.code == AGENT_UNAVAILABLE
    guest.destroy()
    with pytest.raises(DriverError, match="is not running") as raised:
        hv.guest_exec(vm, ["/bin/true"], timeout_s=60)


def test_the_agent_refuses_to_run_a_command_while_the_guest_is_frozen(
    hv: LibvirtHypervisor, vm: VmInfo, guest: Guest
) -> None:
    guest.dom.fsFreeze()
    try:
        with pytest.raises(DriverError) as raised:
            hv.guest_exec(vm, ["/bin/true"], timeout_s=60)
    finally:
        guest.dom.fsThaw()
    assert raised.value.code == EXEC_FAILED, raised.value.message
    assert "frozen" in raised.value.message
